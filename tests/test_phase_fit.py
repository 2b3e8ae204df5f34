"""The informed phase model: the collector found as a slab, as many classes as the histogram resolves."""

from __future__ import annotations

import logging

import h5py
import numpy as np
import pytest
from scipy import ndimage

from detachment import io, plausibility
from detachment.phantom import PhantomParams, generate_phantom
from detachment.phase_fit import (
    ElectrolyteLayer,
    Mixture,
    PhaseModelError,
    anchor_to_layer,
    balanced_void_cbd,
    find_collector_slab,
    find_electrolyte_layer,
    fit_informed_model,
    resolved_mixture,
)
from detachment.phases import AL, NMC_HIGH, NMC_LOW, PHASE_CODES, VOID, Histogram, gmm_decision_thresholds
from detachment.threshold import ThresholdSettings, threshold_volume

EDGES = np.linspace(-0.2, 1.2, 281)


def _slice_hists(vol: np.ndarray) -> np.ndarray:
    return np.stack([np.histogram(v, bins=len(EDGES) - 1, range=(EDGES[0], EDGES[-1]))[0] for v in vol])


def _layered(thickness: int, collector_grey: float = 0.5, void_share: float = 0.6, seed: int = 0) -> np.ndarray:
    """A collector slab of ``thickness`` slices (grey 0.5, σ 0.02) under a random void / NMC mix."""
    rng = np.random.default_rng(seed)
    vol = np.where(rng.random((30, 40, 40)) < void_share, 0.0, 0.8) + rng.normal(0, 0.02, (30, 40, 40))
    vol[:thickness] = collector_grey + rng.normal(0, 0.02, (thickness, 40, 40))
    return vol


@pytest.mark.parametrize("thickness", [1, 3, 8])
def test_the_collector_slab_is_found_with_its_thickness_and_grey_level(thickness):
    slab = find_collector_slab(_slice_hists(_layered(thickness)), EDGES)
    assert slab.found and slab.thickness == thickness
    assert slab.mean == pytest.approx(0.5, abs=0.005)
    assert slab.sigma == pytest.approx(0.02, abs=0.004)  # planted σ; bins are 0.005 wide


def test_no_collector_slab_is_refused_with_the_reason():
    vol = _layered(4)
    assert not find_collector_slab(_slice_hists(vol[4:]), EDGES).found  # slice 0 is a void / NMC mix
    dark = find_collector_slab(_slice_hists(_layered(4, collector_grey=0.0, void_share=0.3)), EDGES)
    assert not dark.found and "darkest" in dark.reason  # an electrolyte layer at z = 0 is no collector
    with pytest.raises(PhaseModelError, match="no Al collector slab at z = 0: slice z = 0 is not uniform"):
        fit_informed_model(_slice_hists(vol[4:]), EDGES, ("void", "cbd", "al", "nmc_low", "nmc_high"))


@pytest.mark.parametrize("separation, k", [(0.3, 2), (0.05, 1)])
def test_only_components_the_histogram_resolves_are_kept(separation, k):
    """Two Gaussians (σ 0.04, 70 / 30 %) at 0.5 and 0.5 + separation: Ashman's D 10.6 gives two
    components at the planted means (and scikit-learn's EM on the raw samples agrees); D 1.8 gives one."""
    from sklearn.mixture import GaussianMixture

    rng = np.random.default_rng(1)
    v = np.concatenate([rng.normal(0.5, 0.04, 70000), rng.normal(0.5 + separation, 0.04, 30000)])
    counts, edges = np.histogram(v, bins=200, range=(0.2, 1.1))
    mix = resolved_mixture(Histogram(counts, edges), 2)
    assert len(mix.means) == k
    if k == 2:
        np.testing.assert_allclose(mix.means, [0.5, 0.5 + separation], atol=0.005)
        np.testing.assert_allclose(mix.weights / mix.weights.sum(), [0.7, 0.3], atol=0.01)
        ref = GaussianMixture(2, random_state=0).fit(v[:, None])
        np.testing.assert_allclose(mix.means, np.sort(ref.means_.ravel()), atol=0.003)
    else:
        assert mix.means[0] == pytest.approx(v.mean(), abs=0.003) and "separation D" in mix.tried[0]


def test_one_mode_cut_at_the_collectors_band_is_two_components_only_by_separation():
    """One NMC mode (low 0.734 σ 0.066 with 28 % high 0.837 σ 0.051: Ashman's D 1.75) with its dark flank cut
    at 0.65, as the side above Al + 3 σ cuts it: EM reads the cut as a component of σ 0.03, narrower than
    either phase, and passes the separation test; without the separation test it stays one component and
    says why."""
    rng = np.random.default_rng(0)
    v = np.concatenate([rng.normal(0.734, 0.066, 180000), rng.normal(0.837, 0.051, 70000)])
    v = v[v > 0.65]
    hist = Histogram(*np.histogram(v, bins=76, range=(0.65, 1.03)))
    two = resolved_mixture(hist, 2)
    assert len(two.means) == 2 and two.sigmas[0] < 0.04  # the artefact: narrower than any planted phase
    one = resolved_mixture(hist, 2, by_separation=False)
    assert len(one.means) == 1 and "1 mode(s) shown (separation alone not taken)" in one.tried[0]
    assert one.means[0] == pytest.approx(v.mean(), abs=0.005)


def test_a_side_that_is_only_a_phases_cut_flank_keeps_the_em_component():
    """NMC low at 0.6 (σ 0.06) inside the collector's band: the side above 0.65 is its decreasing flank with
    no mode. Its fullest bin is the cut and its ragged tail holds no significant peak, so the component
    stays EM's (the side's mean), inside the side, instead of a peak core fitted on noise."""
    from detachment.phase_fit import _peak_cores

    rng = np.random.default_rng(0)
    v = rng.normal(0.6, 0.06, 200000)
    v = v[v > 0.65]
    side = Histogram(*np.histogram(v, bins=70, range=(0.65, 1.0)))
    em = resolved_mixture(side, 1)
    kept = _peak_cores(em, side)
    assert kept.means[0] == pytest.approx(v.mean(), abs=0.002) and kept.sigmas[0] == pytest.approx(v.std(), abs=0.002)


def test_nmc_densities_on_one_histogram_mode_are_not_split_on_the_voxels_histogram(tmp_path):
    """NMC low 0.528 / high 0.624 (FWHM 0.134 / 0.107) just above Al 0.399: NMC low's dark flank lies in Al's
    band and the side above it shows one NMC mode. The split is left to the domain means and reads the
    planted densities far better than a split on the cut histogram did (a quarter of the NMC voxels
    swapped)."""
    p = PhantomParams(shape_zyx=(44, 128, 128), n_particles=36, collector_thickness_vox=8, blur_sigma_vox=0.5,
                      intensity={"void": 0.029, "cbd": 0.225, "al": 0.399, "nmc_low": 0.528, "nmc_high": 0.624},
                      fwhm={"void": 0.068, "al": 0.068, "cbd": 0.068, "nmc_low": 0.134, "nmc_high": 0.107})
    ph = generate_phantom(p, seed=2)
    io.write_volume(tmp_path / "v.h5", ph.volume, (0.5,) * 3, "test")
    res = threshold_volume(tmp_path / "v.h5", tmp_path / "p.h5", ThresholdSettings(), progress=False)
    assert res.nmc_split == "domain means"
    written = io.read_dataset(tmp_path / "p.h5", "phases")
    nmc = np.isin(ph.phases, (NMC_LOW, NMC_HIGH)) & np.isin(written, (NMC_LOW, NMC_HIGH))
    swapped = (written[nmc] != ph.phases[nmc]).mean()
    assert swapped < 0.16, swapped


def _phantom(tmp_path, seed: int = 3, **kw):
    p = PhantomParams(shape_zyx=(28, 64, 64), n_particles=10, diameter_median_um=6, diameter_min_um=4,
                      diameter_max_um=8, **kw)
    ph = generate_phantom(p, seed=seed)
    io.write_volume(tmp_path / "v.h5", ph.volume, (0.5,) * 3, "test")
    return ph


def test_overlapping_nmc_densities_become_one_class_reported_as_not_resolved(tmp_path):
    """NMC low and high planted 0.04 apart with the paper's FWHM 0.147: one NMC class, said so in the file
    attributes and the FWHM table; every other phase still matches the planted map."""
    intensity = {"void": 0.0, "cbd": 0.30, "al": 0.50, "nmc_low": 0.74, "nmc_high": 0.78}
    fwhm = {"void": 0.053, "cbd": 0.064, "al": 0.053, "nmc_low": 0.147, "nmc_high": 0.147}
    ph = _phantom(tmp_path, intensity=intensity, fwhm=fwhm)
    res = threshold_volume(tmp_path / "v.h5", tmp_path / "p.h5", ThresholdSettings(), progress=False)
    assert res.unresolved == ("nmc_high",) and "nmc_high" not in res.model.names
    written = io.read_dataset(tmp_path / "p.h5", "phases")
    assert not (written == NMC_HIGH).any()
    truth = np.where(ph.phases == NMC_HIGH, NMC_LOW, ph.phases)
    assert (written == truth).mean() > 0.93
    with h5py.File(tmp_path / "p.h5", "r") as f:
        from detachment.particles import phases_not_resolved

        assert phases_not_resolved(f["phases"].attrs) == {"nmc_high"}
    row = res.fwhm.set_index("phase").loc["nmc_high"]
    assert not row.resolved and np.isnan(row.model_mean)
    assert plausibility.check_phase_map(plausibility.PhaseCounts(res.counts_per_slice), res.fwhm).passed.all()


def test_the_informed_model_measures_each_phase_near_its_planted_grey_level(tmp_path):
    ph = _phantom(tmp_path, seed=5)
    res = threshold_volume(tmp_path / "v.h5", tmp_path / "p.h5", ThresholdSettings(), progress=False)
    assert res.unresolved == () and res.model.method == "informed"
    same = ndimage.binary_erosion  # interior voxels of the planted map: the grey level of the pure phase
    for name, mean in zip(res.model.names, res.model.means):
        inside = same(ph.phases == PHASE_CODES[name], border_value=1)
        assert mean == pytest.approx(float(ph.volume[inside].mean()), abs=0.035), name
    assert res.collector.thickness == pytest.approx(ph.params.collector_thickness_vox, abs=1)
    assert (io.read_dataset(tmp_path / "p.h5", "phases") == ph.phases).mean() > 0.95


def test_manual_thresholds_replace_the_fitted_ones_voxel_for_voxel(tmp_path):
    """Without clean-ups, the map equals a digitisation of the grey levels at the manual thresholds."""
    ph = _phantom(tmp_path, seed=6)
    thresholds = (0.14, 0.41, 0.6, 0.8)
    s = ThresholdSettings(thresholds=thresholds, collector_min_thickness_vox=0, domain_sigma_vox=0, slab=5,
                          edge_shells=False)
    res = threshold_volume(tmp_path / "v.h5", tmp_path / "p.h5", s, progress=False)
    codes = np.array([PHASE_CODES[n] for n in s.order], np.uint8)
    expected = codes[np.searchsorted(np.asarray(thresholds, np.float32), ph.volume, side="right")]
    np.testing.assert_array_equal(io.read_dataset(tmp_path / "p.h5", "phases"), expected)
    assert res.model.method == "manual" and tuple(res.model.thresholds) == thresholds
    with pytest.raises(ValueError, match=r"threshold.thresholds: \[0.5, 0.4, 0.6, 0.8\] must be 4 increasing"):
        ThresholdSettings(thresholds=(0.5, 0.4, 0.6, 0.8))


def test_a_volume_with_the_collector_on_the_far_face_stops_with_the_sample_and_the_way_out(tmp_path, caplog):
    ph = _phantom(tmp_path, seed=7)
    io.write_volume(tmp_path / "flipped.h5", ph.volume[::-1].copy(), (0.5,) * 3, "test")
    with pytest.raises(PhaseModelError) as err:
        threshold_volume(tmp_path / "flipped.h5", tmp_path / "p.h5", ThresholdSettings(), progress=False)
    assert not (tmp_path / "p.h5").exists()  # nothing half-written
    with pytest.raises(plausibility.ImplausiblePhaseMap, match=r"sample 'cellB'.*no Al collector slab.*"
                                                               r"orientation.*`thresholds` column"):
        plausibility.enforce_model(err.value, "cellB", "stop")
    with caplog.at_level(logging.WARNING):
        plausibility.enforce_model(err.value, "cellB", "warn")
    assert "Going on with threshold.method: gmm" in caplog.text
    assert (ph.phases[0] == AL).all() and (ph.phases[-1] == VOID).mean() > 0.5  # what the flip did


def _two_density_phantom(tmp_path, high: float, seed: int = 3):
    """Paper FWHMs (NMC 0.147): NMC low 0.72 and high ``high`` overlap in the voxels' histogram."""
    fwhm = {"void": 0.053, "cbd": 0.064, "al": 0.053, "nmc_low": 0.147, "nmc_high": 0.147}
    p = PhantomParams(shape_zyx=(28, 96, 96), n_particles=20, diameter_median_um=6, diameter_min_um=4,
                      diameter_max_um=8, fwhm=fwhm,
                      intensity={"void": 0.0, "cbd": 0.30, "al": 0.50, "nmc_low": 0.72, "nmc_high": high})
    ph = generate_phantom(p, seed=seed)
    io.write_volume(tmp_path / "v.h5", ph.volume, (0.5,) * 3, "test")
    return ph


def test_nmc_densities_the_histogram_merges_are_split_on_their_domain_means(tmp_path):
    """NMC low 0.72 / high 0.86 at FWHM 0.147: the voxels' histogram shows one NMC class, the domain means
    two. The split is declared (attribute, FWHM table) and agrees with the planted domains far better than
    one class does; switched off, NMC stays one class, declared unresolved."""
    from detachment.particles import phases_not_resolved

    ph = _two_density_phantom(tmp_path, 0.86)
    off = threshold_volume(tmp_path / "v.h5", tmp_path / "off.h5", ThresholdSettings(nmc_domain_split=False),
                           progress=False)
    assert off.unresolved == ("nmc_high",) and off.nmc_split == "not resolved" and off.domain_split is None
    res = threshold_volume(tmp_path / "v.h5", tmp_path / "p.h5", ThresholdSettings(), progress=False)
    assert res.unresolved == () and res.nmc_split == "domain means" and res.domain_split.resolved
    low, high = res.domain_split.mixture.means
    assert 0.69 < low < 0.76 and 0.78 < high < 0.9, (low, high)
    assert low < res.domain_split.threshold < high
    written = io.read_dataset(tmp_path / "p.h5", "phases")
    nmc = np.isin(ph.phases, (NMC_LOW, NMC_HIGH)) & np.isin(written, (NMC_LOW, NMC_HIGH))
    agree = (written[nmc] == ph.phases[nmc]).mean()
    one_class = (ph.phases[nmc] == NMC_LOW).mean()
    assert agree > 0.8 and agree > one_class + 0.1, (agree, one_class)
    with h5py.File(tmp_path / "p.h5", "r") as f:
        assert f["phases"].attrs["nmc_split"] == "domain means" and phases_not_resolved(f["phases"].attrs) == set()
    table = res.fwhm.set_index("phase")
    assert table.loc["nmc_high"].resolved and table.loc["nmc_high"].resolved_on == "domain means"
    assert table.loc["void"].resolved_on == "histogram"
    # outside NMC the map is the one-class map but for a few voxels on NMC edges: the edge-shell cut, the
    # Al-range cut and the forward model (psf_refine) follow the NMC class levels, which the split moves
    merged = io.read_dataset(tmp_path / "off.h5", "phases")
    outside = ~np.isin(merged, (NMC_LOW, NMC_HIGH))
    changed = written[outside] != merged[outside]
    assert changed.mean() < 2e-3
    al = (written == AL) | (merged == AL)
    assert (written[al] != merged[al]).mean() < 2e-3


@pytest.mark.parametrize("separation, resolved", [(0.12, True), (0.02, False)])
def test_the_domain_split_needs_two_separated_components(separation, resolved):
    """Two Gaussians of σ 0.02 (30 % high): 0.12 apart they are split where the densities cross with equal
    weights (the midpoint, for equal σ); 0.02 apart, even a histogram ragged enough to show two modes stays
    one class."""
    from detachment.phase_fit import split_nmc_domains
    from detachment.phases import histogram_peaks

    rng = np.random.default_rng(0)
    v = np.concatenate([rng.normal(0.7, 0.02, 700), rng.normal(0.7 + separation, 0.02, 300)])
    counts, edges = np.histogram(v, 256, range=(0.6, 0.9))
    split = split_nmc_domains(Histogram(counts, edges))
    assert split.resolved == resolved
    if resolved:
        assert split.threshold == pytest.approx(0.7 + separation / 2, abs=0.004)
    else:
        assert len(histogram_peaks(Histogram(counts, edges), 2, fill=False)) == 2  # ragged: two modes
        assert np.isnan(split.threshold) and "separation D" in split.mixture.tried[-1]
        assert split.mixture.means[0] == pytest.approx(v.mean(), abs=0.002)


def test_too_few_interior_nmc_voxels_are_not_split():
    from detachment.phase_fit import split_nmc_domains

    edges = np.linspace(0.6, 0.9, 257)
    for counts in (np.zeros(256, np.int64), np.histogram(np.r_[np.full(300, 0.7), np.full(300, 0.85)], edges)[0]):
        split = split_nmc_domains(Histogram(counts, edges))
        assert not split.resolved and np.isnan(split.threshold) and "fewer than" in split.mixture.tried[0]


def test_nmc_high_is_inserted_after_nmc_low_and_a_threshold_outside_its_range_is_refused():
    from detachment.phases import PhaseModel, with_nmc_high

    m = PhaseModel(("void", "cbd", "al", "nmc_low"), np.array([0.15, 0.4, 0.6]), np.array([0.0, 0.3, 0.5, 0.75]),
                   np.full(4, 0.03), np.full(4, 0.25), "informed")
    out = with_nmc_high(m, 0.78, 0.84, 0.03, 0.3, 0.72, 0.03)
    assert out.names == ("void", "cbd", "al", "nmc_low", "nmc_high")
    np.testing.assert_allclose(out.thresholds, [0.15, 0.4, 0.6, 0.78])
    np.testing.assert_allclose(out.means, [0.0, 0.3, 0.5, 0.72, 0.84])
    np.testing.assert_allclose(out.weights, [0.25, 0.25, 0.25, 0.175, 0.075])
    with pytest.raises(ValueError, match="outside nmc_low's range"):
        with_nmc_high(m, 0.55, 0.84, 0.03, 0.3, 0.72, 0.03)
    with pytest.raises(ValueError, match="without nmc_high"):
        with_nmc_high(out, 0.8, 0.84, 0.03, 0.3, 0.72, 0.03)


@pytest.mark.parametrize("high, seed", [(0.84, 3), (0.90, 3), (0.95, 3)])
def test_a_small_volume_never_gets_an_nmc_split_worse_than_one_class(tmp_path, high, seed):
    """28 x 64 x 64 voxels, NMC low 0.74 and high ``high`` at FWHM 0.147: the NMC histogram holds a few
    thousand voxels and is ragged. Either NMC stays one class, declared, or the split agrees with the
    planted domains clearly better than one class would (a split on a spurious mode once put nearly every
    NMC voxel in the high class)."""
    intensity = {"void": 0.0, "cbd": 0.30, "al": 0.50, "nmc_low": 0.74, "nmc_high": high}
    fwhm = {"void": 0.053, "cbd": 0.064, "al": 0.053, "nmc_low": 0.147, "nmc_high": 0.147}
    ph = _phantom(tmp_path, seed=seed, intensity=intensity, fwhm=fwhm)
    res = threshold_volume(tmp_path / "v.h5", tmp_path / "p.h5", ThresholdSettings(), progress=False)
    written = io.read_dataset(tmp_path / "p.h5", "phases")
    nmc = np.isin(ph.phases, (NMC_LOW, NMC_HIGH)) & np.isin(written, (NMC_LOW, NMC_HIGH))
    if res.nmc_split == "not resolved":
        assert res.unresolved == ("nmc_high",) and not (written == NMC_HIGH).any()
    else:
        agree = (written[nmc] == ph.phases[nmc]).mean()
        assert agree > (ph.phases[nmc] == NMC_LOW).mean() + 0.1, (res.nmc_split, agree)


def test_histogram_modes_must_stand_above_their_counting_noise():
    """One Gaussian peak drawn with few voxels (ragged bins) shows a spurious second mode by prominence alone
    but not at the informed model's significance; two peaks drawn with many voxels show both."""
    from detachment.phases import PEAK_SIGNIFICANCE, histogram_peaks

    rng = np.random.default_rng(1)
    few = Histogram(*np.histogram(rng.normal(0.7, 0.06, 4000), 256, range=(0.0, 1.2)))
    assert len(histogram_peaks(few, 2, fill=False)) == 2
    assert len(histogram_peaks(few, 2, fill=False, significance=PEAK_SIGNIFICANCE)) == 1
    two = np.concatenate([rng.normal(0.7, 0.03, 300_000), rng.normal(0.9, 0.03, 100_000)])
    peaks = histogram_peaks(Histogram(*np.histogram(two, 256, range=(0.0, 1.2))), 2, fill=False,
                            significance=PEAK_SIGNIFICANCE)
    np.testing.assert_allclose((peaks + 0.5) * 1.2 / 256, [0.7, 0.9], atol=0.01)


ORDER = ("void", "cbd", "al", "nmc_low", "nmc_high")


def _electrode_under_electrolyte(layer: int, seed: int = 0) -> np.ndarray:
    """A collector slab (4 slices, grey 0.5), an electrode of electrolyte (0.0, 45 %), CBD (0.28, 20 %) and
    NMC (0.8), and ``layer`` slices of electrolyte at the far face (σ 0.02 everywhere)."""
    rng = np.random.default_rng(seed)
    shape = (30, 40, 40)
    u = rng.random(shape)
    grey = np.where(u < 0.45, 0.0, np.where(u < 0.65, 0.28, 0.8))
    grey[:4] = 0.5
    if layer:
        grey[-layer:] = 0.0
    return grey + rng.normal(0, 0.02, shape)


@pytest.mark.parametrize("layer", [3, 8])
def test_the_electrolyte_layer_at_the_far_face_is_measured_and_anchors_the_electrolyte_class(layer):
    counts = _slice_hists(_electrode_under_electrolyte(layer))
    found = find_electrolyte_layer(counts, EDGES)
    assert found.found and found.thickness == layer
    assert found.mean == pytest.approx(0.0, abs=0.005) and found.sigma == pytest.approx(0.02, abs=0.004)
    fit = fit_informed_model(counts, EDGES, ORDER)
    assert fit.layer == found
    assert fit.model.means[0] == found.mean and fit.model.sigmas[0] == found.sigma
    assert fit.model.names == ORDER[:4] and fit.model.means[1] == pytest.approx(0.28, abs=0.01)


def test_no_layer_where_the_electrode_reaches_the_far_face_or_the_far_face_is_not_the_darkest():
    assert "not uniform" in find_electrolyte_layer(_slice_hists(_electrode_under_electrolyte(0)), EDGES).reason
    assert "fewer than 3" in find_electrolyte_layer(_slice_hists(_electrode_under_electrolyte(2)), EDGES).reason
    cbd_top = _electrode_under_electrolyte(0)
    cbd_top[-5:] = 0.28 + np.random.default_rng(1).normal(0, 0.02, cbd_top[-5:].shape)
    assert "not the darkest" in find_electrolyte_layer(_slice_hists(cbd_top), EDGES).reason


@pytest.mark.parametrize("means", [(-0.14, 0.0), (0.1, 0.28)])
def test_a_model_whose_darkest_class_is_not_the_far_face_electrolyte_stops_instead_of_shifting_the_labels(means):
    """Dark classes fitted at gas (-0.14, darker than the electrolyte) and electrolyte, or at two levels
    neither of which is the electrolyte's: labelled in order, the electrolyte would be called another
    phase. The layer at 0.0 stops the model and says why."""
    mix = Mixture(np.array(means), np.array([0.02, 0.02]), np.array([500.0, 500.0]))
    with pytest.raises(PhaseModelError, match=r"electrolyte above the electrode \(8 slices at the far face, "
                                              r"grey level 0 .*\) is not the darkest class"):
        anchor_to_layer(mix, ElectrolyteLayer(8, 0.0, 0.02))


def test_a_shoulder_of_the_electrolyte_peak_is_not_taken_for_cbd():
    """EM split one broad electrolyte peak (σ 0.03, measured on the layer) into two narrow components
    0.04 apart (Ashman's D 2.7 with their own σ, 1.7 with the layer's): one electrolyte class remains,
    holding both components' voxels; a component 0.2 above (D 6) stays."""
    layer = ElectrolyteLayer(5, 0.0, 0.03)
    split = Mixture(np.array([0.0, 0.04]), np.array([0.015, 0.015]), np.array([600.0, 400.0]))
    one = anchor_to_layer(split, layer)
    assert len(one.means) == 1 and one.weights[0] == 1000 and "shoulder" in one.tried[-1]
    two = anchor_to_layer(Mixture(np.array([0.0, 0.2]), np.array([0.015, 0.03]), np.array([6.0, 4.0])), layer)
    np.testing.assert_array_equal(two.means, [0.0, 0.2])
    assert anchor_to_layer(split, ElectrolyteLayer(0, np.nan, np.nan, "none")) is split


def test_the_phantom_s_electrolyte_is_measured_on_its_far_face(tmp_path):
    """The layer's grey level is the planted electrolyte's, measured on the planted map's interior."""
    p = PhantomParams(shape_zyx=(40, 64, 64), n_particles=10, diameter_median_um=6, diameter_min_um=4,
                      diameter_max_um=8)
    ph = generate_phantom(p, seed=4)
    io.write_volume(tmp_path / "v.h5", ph.volume, (0.5,) * 3, "test")
    res = threshold_volume(tmp_path / "v.h5", tmp_path / "p.h5", ThresholdSettings(), progress=False)
    assert res.layer.found and res.layer.thickness >= 3
    void = ndimage.binary_erosion(ph.phases == VOID, border_value=1)
    assert res.layer.mean == pytest.approx(float(ph.volume[void].mean()), abs=0.01)
    with h5py.File(tmp_path / "p.h5", "r") as f:
        assert f["phases"].attrs["electrolyte_layer"].startswith(f"{res.layer.thickness} slices at the far face")


def test_the_figure_title_says_where_the_electrolyte_was_measured_and_what_was_not_resolved():
    from detachment.plots import phase_title

    title = phase_title("cellA", 5, "informed", ("nmc_high",), "not resolved", ElectrolyteLayer(7, 0.0, 0.02))
    assert "electrolyte measured on 7 slices at the far face" in title and "NOT RESOLVED: nmc_high" in title
    assert "far face" not in phase_title("cellA", 5, "informed", (), "histogram", ElectrolyteLayer(0, np.nan, np.nan))


def test_the_figure_title_gives_the_point_spread_and_shouts_past_the_bound():
    from detachment.plausibility import MAX_BOUNDS
    from detachment.plots import phase_title

    bound = MAX_BOUNDS["blur_sigma_vox"][0]
    sharp = phase_title("cellA", 5, "informed", blur_sigma=bound - 0.01)
    wide = phase_title("cellA", 5, "informed", blur_sigma=bound + 0.01)
    assert f"point spread σ {bound - 0.01:.2f} voxel on the particles' flat edges" in sharp and "WIDER" not in sharp
    assert f"POINT SPREAD σ {bound + 0.01:.2f} VOXEL, WIDER THAN {bound}" in wide
    assert "point spread" not in phase_title("cellA", 5, "informed", blur_sigma=float("nan")).lower()
    assert "σ 0.41 ± 0.02 voxel" in phase_title("cellA", 5, "informed", blur_sigma=0.412, blur_se=0.0178)
    assert "±" not in phase_title("cellA", 5, "informed", blur_sigma=0.412, blur_se=float("nan"))


def test_the_phase_figure_draws_the_edge_profiles_the_blur_was_read_on():
    """The last panel: the flat edges' mean profile as dots (its values the profile's sum over its count) with
    the fitted σ in the legend, and every edge's; without edges the figure keeps its three panels."""
    from scipy import ndimage

    from detachment.blur import PROFILE_X, EdgeProfiles
    from detachment.phases import NMC_LOW, VOID
    from detachment.plots import phase_figure

    phases = np.full((12, 48, 48), VOID, np.uint8)
    phases[:, 8:40, 8:40] = NMC_LOW
    grey = np.zeros(256, np.float32)
    grey[[VOID, NMC_LOW]] = 0.1, 0.75
    edges = EdgeProfiles()
    edges.add(phases, ndimage.gaussian_filter(grey[phases], 0.8))
    args = (np.zeros((48, 48)), phases[0], np.ones(4), np.linspace(0, 1, 5), [0.4], ["void", "nmc_low"])
    assert len(phase_figure(*args).axes) == 3
    ax = phase_figure(*args, edges=edges).axes[3]
    dots = ax.lines[0]
    np.testing.assert_allclose(dots.get_xdata(), PROFILE_X)
    np.testing.assert_allclose(dots.get_ydata(), edges.flat_total / edges.flat_count)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert f"flat edges, one phase beyond ({edges.flat_count}): σ {edges.psf_sigma():.2f}" in labels
    assert any(t.startswith(f"every edge along the grid ({edges.count})") for t in labels)
    assert ax.get_title().startswith("(d) point spread")


def test_overlapping_electrolyte_and_cbd_are_cut_where_as_many_voxels_are_misread_each_way():
    """Electrolyte at 70 % of the voxels and a textured CBD overlapping it: at the crossing weighted by the
    volumes about a fifth of the CBD reads as electrolyte and hardly any electrolyte as CBD, so a face count
    would be read too electrolyte-rich; the balanced threshold misreads equal shares of each, counted on
    samples drawn from the two classes (the oracle), and well-separated classes keep their threshold."""
    from scipy.stats import norm

    names = ("void", "cbd", "al", "nmc_low")
    means, sigmas = np.array([0.02, 0.117, 0.31, 0.51]), np.array([0.028, 0.042, 0.027, 0.036])
    x = np.linspace(-0.1, 0.7, 801)
    weighted = gmm_decision_thresholds(means, sigmas, np.array([0.62, 0.14, 0.08, 0.16]), x)
    got = balanced_void_cbd(names, means, sigmas, weighted)
    np.testing.assert_array_equal(got[1:], weighted[1:])
    rng = np.random.default_rng(0)
    void, cbd = rng.normal(means[0], sigmas[0], 200_000), rng.normal(means[1], sigmas[1], 200_000)
    assert np.mean(cbd < weighted[0]) > 0.15 > 5 * np.mean(void > weighted[0])
    assert np.mean(cbd < got[0]) == pytest.approx(np.mean(void > got[0]), abs=0.003)
    assert norm.cdf((got[0] - means[1]) / sigmas[1]) == pytest.approx(norm.sf((got[0] - means[0]) / sigmas[0]))
    apart = np.array([0.005, 0.285, 0.49, 0.72]), np.array([0.0235, 0.054, 0.023, 0.03])
    kept = gmm_decision_thresholds(*apart, np.array([0.62, 0.14, 0.08, 0.16]), x)
    np.testing.assert_array_equal(balanced_void_cbd(names, *apart, kept), kept)
    # no CBD class next to the electrolyte: nothing to balance
    np.testing.assert_array_equal(balanced_void_cbd(("void", "al", "nmc_low"), means[[0, 2, 3]], sigmas[[0, 2, 3]],
                                                    weighted[1:]), weighted[1:])
