"""Phase thresholding against known mixtures, scikit-image, and the streamed vs whole-volume result."""

from __future__ import annotations

from dataclasses import replace

import h5py
import numpy as np
import pytest
from scipy import ndimage
from skimage.filters import threshold_multiotsu

from detachment import io, phases
from detachment.threshold import ThresholdSettings, classify_slab, collector_top, threshold_volume

MEANS = {"void": 0.0, "cbd": 0.3, "al": 0.5, "nmc_low": 0.72, "nmc_high": 0.9}


def _blocks(rng, sigma=0.02, shape=(20, 40, 40)):
    """Five thick slabs of pure phases with Gaussian noise; returns (volume, truth codes)."""
    truth = np.zeros(shape, np.uint8)
    order = [phases.AL, phases.CBD, phases.NMC_LOW, phases.NMC_HIGH, phases.VOID]
    for k, code in enumerate(order):
        truth[k * 4:(k + 1) * 4] = code
    mean = np.array([MEANS[phases.PHASE_NAMES[c]] for c in range(5)])[truth]
    return (mean + rng.normal(0, sigma, shape)).astype(np.float32), truth


@pytest.mark.parametrize("method", ["gmm", "multiotsu"])
def test_thresholds_separate_known_mixture(method):
    vol, truth = _blocks(np.random.default_rng(0))
    model = phases.fit_phase_model(phases.histogram(vol, 256), method)
    if method == "gmm":  # Otsu is indifferent to where in an empty gap it cuts; the mixture is not
        np.testing.assert_allclose(model.thresholds, [0.15, 0.4, 0.61, 0.81], atol=0.02)
    assert (phases.classify(vol, model) == truth).mean() > 0.999


def test_multiotsu_equals_scikit_image_on_the_same_histogram():
    vol, _ = _blocks(np.random.default_rng(1), sigma=0.05)
    hist = phases.histogram(vol, 128)
    ours = phases.fit_phase_model(hist, "multiotsu").thresholds
    ref = threshold_multiotsu(hist=(hist.counts, hist.centers), classes=5)
    np.testing.assert_array_equal(ours, ref)


def test_gmm_peak_fit_recovers_means_and_widths_beside_a_dominant_phase():
    rng = np.random.default_rng(2)
    sizes = [600_000, 150_000, 60_000, 40_000, 10_000]  # electrolyte dominates, NMC-high is small
    sig = [0.0225, 0.027, 0.0225, 0.03, 0.03]
    mus = [0.0, 0.3, 0.5, 0.72, 0.9]
    x = np.concatenate([rng.normal(m, s, n) for m, s, n in zip(mus, sig, sizes)])
    means, sigmas, weights = phases.fit_peak_gaussians(phases.histogram(x, 256), 5)
    np.testing.assert_allclose(means, mus, atol=0.01)
    np.testing.assert_allclose(sigmas, sig, rtol=0.15)
    np.testing.assert_allclose(weights, np.array(sizes) / sum(sizes), rtol=0.2)


def test_fit_fwhm_of_gaussian_sample_is_2_3548_sigma():
    x = np.random.default_rng(4).normal(0.4, 0.03, 200_000)
    counts, edges = np.histogram(x, bins=200)
    mu, fwhm = phases.fit_fwhm(counts, edges)
    assert mu == pytest.approx(0.4, abs=1e-3)
    assert fwhm == pytest.approx(2.3548 * 0.03, rel=0.03)


def test_fit_fwhm_of_a_few_hundred_voxels_over_many_bins_stays_on_them():
    """A phase of 200-436 interior voxels (NMC high of a small volume) over 512 bins: the fit's centre stays
    within 0.03 of the sample's and its FWHM within a factor 2 of 2.3548 σ on every draw (unmerged, a
    Gaussian fit escapes on over half the draws of 200); a dense sample's histogram is not merged."""
    edges = np.linspace(-0.3, 1.3, 513)
    for n in (200, 436):
        for seed in range(40):
            x = np.random.default_rng(seed).normal(0.84, 0.045, n)
            mu, fwhm = phases.fit_fwhm(np.histogram(x, bins=edges)[0], edges)
            assert abs(mu - 0.84) < 0.03 and 0.5 < fwhm / (2.3548 * 0.045) < 2.0, (n, seed, mu, fwhm)
    dense = np.histogram(np.random.default_rng(1).normal(0.84, 0.045, 20_000), bins=edges)[0]
    merged, merged_edges = phases._merged_until_peak(dense.astype(float), edges)
    assert len(merged) == 512 and np.array_equal(merged_edges, edges)


def test_unknown_method_is_refused():
    with pytest.raises(ValueError, match="unknown thresholding method 'kmeans'"):
        phases.fit_phase_model(phases.histogram(np.arange(100.0), 16), "kmeans")
    with pytest.raises(ValueError, match="threshold.method"):
        ThresholdSettings(method="kmeans")
    with pytest.raises(ValueError, match="threshold.order"):
        ThresholdSettings(order=("void", "cbd", "al", "nmc_low", "void"))


def _model():
    mu = np.array([MEANS[n] for n in phases.DEFAULT_ORDER])
    return phases.PhaseModel(phases.DEFAULT_ORDER, (mu[1:] + mu[:-1]) / 2, mu, np.full(5, 0.02),
                             np.full(5, 0.2), "test")


def test_thin_al_shell_is_reassigned_and_collector_slab_kept():
    model = _model()
    ph = np.full((20, 30, 30), phases.CBD, np.uint8)
    ph[:4] = phases.AL  # collector
    ph[10, 5:25, 5:25] = phases.AL  # a one-voxel partial-volume sheet
    vol = np.where(ph == phases.AL, 0.47, 0.3).astype(np.float32)
    vol[10, 5:15, 5:25] = 0.55  # brighter half of the sheet: closer to NMC
    out = phases.remove_thin_collector(ph, vol, model, 3)
    assert (out[:4] == phases.AL).all()
    assert not (out[4:] == phases.AL).any()
    assert (out[10, 5:15, 5:25] == phases.NMC_LOW).all()
    assert (out[10, 15:25, 5:25] == phases.CBD).all()


def test_nmc_domain_refinement_restores_high_density_at_a_blurred_surface():
    model = _model()
    zz, yy, xx = np.mgrid[:24, :24, :24]
    ball = (zz - 12) ** 2 + (yy - 12) ** 2 + (xx - 12) ** 2 < 9**2
    truth = np.where(ball, phases.NMC_HIGH, phases.VOID).astype(np.uint8)
    vol = ndimage.gaussian_filter(np.where(ball, 0.9, 0.0).astype(np.float32), 0.5)
    single = phases.classify(vol, model)
    surface = ball & ~ndimage.binary_erosion(ball)
    assert (single[surface] == phases.NMC_HIGH).mean() < 0.5  # per-voxel thresholding misreads the surface
    refined = phases.refine_nmc_domains(vol, single, model, 0.7)
    solid = (single == phases.NMC_LOW) | (single == phases.NMC_HIGH)
    assert (refined[solid] == phases.NMC_HIGH).all()
    assert ((refined == truth) | ~solid).all()


def _model_with_sigmas(nmc_sigmas, noise=0.02):
    names = ("void", "cbd", "al") + ("nmc_low", "nmc_high")[: len(nmc_sigmas)]
    sigmas = [noise, 1.5 * noise, 1.1 * noise, *nmc_sigmas]
    n = len(names)
    return phases.PhaseModel(names, np.linspace(0.1, 0.8, n - 1), np.linspace(0, 0.9, n), np.asarray(sigmas),
                             np.full(n, 1 / n), "test")


@pytest.mark.parametrize("tau", [1.0, 1.9, 2.0, 2.25, 2.5, 2.9, 3.0, 5.0])  # both classes wider than the noise
@pytest.mark.parametrize("resolved", [True, False])
def test_auto_domain_sigma_grows_with_the_nmc_spread_beyond_the_noise(tau, resolved):
    noise = 0.02
    rms = np.sqrt(1 + tau**2) * noise  # NMC standard deviation with a spread tau noise-sigmas beyond the noise
    # two classes of different widths with that root mean square, or one (low and high not resolved)
    nmc = [np.sqrt(rms**2 - 0.5 * noise**2), np.sqrt(rms**2 + 0.5 * noise**2)] if resolved else [rms]
    got = phases.nmc_domain_sigma(_model_with_sigmas(nmc, noise), "auto")
    expected = 0.5 if tau <= 2 else 1.5 if tau >= 3 else 0.5 + (tau - 2)  # written out: 0.5 to 1.5 over tau 2 to 3
    assert got == pytest.approx(expected, abs=1e-9)


def test_domain_sigma_as_set_or_without_nmc():
    model = _model_with_sigmas([0.2])
    assert phases.nmc_domain_sigma(model, 0.7) == 0.7 and phases.nmc_domain_sigma(model, 0) == 0.0
    no_nmc = phases.PhaseModel(("void", "cbd", "al"), np.array([0.1, 0.4]), np.array([0.0, 0.3, 0.5]),
                               np.array([0.02, 0.03, 0.02]), np.full(3, 1 / 3), "test")
    assert phases.nmc_domain_sigma(no_nmc, "auto") == phases.AUTO_DOMAIN_SIGMA[0]


def test_streamed_thresholding_equals_whole_volume_classification(tmp_path):
    from detachment.phantom import PhantomParams, generate_phantom

    ph = generate_phantom(PhantomParams(shape_zyx=(24, 64, 64), n_particles=8, diameter_median_um=5,
                                        diameter_min_um=3.5, diameter_max_um=8), seed=5)
    path = tmp_path / "volume.h5"
    io.write_volume(path, ph.volume, (0.5, 0.5, 0.5), "test")
    s = ThresholdSettings(slab=5, edge_shells=False)  # the edge-shell pass: tests/test_threshold.py
    res = threshold_volume(path, tmp_path / "phases.h5", s, progress=False)
    streamed = io.read_dataset(tmp_path / "phases.h5", "phases")
    # NMC low / high decided on local means of the σ the run recorded (a split on the domain means reads it
    # from the histogram's model, before the split)
    with h5py.File(tmp_path / "phases.h5", "r") as f:
        sigma = float(f["phases"].attrs["nmc_domain_sigma_vox"])
    whole = classify_slab(ph.volume, res.model, replace(s, domain_sigma_vox=sigma),
                          collector_top(res.model, res.collector))
    np.testing.assert_array_equal(streamed, whole)
    # interior-voxel FWHMs summed over slabs equal those of the whole volume
    direct = phases.phase_fwhm(ph.volume, whole, bins=4 * s.bins)
    for row in res.fwhm.itertuples():
        assert row.interior_voxels == direct[row.phase][2]


def test_phase_file_carries_the_grey_levels_the_contact_rule_reads(tmp_path):
    import h5py

    from detachment.particles import gap_level
    from detachment.phantom import PhantomParams, generate_phantom

    ph = generate_phantom(PhantomParams(shape_zyx=(24, 48, 48), n_particles=4, diameter_median_um=5,
                                        diameter_min_um=3.5, diameter_max_um=7), seed=2)
    io.write_volume(tmp_path / "v.h5", ph.volume, (0.5, 0.5, 0.5), "test")
    res = threshold_volume(tmp_path / "v.h5", tmp_path / "p.h5", ThresholdSettings(), progress=False)
    with h5py.File(tmp_path / "p.h5", "r") as f:
        attrs = dict(f["phases"].attrs)
    np.testing.assert_allclose(attrs["means"], res.model.means)
    # the level sits between the void and CBD grey levels measured on the volume's own pure voxels
    void, cbd = ph.volume[ph.phases == phases.VOID], ph.volume[ph.phases == phases.CBD]
    assert np.median(void) < gap_level(attrs) < np.median(cbd)
    assert gap_level(attrs) == pytest.approx((np.median(void) + np.median(cbd)) / 2, abs=0.05)


def test_al_range_voxels_of_a_blurred_cbd_nmc_edge_go_to_their_own_side():
    """A CBD | NMC step (0.30 | 0.75) blurred by σ 1 voxel, Al (0.62) close to NMC: the first NMC voxel
    reads ~0.61, in Al's range. Reassigned at the half height both sides' voxels get their own class;
    Al's mean as the cut would have given the NMC edge to CBD."""
    from detachment.phases import AL, CBD, NMC_LOW, PhaseModel, al_edge_cut, classify, confine_collector

    truth = np.full((6, 8, 16), CBD, np.uint8)
    truth[:, :, 8:] = NMC_LOW
    means = {CBD: 0.30, NMC_LOW: 0.75}
    grey = ndimage.gaussian_filter(np.where(truth == CBD, means[CBD], means[NMC_LOW]), 1.0, mode="nearest")
    model = PhaseModel(("void", "cbd", "al", "nmc_low"), np.array([0.15, 0.46, 0.685]),
                       np.array([0.0, 0.30, 0.62, 0.75]), np.full(4, 0.02), np.full(4, 0.25), "informed")
    p = classify(grey, model)
    assert (p[:, :, 8] == AL).all() and 0.6 < grey[0, 0, 8] < 0.62  # the NMC edge is in Al's range
    assert al_edge_cut(model) == pytest.approx(0.525)
    np.testing.assert_array_equal(confine_collector(p, grey, model, top=0), truth)
    at_al_mean = np.where(p == AL, np.where(grey < 0.62, CBD, NMC_LOW), p)
    assert (at_al_mean[:, :, 8] == CBD).all()
