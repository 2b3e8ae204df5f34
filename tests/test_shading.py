"""The electrolyte's grey-level wander across a volume (detachment.shading) and the check that stops on it."""

from __future__ import annotations

import dataclasses

import h5py
import numpy as np
import pandas as pd
import pytest

from detachment import io, plausibility, shading
from detachment.phantom import PhantomParams, generate_phantom
from detachment.phases import CBD, VOID


def _counts(codes: np.ndarray) -> plausibility.PhaseCounts:
    return plausibility.PhaseCounts(np.stack([(codes == c).sum(axis=(1, 2)) for c in range(5)], axis=1))


def test_a_ramp_along_z_reads_two_thirds_of_its_height():
    """All electrolyte, grey level A z / (Z - 1), no noise, 40 x 48 x 48: the interior (two steps from the
    faces) holds slices 2-37, so the three block rows' medians are A 8.5, 23.5 and 34.5 / 39 and the 2nd to
    98th percentile spread of the 27 blocks is A 26 / 39 (analytic)."""
    depth, a = 40, 0.09
    codes = np.full((depth, 48, 48), VOID, np.uint8)
    grey = np.broadcast_to((a * np.arange(depth) / (depth - 1))[:, None, None], codes.shape).astype(np.float32)
    levels = shading.block_levels(codes, grey)
    assert levels.size == 27
    assert sorted(set(np.round(levels / a * 39, 6))) == [8.5, 23.5, 34.5]
    s = shading.measure(codes, grey, contrast=0.3)
    assert s.spread == pytest.approx(a * 26 / 39, rel=1e-6) and s.blocks == 27
    assert s.ratio == pytest.approx(a * 26 / 39 / 0.3, rel=1e-6)


@pytest.mark.parametrize("depth", [37, 48, 50])
def test_streamed_block_rows_read_what_the_whole_volume_reads(tmp_path, depth):
    """Read block row by block row from HDF5 datasets (a halo of two slices for the erosion), the spread
    equals the percentiles of :func:`block_levels` over the whole arrays, for depths that are and are not
    multiples of the block."""
    from scipy import ndimage

    rng = np.random.default_rng(depth)
    field = ndimage.gaussian_filter(rng.standard_normal((depth, 64, 64)), 3)
    codes = np.where(field < 0.05, VOID, CBD).astype(np.uint8)
    grey = (0.02 * np.linspace(0, 1, depth)[:, None, None] + rng.normal(0, 0.01, codes.shape)).astype(np.float32)
    with h5py.File(tmp_path / "a.h5", "w") as f:
        f["phases"], f["volume"] = codes, grey
    with h5py.File(tmp_path / "a.h5", "r") as f:
        s = shading.measure(f["phases"], f["volume"], contrast=0.25)
    whole = shading.block_levels(codes, grey)
    assert s.blocks == whole.size >= shading.MIN_BLOCKS
    assert s.spread == pytest.approx(float(np.diff(np.percentile(whole, shading.PERCENTILES))[0]), abs=1e-12)


def test_too_little_electrolyte_measures_nothing_and_checks_nothing():
    """Fewer than MIN_BLOCKS blocks with interior electrolyte: NaN, and the phase-map checks leave the row out."""
    codes = np.full((20, 32, 32), CBD, np.uint8)
    codes[4:16, 4:28, 4:28] = VOID
    s = shading.measure(codes, np.zeros(codes.shape, np.float32), contrast=0.3)
    assert 0 < s.blocks < shading.MIN_BLOCKS and np.isnan(s.spread) and np.isnan(s.ratio)
    counts = _counts(codes)
    assert "shading_ratio" not in set(plausibility.check_phase_map(counts, shading_ratio=s.ratio).check)


def test_the_contrast_is_the_step_to_the_nearest_brighter_resolved_phase():
    table = pd.DataFrame({"phase": ["void", "cbd", "nmc_low"], "centre": [0.02, 0.3, 0.6],
                          "resolved": [True, True, True]})
    assert shading.contrast_from_fwhm(table) == pytest.approx(0.28)
    # CBD hidden: the step to the next phase the model resolves
    assert shading.contrast_from_fwhm(table.assign(resolved=[True, False, True])) == pytest.approx(0.58)
    assert np.isnan(shading.contrast_from_fwhm(table.assign(resolved=[False, True, True])))


def test_the_check_row_passes_up_to_its_bound_and_stops_with_the_shading_advice():
    """At the bound the map passes; beyond it the row fails and the stop names the shading and how to mend
    it, without the histogram advice that fits the other checks."""
    codes = np.zeros((12, 16, 16), np.uint8)
    codes[:3] = 4  # a collector slab at z = 0
    codes[6:, 4:8] = 2
    codes[6:, 8:12] = CBD
    counts = _counts(codes)
    bound = plausibility.MAX_BOUNDS["shading_ratio"][0]
    ok = plausibility.check_phase_map(counts, shading_ratio=bound).set_index("check")
    assert ok.loc["shading_ratio", "passed"] and ok.loc["shading_ratio", "bound_type"] == "max"
    bad = plausibility.check_phase_map(counts, shading_ratio=bound + 0.05)
    assert not bad.set_index("check").loc["shading_ratio", "passed"]
    assert bad.drop(bad.index[bad.check == "shading_ratio"]).passed.all()
    with pytest.raises(plausibility.ImplausiblePhaseMap) as err:
        plausibility.enforce(bad, "s1", "stop")
    msg = str(err.value)
    assert "sample 's1'" in msg and f"shading_ratio = {bound + 0.05:.3f} > {bound}" in msg
    assert "correct the shading before import" in msg and "fewer peaks" not in msg


@pytest.fixture(scope="module")
def drifting_phantoms():
    """One geometry, seed and noise with and without a drift of 0.2 grey levels peak to peak (60 % along z,
    40 % in plane): their difference is the planted drift field itself."""
    p = PhantomParams(shape_zyx=(40, 128, 128), n_particles=30, drift_amplitude=0.0)
    flat = generate_phantom(p, seed=11)
    drifted = generate_phantom(dataclasses.replace(p, drift_amplitude=0.2), seed=11)
    return flat, drifted


def test_the_drift_the_phantom_plants_is_what_the_thresholded_map_measures(tmp_path, drifting_phantoms):
    """Thresholded as the workflow thresholds it, the flat phantom passes the check and the drifting one
    fails it; the drifting one's measured spread is within a tenth of the planted field's own spread read on
    the truth's electrolyte (the oracle: the two volumes' difference, block medians of the truth's interior
    electrolyte), and the flat one's is under a tenth of it."""
    from detachment.threshold import ThresholdSettings, threshold_volume

    flat, drifted = drifting_phantoms
    planted = shading.block_levels(flat.phases, drifted.volume - flat.volume)
    planted_spread = float(np.diff(np.percentile(planted, shading.PERCENTILES))[0])
    ratios = {}
    for name, ph in (("flat", flat), ("drifted", drifted)):
        io.write_volume(tmp_path / f"{name}.h5", ph.volume, 0.5, name)
        res = threshold_volume(tmp_path / f"{name}.h5", tmp_path / f"{name}_p.h5", ThresholdSettings(),
                               progress=False)
        s = shading.measure_files(tmp_path / f"{name}_p.h5", tmp_path / f"{name}.h5",
                                  shading.contrast_from_fwhm(res.fwhm))
        checks = plausibility.check_phase_map(plausibility.PhaseCounts(res.counts_per_slice), res.fwhm,
                                              res.blur_sigma_vox, res.tilted_collector_top, s.ratio)
        ratios[name] = (s, checks.set_index("check").loc["shading_ratio", "passed"])
    assert ratios["drifted"][0].spread == pytest.approx(planted_spread, rel=0.1)
    assert ratios["flat"][0].spread < 0.1 * planted_spread
    assert ratios["flat"][1] and not ratios["drifted"][1]


def test_the_field_interpolates_block_centres_and_a_view_reads_crops_as_the_whole():
    """A grid linear in the block index along z gives exactly the linear ramp through the block centres
    (analytic: the voxel centre (z + ½) / block - ½ in block units), between them and, extended, beyond them;
    a FlatView's crops, single slices and rows equal the whole flattened array's."""
    grid = np.arange(4, dtype=float)[:, None, None] * np.ones((4, 3, 3)) + np.arange(3)[None, None, :]
    whole = shading.field_on(grid, 16, [(0, 64), (0, 48), (0, 48)], (64, 48, 48))
    z = np.arange(64)
    at_x = (23 + 0.5) / 16 - 0.5  # the grid's x term, linear too
    assert np.allclose(whole[:, 20, 23], (z + 0.5) / 16 - 0.5 + at_x, atol=1e-6)
    vol = np.random.default_rng(0).normal(0, 1, (64, 48, 48)).astype(np.float32)
    view = shading.FlatView(vol, grid, 16)
    flat = vol - whole
    assert np.allclose(view[5:37, 3:40, 11:12], flat[5:37, 3:40, 11:12], atol=1e-5)
    assert np.allclose(view[17], flat[17], atol=1e-5) and np.allclose(view[2:4, 30], flat[2:4, 30], atol=1e-5)
    assert np.allclose(view[-1, :, -3], flat[-1, :, -3], atol=1e-5)


def test_a_centred_field_fills_blocks_without_electrolyte_from_their_nearest_and_has_zero_median():
    """Read blocks keep their level less the median of those read; every unread block takes the level of one
    of the read blocks nearest to it (a brute-force search over all of them); none read gives zero."""
    rng = np.random.default_rng(3)
    grid = rng.uniform(0.0, 0.3, (4, 5, 6))
    grid[rng.random(grid.shape) < 0.4] = np.nan
    read = np.isfinite(grid)
    f = shading.centred_field(grid)
    med = np.median(grid[read])
    assert np.allclose(f[read], grid[read] - med, atol=1e-6)
    pts = np.argwhere(read)
    for idx in np.argwhere(~read):
        d = ((pts - idx) ** 2).sum(1)
        nearest = [float(grid[tuple(p)] - med) for p in pts[d == d.min()]]
        assert np.isclose(nearest, f[tuple(idx)], atol=1e-6).any()
    assert np.all(shading.centred_field(np.full((2, 2, 2), np.nan)) == 0)


def test_a_drifting_volume_is_read_flattened_and_its_map_and_contacts_read_as_the_flat_ones(tmp_path,
                                                                                           drifting_phantoms):
    """The drifting phantom thresholded with flattening on: the map holds the field, what is left of the shading
    passes the check, the map's accuracy is within 0.005 of the flat phantom's, and the open electrolyte's
    spread the contact step reads is within a tenth of the flat one's (read on the flattened grey levels; on
    the raw ones the drift would widen it). Off, the check stops it, as without the flattening."""
    from detachment.contact_level import electrolyte_spread
    from detachment.robustness import phase_accuracy
    from detachment.threshold import ThresholdSettings

    flat, drifted = drifting_phantoms
    out = {}
    for name, ph in (("flat", flat), ("drifted", drifted)):
        io.write_volume(tmp_path / f"{name}.h5", ph.volume, 0.5, name)
        res, s, before = shading.threshold_flattened(tmp_path / f"{name}.h5", tmp_path / f"{name}_p.h5",
                                                     ThresholdSettings(), progress=False)
        codes = io.read_dataset(tmp_path / f"{name}_p.h5", "phases")
        with h5py.File(tmp_path / f"{name}_p.h5", "r") as f:
            held = shading.FIELD_DATASET in f
        out[name] = dict(acc=phase_accuracy(codes, ph.phases), ratio=s.ratio, before=before, held=held,
                         spread=electrolyte_spread(tmp_path / f"{name}.h5", tmp_path / f"{name}_p.h5"))
    assert out["flat"]["before"] is None and not out["flat"]["held"]
    assert out["drifted"]["before"].ratio > plausibility.MAX_BOUNDS["shading_ratio"][0] and out["drifted"]["held"]
    assert out["drifted"]["ratio"] <= plausibility.MAX_BOUNDS["shading_ratio"][0]
    assert out["drifted"]["acc"] >= out["flat"]["acc"] - 0.005
    assert out["drifted"]["spread"] == pytest.approx(out["flat"]["spread"], rel=0.1)
    off = shading.threshold_flattened(tmp_path / "drifted.h5", tmp_path / "off_p.h5",
                                      ThresholdSettings(flatten_shading=False), progress=False)
    assert off[2] is None and off[1].ratio > plausibility.MAX_BOUNDS["shading_ratio"][0]


@pytest.mark.parametrize("depth", [40, 48, 53])
def test_a_ramp_flattened_by_its_own_electrolyte_levels_is_left_within_three_voxels_of_its_slope(depth):
    """All electrolyte with a grey level rising linearly along z, depths that are and are not multiples of the
    block: flattened by the field read on it, what is left of the ramp spans at most three voxels' worth of
    its slope over the whole depth (the medians of the outer blocks sit a voxel inside their centres, as the
    faces are not interior). Held at the outer blocks' levels instead, the first and last half-blocks keep their
    ramp: seven voxels' worth and more."""
    slope = 0.0025
    codes = np.full((depth, 40, 40), VOID, np.uint8)
    grey = np.broadcast_to((slope * np.arange(depth))[:, None, None], codes.shape).astype(np.float32)
    field = shading.centred_field(shading.block_grid(codes, grey))
    left = shading.FlatView(grey, field, shading.BLOCK_VOX)[:, 20, 20]
    assert (left.max() - left.min()) / slope <= 3.0


def test_a_flattening_the_model_does_not_fit_keeps_the_first_map_for_the_check_to_judge(tmp_path, drifting_phantoms,
                                                                                       monkeypatch):
    """Where the phase model does not fit the volume flattened by the first map's shading, and not the volume less
    the first estimate either (both forced to fail), the first map stays, written as it was (no field with it),
    with its own shading for the check, which stops it; no temporary file is left."""
    from detachment.phase_fit import PhaseModelError
    from detachment.threshold import ThresholdSettings, threshold_volume

    _, drifted = drifting_phantoms
    io.write_volume(tmp_path / "v.h5", drifted.volume, 0.5, "drifted")
    threshold_volume(tmp_path / "v.h5", tmp_path / "first.h5", ThresholdSettings(), progress=False)

    def no_fit(*args, **kwargs):
        raise PhaseModelError("forced")

    monkeypatch.setattr(shading, "_read_flattened", no_fit)
    monkeypatch.setattr(shading, "threshold_provisionally_flattened", no_fit)
    _, left, before = shading.threshold_flattened(tmp_path / "v.h5", tmp_path / "p.h5", ThresholdSettings(),
                                                  progress=False)
    assert before is None and left.ratio > plausibility.MAX_BOUNDS["shading_ratio"][0]
    assert np.array_equal(io.read_dataset(tmp_path / "p.h5", "phases"), io.read_dataset(tmp_path / "first.h5", "phases"))
    with h5py.File(tmp_path / "p.h5", "r") as f:
        assert shading.FIELD_DATASET not in f
    assert sorted(p.name for p in tmp_path.iterdir()) == ["first.h5", "p.h5", "v.h5"]


def test_temporary_files_a_killed_run_left_beside_the_map_are_removed_by_the_next(tmp_path, drifting_phantoms):
    """A flattened volume and a kept map left beside ``phases.h5`` by a run killed mid-way are gone after the
    next thresholding, which writes the map."""
    from detachment.threshold import ThresholdSettings

    flat, _ = drifting_phantoms
    io.write_volume(tmp_path / "v.h5", flat.volume, 0.5, "flat")
    for name in ("phases.flattened.h5", "phases.kept.h5"):
        (tmp_path / name).write_bytes(b"left by a killed run")
    shading.threshold_flattened(tmp_path / "v.h5", tmp_path / "phases.h5", ThresholdSettings(), progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["phases.h5", "v.h5"]
