"""The z blur against the blur within the slices (detachment.z_blur): a brute-force edge count along z, balls
blurred isotropically and anisotropically by scipy, the phantom's planted z blur, and the check that stops it."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from detachment import plausibility, z_blur
from detachment.blur import RUN
from detachment.phases import CBD, NMC_HIGH, NMC_LOW, VOID


def balls(shape=(48, 128, 128), n=56, seed=0) -> np.ndarray:
    """(z, y, x) phase codes: NMC balls of radius 5-8 voxels in electrolyte, CBD below z = 10 (the default: over
    z_blur.MIN_RATIO_EDGES edges along z that the surface crosses nearly square)."""
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.indices(shape)
    codes = np.where(zz < 10, CBD, VOID).astype(np.uint8)
    for _ in range(n):
        c, r = rng.uniform(8, np.array(shape) - 8), rng.uniform(5, 8)
        inside = (zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 < r**2
        codes[inside] = NMC_LOW if rng.random() < 0.5 else NMC_HIGH
    return codes


def render(codes: np.ndarray, sigma_yx: float, z_factor: float, noise=0.02, seed=1) -> np.ndarray:
    levels = np.array([0.0, 0.3, 0.7, 0.8, 0.5], np.float32)
    grey = ndimage.gaussian_filter(levels[codes], (z_factor * sigma_yx, sigma_yx, sigma_yx), mode="nearest")
    return grey + noise * np.random.default_rng(seed).standard_normal(codes.shape).astype(np.float32)


def brute_force_z_edges(codes: np.ndarray, grey: np.ndarray) -> tuple[np.ndarray, int]:
    """Every edge along z by numpy: RUN solid voxels then RUN background (or the reverse) in a z line, the
    profile summed solid side first."""
    solid = np.isin(codes, (NMC_LOW, NMC_HIGH))
    back = np.isin(codes, (VOID, CBD))
    total, count = np.zeros(2 * RUN), 0
    for i in range(codes.shape[0] - 2 * RUN + 1):
        s_first = solid[i:i + RUN].all(0) & back[i + RUN:i + 2 * RUN].all(0)
        b_first = back[i:i + RUN].all(0) & solid[i + RUN:i + 2 * RUN].all(0)
        window = grey[i:i + 2 * RUN]
        total += window[:, s_first].sum(axis=1) + window[::-1][:, b_first].sum(axis=1)
        count += int(s_first.sum() + b_first.sum())
    return total, count


def test_every_edge_is_the_brute_force_edges_and_the_square_ones_a_subset(monkeypatch):
    codes = balls((48, 64, 64), 14)
    grey = render(codes, 0.7, 1.0)
    solid, back = np.isin(codes, (NMC_LOW, NMC_HIGH)), np.isin(codes, (VOID, CBD))
    normal = np.random.default_rng(0).random(codes.shape).astype(np.float32)
    lines = [np.moveaxis(v, 0, -1) for v in (solid, back, grey, normal)]
    (square_total, square_count), (total, count) = z_blur.line_edges(*lines, (0, codes.shape[0]))
    expected_total, expected_count = brute_force_z_edges(codes, grey)
    assert count == expected_count > 500
    np.testing.assert_allclose(total, expected_total, rtol=1e-5)
    assert 0 < square_count < count
    # where too few edges are crossed nearly square, the reading is over every edge, the brute force's
    monkeypatch.setattr(z_blur, "MIN_RATIO_EDGES", 10**9)
    monkeypatch.setattr(z_blur, "MIN_EVERY_EDGES", 100)
    every = z_blur.measure(codes, grey)
    assert every.reading == z_blur.EVERY and every.edges_z == expected_count and np.isfinite(every.ratio)


def test_tiles_read_every_edge_once():
    """Read in tiles of a few slices and rows, each with its context, the edges and their widths are those of
    the whole volume read at once: none is read twice or left out, and the normals are the whole map's."""
    codes = balls((48, 100, 90), 30)
    grey = render(codes, 0.7, 1.3)
    for least in (0, 10**9):  # the nearly square edges, then every edge
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(z_blur, "MIN_RATIO_EDGES", least)
            mp.setattr(z_blur, "MIN_EVERY_EDGES", 0)
            whole = z_blur.measure(codes, grey)
            mp.setattr(z_blur, "TILE_Z", 7)
            mp.setattr(z_blur, "TILE_Y", 11)
            tiled = z_blur.measure(codes, grey)
        assert tiled.reading == whole.reading == (z_blur.SQUARE if least == 0 else z_blur.EVERY)
        assert tiled.edges_z == whole.edges_z > 1000 and tiled.edges_yx == whole.edges_yx
        assert tiled.width_z == pytest.approx(whole.width_z, rel=1e-6)
        assert tiled.width_yx == pytest.approx(whole.width_yx, rel=1e-6)


@pytest.mark.parametrize("tilt_deg", [20, 70])
def test_only_edges_the_surface_crosses_nearly_square_are_read(tilt_deg):
    """A plane tilted from the slices by θ in the z-x plane: its normal is (cos θ, 0, sin θ), so at 20° only the
    lines along z cross it within arccos(NORMAL_MIN) of square (every one whose crossing has RUN voxels each
    side), and at 70° only those along x."""
    shape = (40, 24, 60)
    zz, _, xx = np.indices(shape)
    t = np.radians(tilt_deg)
    below = (zz - 20) * np.cos(t) + (xx - 30) * np.sin(t) < 0
    codes = np.where(below, NMC_LOW, VOID).astype(np.uint8)
    r = z_blur.measure(codes, render(codes, 0.6, 1.0, noise=0.0))
    first_void = below.sum(axis=0)  # per (y, x) line along z: the first electrolyte voxel
    crossing_z = int(((first_void >= RUN) & (first_void <= shape[0] - RUN)).sum())
    first_void_x = below.sum(axis=2)
    crossing_x = int(((first_void_x >= RUN) & (first_void_x <= shape[2] - RUN)).sum())
    if tilt_deg == 20:
        assert r.edges_z == crossing_z > 0 and r.edges_yx == 0
    else:
        assert r.edges_z == 0 and 0.9 * crossing_x <= r.edges_yx <= crossing_x


@pytest.mark.parametrize("sigma", [0.5, 1.0])
def test_an_isotropic_blur_reads_a_ratio_of_one(sigma):
    codes = balls(seed=2)
    r = z_blur.measure(codes, render(codes, sigma, 1.0))
    assert r.edges_z > z_blur.MIN_RATIO_EDGES and r.edges_yx > 2 * z_blur.MIN_RATIO_EDGES
    assert abs(r.ratio - 1) < 0.06, r
    assert r.ratio < plausibility.BLUR_Z_RATIO_BOUND


def test_a_coarser_z_reads_wider_steps_along_z_the_more_the_coarser():
    codes = balls(seed=3)
    ratios = [z_blur.measure(codes, render(codes, 0.5, f)).ratio for f in (1.0, 1.5, 2.0, 3.0)]
    assert all(b > a for a, b in zip(ratios, ratios[1:])), ratios
    assert ratios[2] > plausibility.BLUR_Z_RATIO_BOUND
    # a sharper z (a finer axis) reads below one, not as a coarser one, and below the other bound
    assert z_blur.measure(codes, render(codes, 1.0, 0.5)).ratio < plausibility.BLUR_Z_RATIO_MIN


def test_a_volume_of_a_few_particles_reads_its_widths_but_no_ratio():
    """Too few surfaces for their orientations to average out: the widths are read, the ratio (and the check)
    is not."""
    codes = balls((24, 64, 64), 8, seed=5)
    r = z_blur.measure(codes, render(codes, 0.5, 3.0))
    assert 200 < r.edges_z < z_blur.MIN_RATIO_EDGES
    assert r.width_z > r.width_yx > 0 and np.isnan(r.ratio)


def test_under_partial_volume_a_sharper_z_stops_where_every_edge_would_not(monkeypatch):
    """Surfaces that cut their voxels anywhere (the phantom on sub-voxels) widen every step by the voxel's box:
    over every edge a z blur half the slices' reads close to 1 and passes its bound, over the edges crossed
    nearly square it stops; the isotropic volume passes both."""
    from detachment.phantom import PhantomParams, generate_phantom

    for factor, sharper in ((1.0, False), (0.5, True)):
        ph = generate_phantom(PhantomParams(shape_zyx=[40, 128, 128], n_particles=40, blur_z_factor=factor,
                                            supersample=2), seed=4)
        square = z_blur.measure(ph.phases, ph.volume)
        with monkeypatch.context() as mp:
            mp.setattr(z_blur, "MIN_RATIO_EDGES", 10**9)
            every = z_blur.measure(ph.phases, ph.volume)
        assert square.reading == z_blur.SQUARE and every.reading == z_blur.EVERY
        assert (square.ratio < plausibility.BLUR_Z_RATIO_MIN) == sharper, square
        assert every.ratio > plausibility.BLUR_Z_EVERY_MIN, every
        assert square.ratio < plausibility.BLUR_Z_RATIO_BOUND and every.ratio < plausibility.BLUR_Z_EVERY_BOUND


def test_a_ratio_over_every_edge_is_checked_under_its_own_bounds():
    counts = plausibility.PhaseCounts(np.tile([[100, 50, 80, 0, 0]], (20, 1)).astype(np.int64))
    counts.per_slice[:3] = [0, 0, 0, 0, 500]
    between = 0.5 * (plausibility.BLUR_Z_EVERY_BOUND + plausibility.BLUR_Z_RATIO_BOUND)
    square = plausibility.check_phase_map(counts, blur_z_ratio=between).set_index("check")
    every = plausibility.check_phase_map(counts, blur_z_ratio=between, blur_z_reading=z_blur.EVERY).set_index("check")
    assert square.loc["blur_z_ratio", "passed"] and not every.loc["blur_z_ratio", "passed"]
    assert every.loc["blur_z_ratio", "bound"] == plausibility.BLUR_Z_EVERY_BOUND
    from detachment.plots import phase_title

    assert "BLURRIER ALONG Z" in phase_title("s", 0, "informed", blur_z_ratio=between, blur_z_reading=z_blur.EVERY)
    assert "ALONG Z" not in phase_title("s", 0, "informed", blur_z_ratio=between)


def test_steps_too_sharp_to_fit_give_no_ratio_rather_than_a_wild_one():
    """Under σ 0.25 on the voxel grid a step is six samples of nearly a step function: its fitted width trades
    against its position (here below 0.2 along either axis), so no ratio is read; from σ 0.35 it is."""
    codes = balls(seed=2)
    for factor in (1.0, 0.7):
        r = z_blur.measure(codes, render(codes, 0.25, factor))
        assert r.width_yx <= z_blur.MIN_WIDTH_YX and np.isnan(r.ratio), r
    r = z_blur.measure(codes, render(codes, 0.35, 1.0))
    assert r.reading == z_blur.SQUARE and abs(r.ratio - 1) < 0.08, r


def test_too_few_edges_give_nan_and_no_check():
    codes = np.full((16, 16, 16), VOID, np.uint8)
    r = z_blur.measure(codes, render(codes, 0.5, 1.0))
    assert np.isnan(r.ratio) and r.edges_z == 0
    table = plausibility.check_phase_map(plausibility.PhaseCounts(np.ones((16, 5), np.int64)), blur_z_ratio=r.ratio)
    assert "blur_z_ratio" not in set(table.check)


def test_the_phantoms_planted_z_blur_is_found_on_its_truth():
    from detachment.phantom import PhantomParams, generate_phantom

    for factor, coarser, sharper in ((1.0, False, False), (3.0, True, False), (0.4, False, True)):
        ph = generate_phantom(PhantomParams(shape_zyx=[40, 128, 128], n_particles=40, blur_z_factor=factor), seed=4)
        r = z_blur.measure(ph.phases, ph.volume)
        assert (r.ratio > plausibility.BLUR_Z_RATIO_BOUND) == coarser, (factor, r)
        assert (r.ratio < plausibility.BLUR_Z_RATIO_MIN) == sharper, (factor, r)


def test_a_z_blurred_map_stops_naming_the_check_and_the_way_out():
    counts = plausibility.PhaseCounts(np.tile([[100, 50, 80, 0, 0]], (20, 1)).astype(np.int64))
    counts.per_slice[:3] = [0, 0, 0, 0, 500]
    table = plausibility.check_phase_map(counts, blur_z_ratio=1.5)
    row = table.set_index("check").loc["blur_z_ratio"]
    assert not row.passed and row.bound == plausibility.BLUR_Z_RATIO_BOUND and row.bound_type == "max"
    with pytest.raises(plausibility.ImplausiblePhaseMap, match="blur_z_ratio = 1.500") as e:
        plausibility.enforce(table, "cellZ")
    assert "cellZ" in str(e.value) and "isotropic" in str(e.value) and "histogram" not in str(e.value)
    assert plausibility.check_phase_map(counts, blur_z_ratio=1.05).passed.all()


def test_a_map_sharper_along_z_stops_with_its_own_way_out():
    counts = plausibility.PhaseCounts(np.tile([[100, 50, 80, 0, 0]], (20, 1)).astype(np.int64))
    counts.per_slice[:3] = [0, 0, 0, 0, 500]
    table = plausibility.check_phase_map(counts, blur_z_ratio=0.8).set_index("check")
    low, high = table.loc["blur_z_ratio_min"], table.loc["blur_z_ratio"]
    assert not low.passed and low.bound == plausibility.BLUR_Z_RATIO_MIN and low.bound_type == "min"
    assert high.passed and low.value == high.value == 0.8
    with pytest.raises(plausibility.ImplausiblePhaseMap, match="blur_z_ratio_min = 0.800 < 0.93") as e:
        plausibility.enforce(table.reset_index(), "cellS")
    assert "sharper along z" in str(e.value) and "blurrier along z" not in str(e.value)
    assert plausibility.check_phase_map(counts, blur_z_ratio=0.95).passed.all()


def test_the_phase_title_names_a_blurrier_z():
    from detachment.plots import phase_title

    bound = plausibility.BLUR_Z_RATIO_BOUND
    assert "BLURRIER ALONG Z: steps 1.42 times" in phase_title("s", 0, "informed", blur_z_ratio=1.42)
    assert "ALONG Z" not in phase_title("s", 0, "informed", blur_z_ratio=bound - 0.01)
    assert "ALONG Z" not in phase_title("s", 0, "informed", blur_z_ratio=float("nan"))
    assert "SHARPER ALONG Z: steps 0.85 times" in phase_title("s", 0, "informed", blur_z_ratio=0.85)
    assert "ALONG Z" not in phase_title("s", 0, "informed", blur_z_ratio=plausibility.BLUR_Z_RATIO_MIN + 0.01)


def test_the_phantom_refuses_a_z_factor_out_of_range():
    from detachment.phantom import PhantomParams

    with pytest.raises(ValueError, match="blur_z_factor"):
        PhantomParams(blur_z_factor=0.1).validate()


def test_a_thresholded_z_blurred_phantom_fails_its_check_as_every_caller_reads_it(tmp_path):
    """The threshold step, the self-consistency reading and the benchmarks check a map through one function
    (``detachment.map_checks``): on a phantom blurred three times as wide along z, the map's table carries the
    halo row and the z-blur rows of the model that read it, and the z blur fails: the fitted factor where the
    forward model follows z (the default), the steps' ratio (the one z_blur reads on the same files) where it
    is told the point spread is isotropic."""
    from detachment import io, map_checks, shading
    from detachment.phantom import PhantomParams, generate_phantom
    from detachment.threshold import ThresholdSettings

    for factor, z_setting, fails in ((3.0, "fit", True), (1.0, "fit", False), (3.0, 1.0, True)):
        ph = generate_phantom(PhantomParams(shape_zyx=[40, 128, 128], n_particles=40, blur_z_factor=factor), seed=4)
        volume, phases = tmp_path / f"v{factor}.h5", tmp_path / f"p{factor}{z_setting}.h5"
        io.write_volume(volume, ph.volume, 0.5, "test")
        res, shade, _ = shading.threshold_flattened(volume, phases, ThresholdSettings(psf_refine_z_factor=z_setting),
                                                    progress=False)
        checked = map_checks.check_map_files(res, shade, phases, volume)
        table = checked.table.set_index("check")
        assert {"edge_undershoot", "blur_sigma_vox"} <= set(table.index)
        if z_setting == "fit":
            assert table.loc["blur_z_factor", "value"] == res.refine_z_factor
            assert (not table.loc["blur_z_factor", "passed"]) == fails, (factor, res.refine_z_factor)
            assert "blur_z_ratio" not in table.index
        else:
            assert table.loc["blur_z_ratio", "value"] == checked.steps.ratio == z_blur.measure_files(phases, volume).ratio
            assert (not table.loc["blur_z_ratio", "passed"]) == fails and table.loc["blur_z_ratio_min", "passed"]


def test_where_the_forward_model_follows_z_its_sigma_along_z_is_checked_in_place_of_the_ratio():
    """A z factor fitted or set apart from 1: the ratio, which bounds a z blur the model would not follow, gives
    way to the model's σ along z, which stops only beyond its own bound, naming the check and the way out."""
    counts = plausibility.PhaseCounts(np.tile([[100, 50, 80, 0, 0]], (20, 1)).astype(np.int64))
    counts.per_slice[:3] = [0, 0, 0, 0, 500]
    followed = plausibility.check_phase_map(counts, blur_z_ratio=1.7, blur_z_sigma_vox=0.6).set_index("check")
    assert {"blur_z_ratio", "blur_z_ratio_min"}.isdisjoint(followed.index) and followed.passed.all()
    assert followed.loc["blur_z_sigma_vox", "bound"] == plausibility.BLUR_Z_SIGMA_BOUND
    # a sharper z, followed, passes; a factor beyond its bound stops even where σ along z is within its own
    assert plausibility.check_phase_map(counts, blur_z_ratio=0.6, blur_z_sigma_vox=0.2, blur_z_factor=0.5).passed.all()
    coarse = plausibility.check_phase_map(counts, blur_z_sigma_vox=0.5, blur_z_factor=1.3).set_index("check")
    assert not coarse.loc["blur_z_factor", "passed"] and coarse.loc["blur_z_sigma_vox", "passed"]
    assert coarse.loc["blur_z_factor", "bound"] == plausibility.BLUR_Z_FACTOR_BOUND
    wide = plausibility.BLUR_Z_SIGMA_BOUND + 0.1
    table = plausibility.check_phase_map(counts, blur_z_ratio=1.7, blur_z_sigma_vox=wide, blur_z_factor=1.1)
    with pytest.raises(plausibility.ImplausiblePhaseMap, match=f"blur_z_sigma_vox = {wide:.3f} >") as e:
        plausibility.enforce(table, "cellZ")
    assert "cellZ" in str(e.value) and "finer z resolution" in str(e.value) and "histogram" not in str(e.value)
    # NaN (the forward model did not run): the ratio is checked
    assert "blur_z_ratio" in set(plausibility.check_phase_map(counts, blur_z_ratio=1.7,
                                                               blur_z_sigma_vox=float("nan")).check)


def test_the_phase_title_names_the_fitted_z_blur_in_place_of_the_ratio():
    from detachment.plots import phase_title

    within = phase_title("s", 0, "informed", blur_sigma=0.4, blur_z_ratio=1.7, z_factor=1.15)
    assert "point spread along z σ 0.46 voxel (1.15 times" in within and "ALONG Z" not in within
    wide = phase_title("s", 0, "informed", blur_sigma=0.5, blur_z_ratio=1.7, z_factor=1.8)
    assert f"POINT SPREAD ALONG Z σ 0.90 VOXEL (1.80 times the slices'), WIDER THAN {plausibility.BLUR_Z_SIGMA_BOUND}" \
        in wide and "BLURRIER" not in wide
    assert "POINT SPREAD ALONG Z" in phase_title("s", 0, "informed", blur_sigma=0.4, z_factor=1.4)
    assert "BLURRIER ALONG Z" in phase_title("s", 0, "informed", blur_sigma=0.4, blur_z_ratio=1.7, z_factor=1.0)
