"""The fast streamed thresholding against plain, unstreamed oracles: numpy.histogram, scipy.ndimage
morphology, the reference composition :func:`detachment.threshold.classify_slab` and a direct whole-volume
computation of the phase map, interior-voxel histograms and per-slice counts."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy import ndimage

from detachment import io, phases
from detachment.binning import UniformBins, ceil_float32
from detachment.blur import (
    EdgeProfiles,
    edge_nmc_cut,
    edge_shell_cut,
    reassign_by_spill,
    reassign_edge_shells,
)
from detachment.psf_refine import RefineSettings, fit_block, fit_spread, fit_texture_sigma, refine_codes
from detachment.slab_phases import SlabClassifier, erode6, opening6
from detachment.threshold import (
    ThresholdSettings,
    classify_slab,
    collector_top,
    fit_model,
    refine_levels,
    threshold_volume,
)

CROSS = ndimage.generate_binary_structure(3, 1)


def _near_edges(edges: np.ndarray) -> np.ndarray:
    """float32 values on and beside each edge (both roundings of a float64 edge)."""
    e = np.concatenate([np.asarray(edges).astype(np.float32), ceil_float32(edges)])
    return np.concatenate([e, np.nextafter(e, np.float32(-np.inf)), np.nextafter(e, np.float32(np.inf))])


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("edge_type", [np.float32, np.float64])
def test_uniform_bins_equal_numpy_histogram_next_to_every_edge(seed, edge_type):
    rng = np.random.default_rng(seed)
    lo = np.float32(rng.normal() * 10.0 ** rng.uniform(-2, 1))
    hi = np.float32(lo + np.float32(10.0 ** rng.uniform(-2, 1)))
    n = int(rng.choice([7, 256, 1024]))
    edges = np.linspace(float(lo), float(hi), n + 1, dtype=edge_type)
    v = np.concatenate([rng.uniform(lo, hi, 20_000).astype(np.float32), _near_edges(edges), [lo, hi]])
    v = v[(v >= lo) & (v <= hi)].astype(np.float32)
    # the range as threshold_volume passes it: Python floats compare in float32, numpy float64 in float64
    value_range = (float(lo), float(hi)) if edge_type is np.float32 else (edges[0], edges[-1])
    expected = np.histogram(v, bins=n, range=value_range)[0]
    np.testing.assert_array_equal(UniformBins(edges).counts(v), expected)


def test_uniform_bins_refuse_a_range_too_narrow_for_their_grid():
    with pytest.raises(ValueError):
        UniformBins(np.linspace(18.434334, 18.434483, 1025, dtype=np.float32))
    with pytest.raises(ValueError):
        UniformBins(np.zeros(5, np.float32))


@pytest.mark.parametrize("seed", range(4))
def test_cross_morphology_equals_scipy(seed):
    rng = np.random.default_rng(seed)
    for _ in range(25):
        shape = tuple(rng.integers(1, 9, 3))
        m = rng.random(shape) < rng.random()
        np.testing.assert_array_equal(erode6(m), ndimage.binary_erosion(m, CROSS, border_value=1))
        r = int(rng.integers(1, 4))
        np.testing.assert_array_equal(opening6(m, r),
                                      ndimage.binary_opening(m, CROSS, iterations=r, border_value=1))


MEANS = {"void": 0.0, "cbd": 0.3, "al": 0.5, "nmc_low": 0.72, "nmc_high": 0.9}


def _model(order=phases.DEFAULT_ORDER):
    mu = np.array([MEANS[n] for n in order])
    return phases.PhaseModel(tuple(order), (mu[1:] + mu[:-1]) / 2, mu, np.full(5, 0.02), np.full(5, 0.2), "test")


def _hard_volume(model, rng, shape=(14, 24, 26)):
    """Grey levels on and beside every threshold, thin Al sheets, and NMC regions whose local mean sits
    within float32 rounding of the NMC low / high threshold (so the screening cannot decide them)."""
    t = np.sort(model.thresholds)
    near = _near_edges(t)
    v = rng.choice(np.concatenate([near, rng.uniform(-0.1, 1.0, 64).astype(np.float32)]), shape)
    thr = np.float32(model.thresholds[model.names.index("nmc_low")])
    ulps = thr + rng.integers(-3, 4, (6, 10, 10)).astype(np.float32) * np.spacing(thr)
    v[4:10, 5:15, 5:15] = ulps
    v[2, 3:20, 3:20] = model.means[model.names.index("al")]  # a one-voxel Al sheet
    return v.astype(np.float32)


@pytest.mark.parametrize("order", [phases.DEFAULT_ORDER, ("void", "al", "cbd", "nmc_low", "nmc_high"),
                                   ("al", "void", "cbd", "nmc_low", "nmc_high"), ("void", "nmc_low", "cbd", "al", "nmc_high")])
@pytest.mark.parametrize("thickness, sigma", [(3, 0.7), (5, 1.0), (1, 0.4), (3, 0.0), (2, 1.6)])
def test_slab_classifier_equals_the_reference_composition(order, thickness, sigma):
    model = _model(order)
    s = ThresholdSettings(order=order, collector_min_thickness_vox=thickness, domain_sigma_vox=sigma)
    vol = _hard_volume(model, np.random.default_rng(len(order[0]) + thickness))
    expected = classify_slab(vol, model, s)
    fast = SlabClassifier(model, thickness, sigma)
    np.testing.assert_array_equal(fast(vol), expected)
    np.testing.assert_array_equal(fast(vol, slice(3, 11)), expected[3:11])
    # Al confined to a collector slab below volume z = 6, the slab starting at volume z 2
    confined = SlabClassifier(model, thickness, sigma, collector_top=6)
    np.testing.assert_array_equal(confined(vol, z_first=2), classify_slab(vol, model, s, 6, z_first=2))
    # below a tilted collector: a first slice above it per column
    top = np.random.default_rng(thickness).integers(1, 12, vol.shape[1:])
    tilted = SlabClassifier(model, thickness, sigma, collector_top=top)
    np.testing.assert_array_equal(tilted(vol, z_first=2), classify_slab(vol, model, s, top, z_first=2))
    # every NMC voxel through the exact per-voxel recomputation, and through the whole-slab fallback
    exact = SlabClassifier(model, thickness, sigma, screen=False)
    exact.max_exact = 10**9
    np.testing.assert_array_equal(exact(vol, slice(5, 9)), expected[5:9])
    exact.max_exact = 0
    np.testing.assert_array_equal(exact(vol), expected)


def test_slab_classifier_equals_the_reference_on_a_phantom():
    from detachment.phantom import PhantomParams, generate_phantom

    vol = generate_phantom(PhantomParams(shape_zyx=(24, 64, 64), n_particles=10, diameter_median_um=5,
                                         diameter_min_um=3.5, diameter_max_um=8), seed=9).volume
    model = _model()
    np.testing.assert_array_equal(SlabClassifier(model, 3, 0.7)(vol),
                                  classify_slab(vol, model, ThresholdSettings(domain_sigma_vox=0.7)))


def _direct(vol: np.ndarray, s: ThresholdSettings):
    """Unstreamed thresholding of a whole volume with the reference functions."""
    lo, hi = float(vol.min()), float(vol.max())
    per_slice_hist = np.stack([np.histogram(v, bins=s.bins, range=(lo, hi))[0] for v in vol])
    hist = phases.Histogram(per_slice_hist.sum(0), np.linspace(lo, hi, s.bins + 1))
    model, _, collector, _ = fit_model(hist, per_slice_hist, s)
    p = classify_slab(vol, model, s, collector_top(model, collector))
    fine = np.linspace(lo, hi, 4 * s.bins + 1)
    interior = phases.interior_histograms(vol, p, fine)  # of the map before the edge-shell rule
    if s.edge_shells:  # the blur measured on the whole map, then the edge shells given back to electrolyte / NMC
        edges = EdgeProfiles()
        edges.add(p, vol)
        cut = edge_shell_cut(model.names, model.means, edges.sigma())
        nmc = edge_nmc_cut(model.names, model.means, model.thresholds, edges.sigma())
        assert cut is not None and nmc is not None
        p = reassign_edge_shells(p, vol, cut, nmc)
        if s.edge_spill:  # then electrolyte and CBD less the solid's spill, on the whole volume
            p = reassign_by_spill(p, vol, model.names, model.means, model.thresholds, edges.sigma())
        if s.psf_refine:  # then the forward model, its σ fitted on the densest block, on the whole volume
            levels, noise = refine_levels(model, interior, fine)
            rs, top = RefineSettings(s.psf_refine_beta, s.psf_refine_sweeps), collector_top(model, collector)
            block = fit_block(((p >= phases.CBD) & (p <= phases.NMC_HIGH)).sum(axis=(1, 2)), p.shape)
            sigma, z_factor = fit_spread(p[block], vol[block], levels, edges.sigma(), noise, rs, top, block[0].start)
            # NMC's texture read over the σ that predicts it best on the same block
            texture, spread, untextured = fit_texture_sigma(p[block], vol[block], levels, sigma, z_factor=z_factor)
            if texture > 0:  # NMC's spreads scaled by the fall the texture brings
                noise = {**noise, **{k: max(noise[k] * spread[k] / untextured[k], min(noise.values())) for k in spread}}
            rs = RefineSettings(s.psf_refine_beta, s.psf_refine_sweeps, texture, z_factor)
            p, _ = refine_codes(p, vol, levels, sigma, noise, rs, al_below=top)
    per_slice = np.stack([(p == c).sum(axis=(1, 2)) for c in phases.PHASE_NAMES], axis=1)
    nan = float("nan")
    return model, p, interior, fine, per_slice, (sigma, z_factor) if s.psf_refine else (nan, nan)


@pytest.mark.filterwarnings("ignore::scipy.optimize.OptimizeWarning")  # a Gaussian fit on the denoised volume
@pytest.mark.parametrize("slab, fast_bins, workers, shells", [(1, True, 1, True), (4, True, 1, True),
                                                              (100, True, 1, True), (4, False, 1, True),
                                                              (3, True, 2, True), (1, True, 3, True),
                                                              (4, True, 2, False), (3, True, 2, "gaussian"),
                                                              (3, True, 2, "no spill"), (100, True, 2, "refine"),
                                                              (4, True, 2, "refine"), (7, True, 1, "refine")])
def test_streamed_thresholding_equals_a_direct_whole_volume_computation(tmp_path, monkeypatch, slab, fast_bins,
                                                                        workers, shells):
    """Bit for bit, but for the forward-model refinement on slabs thinner than the volume (near-equal)."""
    from detachment import threshold
    from detachment.phantom import PhantomParams, generate_phantom

    if not fast_bins:  # the numpy.histogram path taken where the cell grid cannot be built
        monkeypatch.setattr(threshold, "_uniform_bins", lambda *args: None)

    vol = generate_phantom(PhantomParams(shape_zyx=(20, 48, 48), n_particles=6, diameter_median_um=5,
                                         diameter_min_um=3.5, diameter_max_um=7), seed=4).volume
    io.write_volume(tmp_path / "v.h5", vol, 0.5, "test")
    denoise = "gaussian" if shells == "gaussian" else "none"  # a denoised volume, with the edge shells
    # the edge shells without the spill rule; the forward model only where asked for
    extra = dict(edge_spill=shells != "no spill", psf_refine=shells == "refine")
    # the split of NMC densities on domain means is a pass of its own (tests/test_phase_fit.py), not in _direct
    s = ThresholdSettings(slab=slab, edge_shells=bool(shells), denoise=denoise, nmc_domain_split=False, **extra)
    res = threshold_volume(tmp_path / "v.h5", tmp_path / "p.h5", s, progress=False, workers=workers)
    assert sorted(f.name for f in tmp_path.iterdir()) == ["p.h5", "v.h5"]  # no scratch map left behind
    model, p, interior, fine, per_slice, refine_sigma = _direct(phases.denoise(vol, s.denoise, s.denoise_sigma_vox), s)
    np.testing.assert_array_equal(res.model.thresholds, model.thresholds)
    # the forward model's σ and z factor fitted on the same block of the same map: bit for bit
    np.testing.assert_array_equal((res.refine_sigma_vox, res.refine_z_factor), refine_sigma)
    streamed = io.read_dataset(tmp_path / "p.h5", "phases")
    if s.psf_refine and slab < len(vol):
        assert (streamed != p).mean() < 2e-3  # the refinement's slabs see all but the furthest moves
        counts = np.stack([(streamed == c).sum(axis=(1, 2)) for c in phases.PHASE_NAMES], axis=1)
        np.testing.assert_array_equal(res.counts_per_slice, counts)
        # the slabs lie where ``slab`` puts them, whatever the threads
        other = threshold_volume(tmp_path / "v.h5", tmp_path / "o.h5", s, progress=False, workers=3 - workers)
        np.testing.assert_array_equal(io.read_dataset(tmp_path / "o.h5", "phases"), streamed)
        assert (other.blur_sigma_vox, other.edge_width_vox) == (res.blur_sigma_vox, res.edge_width_vox)
    else:
        np.testing.assert_array_equal(streamed, p)
        np.testing.assert_array_equal(res.counts_per_slice, per_slice)
    # the blur measured on the edges is the same bit for bit whatever the slabs and threads
    whole = threshold_volume(tmp_path / "v.h5", tmp_path / "w.h5", dataclasses.replace(s, slab=100), progress=False)
    for name in ("blur_sigma_vox", "edge_width_vox", "blur_sigma_se_vox"):
        a, b = getattr(res, name), getattr(whole, name)
        assert a == b or np.isnan(a) and np.isnan(b), name
    for row in res.fwhm.itertuples():
        centre, fwhm = phases.fit_fwhm(interior[row.code], fine)
        assert row.interior_voxels == interior[row.code].sum()
        assert (row.centre, row.fwhm) == (centre, fwhm) or np.isnan(centre) and np.isnan(row.centre)


@pytest.mark.parametrize("grey_range", [None, (0.0, 1.0), "narrower", "wider"])
def test_a_missing_or_wrong_grey_range_attribute_changes_nothing(tmp_path, grey_range):
    """The histogram pass takes the range from the volume's ``grey_range`` attribute and checks it
    against the grey levels it reads: a file edited since it was written is thresholded as if the
    attribute were right."""
    import h5py

    from detachment.phantom import PhantomParams, generate_phantom

    vol = generate_phantom(PhantomParams(shape_zyx=(20, 40, 40), n_particles=4, diameter_median_um=5,
                                         diameter_min_um=3.5, diameter_max_um=7), seed=2).volume
    io.write_volume(tmp_path / "v.h5", vol, 0.5, "test")
    assert io.read_grey_range(tmp_path / "v.h5") == (float(vol.min()), float(vol.max()))
    ref = threshold_volume(tmp_path / "v.h5", tmp_path / "ref.h5", ThresholdSettings(), progress=False)
    lo, hi = float(vol.min()), float(vol.max())
    value = {"narrower": (lo + 0.01, hi - 0.01), "wider": (lo - 0.5, hi + 0.5)}.get(grey_range, grey_range)
    with h5py.File(tmp_path / "v.h5", "a") as f:
        if value is None:
            del f["volume"].attrs[io.GREY_RANGE_ATTR]
        else:
            f["volume"].attrs[io.GREY_RANGE_ATTR] = np.array(value)
    res = threshold_volume(tmp_path / "v.h5", tmp_path / "p.h5", ThresholdSettings(), progress=False)
    np.testing.assert_array_equal(res.histogram.counts, ref.histogram.counts)
    np.testing.assert_array_equal(res.histogram.edges, ref.histogram.edges)
    np.testing.assert_array_equal(io.read_dataset(tmp_path / "p.h5", "phases"),
                                  io.read_dataset(tmp_path / "ref.h5", "phases"))


def test_bin_counts_skip_values_outside_the_range_and_report_it():
    edges = np.linspace(0.0, 1.0, 9, dtype=np.float32)
    v = np.array([-0.5, 0.0, 0.2, 0.5, 0.99, 1.0, 1.5], np.float32)
    counts, vmin, vmax = UniformBins(edges).counts_and_range(v)
    np.testing.assert_array_equal(counts, np.histogram(v, bins=8, range=(0.0, 1.0))[0])
    assert (vmin, vmax) == (-0.5, 1.5)


def test_the_map_records_what_the_forward_model_changed(tmp_path):
    """``psf_refine`` attribute: the count of codes the pass changed is the count of voxels where the map
    differs from the one thresholded without it (the same passes up to it)."""
    import h5py

    from detachment.phantom import PhantomParams, generate_phantom

    vol = generate_phantom(PhantomParams(shape_zyx=(20, 48, 48), n_particles=6, diameter_median_um=5,
                                         diameter_min_um=3.5, diameter_max_um=7, blur_sigma_vox=0.8), seed=5).volume
    io.write_volume(tmp_path / "v.h5", vol, 0.5, "test")
    threshold_volume(tmp_path / "v.h5", tmp_path / "on.h5", ThresholdSettings(slab=8), progress=False, workers=2)
    threshold_volume(tmp_path / "v.h5", tmp_path / "off.h5", ThresholdSettings(psf_refine=False), progress=False)
    changed = int((io.read_dataset(tmp_path / "on.h5", "phases") != io.read_dataset(tmp_path / "off.h5", "phases")).sum())
    with h5py.File(tmp_path / "on.h5", "r") as f, h5py.File(tmp_path / "off.h5", "r") as g:
        assert (f": {changed} codes changed ({100 * changed / vol.size:.3g} % of the voxels); sigma fitted on the "
                "block z 0-19" in f["phases"].attrs["psf_refine"])
        assert changed > 0 and g["phases"].attrs["psf_refine"] == "off"


def _blurred_phantom_file(path) -> None:
    """A small default phantom blurred by σ 0.8 voxels, written as a volume file."""
    from detachment.phantom import PhantomParams, generate_phantom

    vol = generate_phantom(PhantomParams(shape_zyx=(20, 40, 40), n_particles=5, diameter_median_um=5,
                                         diameter_min_um=3.5, diameter_max_um=7, blur_sigma_vox=0.8), seed=6).volume
    io.write_volume(path, vol, 0.5, "test")


@pytest.mark.parametrize("value", ["edge", 0.9])
def test_the_forward_models_sigma_can_be_the_edges_or_set(tmp_path, value):
    import h5py

    _blurred_phantom_file(tmp_path / "v.h5")
    res = threshold_volume(tmp_path / "v.h5", tmp_path / "p.h5", ThresholdSettings(psf_refine_sigma=value),
                           progress=False)
    assert res.refine_sigma_vox == (res.edge_width_vox if value == "edge" else value)
    with h5py.File(tmp_path / "p.h5", "r") as f:
        assert f["phases"].attrs["edge_width_vox"] == res.edge_width_vox
        assert f["phases"].attrs["psf_refine"].startswith(f"sigma {res.refine_sigma_vox:.3g} vox")
        words = "sigma measured on the edge profiles;" if value == "edge" else "sigma set in the config;"
        assert words in f["phases"].attrs["psf_refine"]


@pytest.mark.parametrize("factor", [0.5, 1.0, 2.0])
def test_the_forward_models_z_factor_is_fitted_to_the_planted_one(tmp_path, factor):
    """Phantoms blurred by σ 0.5 within the slices and ``factor`` times that along z: the σ and z factor
    fitted by the forward model's energy come back within a tenth, and the map's attribute holds them. Below
    a z σ of about 0.3 the kernel is nearly a delta, so 0.5 is read as anything from 0.4 to 0.6."""
    import h5py

    from detachment.phantom import PhantomParams, generate_phantom

    vol = generate_phantom(PhantomParams(shape_zyx=(32, 64, 64), n_particles=10, diameter_median_um=6,
                                         diameter_min_um=4, diameter_max_um=8, blur_z_factor=factor), seed=3).volume
    io.write_volume(tmp_path / "v.h5", vol, 0.5, "test")
    res = threshold_volume(tmp_path / "v.h5", tmp_path / "p.h5", ThresholdSettings(), progress=False)
    assert res.refine_sigma_vox == pytest.approx(0.5, abs=0.05)
    assert res.refine_z_factor == pytest.approx(factor, rel=0.1 if factor >= 1 else 0.2)
    with h5py.File(tmp_path / "p.h5", "r") as f:
        assert f["phases"].attrs["psf_refine_z_factor"] == res.refine_z_factor
        assert f"z factor {res.refine_z_factor:.3g} fitted on the block" in f["phases"].attrs["psf_refine"]


def test_a_z_factor_set_in_the_config_is_used(tmp_path):
    import h5py

    _blurred_phantom_file(tmp_path / "v.h5")
    res = threshold_volume(tmp_path / "v.h5", tmp_path / "p.h5", ThresholdSettings(psf_refine_z_factor=1.3),
                           progress=False)
    assert res.refine_z_factor == 1.3
    with h5py.File(tmp_path / "p.h5", "r") as f:
        assert "z factor 1.3 set in the config" in f["phases"].attrs["psf_refine"]


@pytest.mark.parametrize("value", ["auto", 0.05, 11, float("nan"), True, None, "2"])
def test_a_bad_z_factor_is_refused_naming_the_field(value):
    with pytest.raises(ValueError, match="threshold.psf_refine_z_factor"):
        ThresholdSettings(psf_refine_z_factor=value)


@pytest.mark.parametrize("value", ["fit", 1.0, 0])
def test_nmcs_texture_is_read_as_fitted_set_or_not_and_the_map_says_which(tmp_path, value):
    import h5py

    _blurred_phantom_file(tmp_path / "v.h5")
    threshold_volume(tmp_path / "v.h5", tmp_path / "p.h5", ThresholdSettings(psf_refine_texture_vox=value),
                     progress=False)
    with h5py.File(tmp_path / "p.h5", "r") as f:
        words = f["phases"].attrs["psf_refine"].split("; NMC texture ")[1]
        maps = f["phases"][:]
    expected = {"fit": "read over", 1.0: "read over 1 vox (set in the config; NMC sd nmc_low", 0: "off"}[value]
    assert words.startswith(expected) and ("(fitted; NMC sd" in words) == (value == "fit"), words
    if value == 1.0:  # a different forward model: some codes move
        threshold_volume(tmp_path / "v.h5", tmp_path / "q.h5", ThresholdSettings(psf_refine_texture_vox=0),
                         progress=False)
        with h5py.File(tmp_path / "q.h5", "r") as f:
            assert (f["phases"][:] != maps).any()


@pytest.mark.parametrize("value", ["auto", -0.5, float("nan"), 25, True, None])
def test_a_bad_texture_sigma_is_refused_naming_the_field(value):
    with pytest.raises(ValueError, match="threshold.psf_refine_texture_vox"):
        ThresholdSettings(psf_refine_texture_vox=value)


@pytest.mark.parametrize("value", ["auto", 0, -0.5, float("nan"), 25, True, None])
def test_a_bad_forward_model_sigma_is_refused_naming_the_field(value):
    with pytest.raises(ValueError, match="threshold.psf_refine_sigma"):
        ThresholdSettings(psf_refine_sigma=value)


def test_a_fitted_sigma_at_the_end_of_its_range_is_flagged(tmp_path, monkeypatch, caplog):
    """Edge profiles reading 2.5 voxels on a phantom blurred by 0.8: the fit stops at its lower end (1.25),
    and the map's attribute and the log say so (the range: 0.5-1.6 times the edges' σ)."""
    import h5py

    from detachment import blur

    _blurred_phantom_file(tmp_path / "v.h5")
    monkeypatch.setattr(blur.EdgeProfiles, "sigma", lambda self: 2.5)
    with caplog.at_level("WARNING"):
        res = threshold_volume(tmp_path / "v.h5", tmp_path / "p.h5", ThresholdSettings(), progress=False)
    assert res.refine_sigma_vox == pytest.approx(1.25, abs=0.04)
    with h5py.File(tmp_path / "p.h5", "r") as f:
        assert "AT THE END of its range 1.25-4:" in f["phases"].attrs["psf_refine"]
    assert any("AT THE END" in r.getMessage() and r.levelname == "WARNING" for r in caplog.records)


@pytest.mark.parametrize("value", ["fit", -0.1, 10.5, float("nan"), True, None])
def test_a_bad_domain_sigma_is_refused_naming_the_field(value):
    with pytest.raises(ValueError, match="threshold.domain_sigma_vox"):
        ThresholdSettings(domain_sigma_vox=value)


@pytest.mark.parametrize("fwhm_nmc, wider", [(0.07, False), (0.147, True)])
def test_auto_domain_sigma_reads_the_planted_densities_better_than_a_fixed_one(tmp_path, fwhm_nmc, wider):
    """Against the phantom's planted NMC densities: with the default phantom's narrow NMC, ``auto`` takes a
    window narrower than 0.7 and confuses fewer low / high voxels (one voxel of a domain's edge is not
    averaged away); with the paper's NMC width (a texture wider than the noise) it averages over a wider
    one and confuses fewer than 0.7 does. Counted inside the particles: on their surface the forward model
    exchanges the densities again, whatever the window."""
    import h5py
    from scipy import ndimage

    from detachment.phantom import PhantomParams, generate_phantom

    fwhm = {**PhantomParams().fwhm, "nmc_low": fwhm_nmc, "nmc_high": fwhm_nmc}
    ph = generate_phantom(PhantomParams(shape_zyx=(40, 96, 96), n_particles=14, fwhm=fwhm), seed=11)
    io.write_volume(tmp_path / "v.h5", ph.volume, 0.5, "test")
    nmc = ndimage.binary_erosion((ph.phases == phases.NMC_LOW) | (ph.phases == phases.NMC_HIGH))
    confused, sigma = {}, {}
    for setting in ("auto", 0.7):
        res = threshold_volume(tmp_path / "v.h5", tmp_path / "p.h5", ThresholdSettings(domain_sigma_vox=setting),
                               progress=False)
        with h5py.File(tmp_path / "p.h5", "r") as f:
            p, sigma[setting] = f["phases"][...], f["phases"].attrs["nmc_domain_sigma_vox"]
        assert res.domain_sigma_vox == sigma[setting]  # the result says what the map's attribute says
        other = np.where(ph.phases == phases.NMC_LOW, phases.NMC_HIGH, phases.NMC_LOW)
        confused[setting] = float(np.mean(p[nmc] == other[nmc]))
    assert sigma[0.7] == 0.7 and (sigma["auto"] > 0.7) == wider
    assert confused["auto"] < 0.9 * confused[0.7]


@pytest.mark.parametrize("setting", ["auto", 0.9, 0.0])
def test_the_domain_split_looks_at_the_sigma_its_acceptance_was_chosen_with(setting):
    """``auto``: two densities in one NMC histogram mode are looked for on means of 0.7 voxel whatever σ the
    classification then takes (wider means pass the split's acceptance with poor splits); a set σ is used
    for both."""
    from detachment.threshold import _domain_sigmas

    model = phases.PhaseModel(("void", "cbd", "al", "nmc_low"), np.array([0.15, 0.4, 0.6]),
                              np.array([0.0, 0.3, 0.5, 0.8]), np.array([0.02, 0.03, 0.02, 0.1]), np.full(4, 0.25),
                              "test")  # one NMC class 4.9 noise-sigmas wide: auto classifies at 1.5
    split, classify = _domain_sigmas(model, ThresholdSettings(domain_sigma_vox=setting))
    assert split.domain_sigma_vox == (phases.AUTO_SPLIT_SIGMA if setting == "auto" else setting)
    assert classify.domain_sigma_vox == (phases.AUTO_DOMAIN_SIGMA[1] if setting == "auto" else setting)


def test_each_phases_spread_is_its_interior_fit_but_never_below_the_electrolytes_noise():
    """Against Gaussians drawn into the interior histograms: textured NMC keeps its wider spread; a class of
    a handful of voxels (one bin: a fit far narrower than the noise) and Al drawn a little narrower than the
    electrolyte get the electrolyte's."""
    rng = np.random.default_rng(4)
    fine = np.linspace(-0.2, 1.2, 2801)
    names, means = ("void", "cbd", "al", "nmc_low", "nmc_high"), np.array([0.0, 0.3, 0.5, 0.72, 0.9])
    drawn = {"void": 0.023, "cbd": 0.03, "al": 0.021, "nmc_low": 0.06}
    interior = np.zeros((256, len(fine) - 1))
    for name, sd in drawn.items():
        interior[phases.PHASE_CODES[name]] = np.histogram(rng.normal(means[names.index(name)], sd, 200_000), fine)[0]
    interior[phases.NMC_HIGH, np.searchsorted(fine, 0.9)] = 12  # a few voxels, all in one bin
    model = phases.PhaseModel(names, (means[1:] + means[:-1]) / 2, means, np.full(5, 0.05), np.full(5, 0.2), "test")
    levels, spread = refine_levels(model, interior, fine)
    assert spread["void"] == pytest.approx(0.023, rel=0.05) and spread["cbd"] == pytest.approx(0.03, rel=0.05)
    assert spread["nmc_low"] == pytest.approx(0.06, rel=0.05)
    assert spread["al"] == spread["nmc_high"] == spread["void"]
    assert levels["nmc_low"] == pytest.approx(0.72, abs=0.005)
