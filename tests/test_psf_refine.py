"""The forward-model refinement of the phase map (detachment.psf_refine) against planted truth."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from detachment import psf_refine
from detachment.phases import AL, CBD, NMC_HIGH, NMC_LOW, VOID

LEVELS = {"void": 0.0, "cbd": 0.3, "nmc_low": 0.7, "nmc_high": 0.9, "al": 0.5}
MU = np.array([LEVELS[n] for n in ("void", "cbd", "nmc_low", "nmc_high", "al")], np.float32)
NOISE = 0.02


def _ball(shape, centre, radius):
    z, y, x = np.indices(shape)
    return (z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2 <= radius ** 2


def _scene(shape=(24, 40, 40)):
    """Electrolyte with a CBD ball, an NMC ball half high, half low density inside, a CBD slab and an Al
    collector at z < 3."""
    truth = np.zeros(shape, np.uint8)
    truth[_ball(shape, (12, 12, 12), 6)] = CBD
    particle = _ball(shape, (12, 27, 26), 7)
    truth[particle] = NMC_LOW
    truth[particle & (np.indices(shape)[2] >= 26)] = NMC_HIGH
    truth[14:18, 30:, :10] = CBD
    truth[:3] = AL
    return truth


def _image(truth, sigma, seed=0):
    rng = np.random.default_rng(seed)
    blurred = ndimage.gaussian_filter(MU[truth], sigma, mode="reflect")
    return (blurred + rng.normal(0, NOISE, truth.shape)).astype(np.float32)


def _thresholded(grey):
    """Per-voxel decision at the midpoints between the sorted levels (what a threshold map reads)."""
    order = np.argsort(MU)
    cuts = (MU[order][1:] + MU[order][:-1]) / 2
    return order[np.digitize(grey, cuts)].astype(np.uint8)


def _brute_energy(codes, grey, sigma, beta):
    """``E`` written out: squared residual of the blurred levels over 2 s², plus β per unlike pair."""
    pred = ndimage.gaussian_filter(MU[codes].astype(np.float64), sigma, mode="reflect")
    pairs = sum(int((np.take(codes, range(1, n), axis=a) != np.take(codes, range(n - 1), axis=a)).sum())
                for a, n in enumerate(codes.shape))
    return ((grey - pred) ** 2).sum() / (2 * NOISE ** 2) + beta * pairs


@pytest.mark.parametrize("sigma", [0.7, 1.0, 1.5])
def test_refinement_recovers_the_planted_map_a_threshold_misreads(sigma):
    truth = _scene()
    grey = _image(truth, sigma)
    start = _thresholded(grey)
    out, moved = psf_refine.refine_codes(start, grey, LEVELS, sigma, NOISE, psf_refine.RefineSettings())
    wrong_before, wrong_after = (start != truth).sum(), (out != truth).sum()
    assert moved == (out != start).sum() > 0
    assert wrong_after <= 0.5 * wrong_before, (wrong_before, wrong_after)
    # the electrolyte a blurred particle lifts into CBD's levels goes back
    beside = ndimage.binary_dilation(truth >= NMC_LOW, iterations=1) & (truth == VOID)
    assert (out[beside] == CBD).mean() < (start[beside] == CBD).mean()


@pytest.mark.parametrize("beta", [0.0, 3.0])
def test_energy_never_rises_with_more_sweeps(beta):
    truth = _scene((16, 24, 24))
    grey = _image(truth, 1.0, seed=3)
    codes = _thresholded(grey)
    energies = []
    for sweeps in range(4):
        out, _ = psf_refine.refine_codes(codes, grey, LEVELS, 1.0, NOISE, psf_refine.RefineSettings(beta, sweeps))
        energies.append(_brute_energy(out, grey, 1.0, beta))
        assert psf_refine.energy(out, grey, np.pad(MU, (0, 251)), 1.0, NOISE, beta) == pytest.approx(energies[-1],
                                                                                                    rel=1e-5)
    assert np.all(np.diff(energies) <= 1e-6 * energies[0]) and energies[-1] < energies[0]


def test_densities_are_exchanged_on_the_particle_surface_only():
    truth = _scene()
    grey = _image(truth, 1.2, seed=1)
    start = truth.copy()
    inner = ndimage.binary_erosion(truth >= NMC_LOW, iterations=2)
    start[inner] = NMC_LOW  # a wrong density inside: not this step's to mend
    out, _ = psf_refine.refine_codes(start, grey, LEVELS, 1.2, NOISE, psf_refine.RefineSettings())
    assert np.array_equal(out[inner], start[inner])


def test_no_al_above_the_collector_top_and_none_where_no_neighbour_has_it():
    truth = _scene()
    grey = _image(truth, 1.0, seed=2)
    start = _thresholded(grey)
    start[start == AL] = VOID  # no Al at all: nothing may become Al
    out, _ = psf_refine.refine_codes(start, grey, LEVELS, 1.0, NOISE, psf_refine.RefineSettings())
    assert not (out == AL).any()
    start = truth.copy()
    start[2] = VOID  # the collector's last slice: above the top, it stays off Al
    out, _ = psf_refine.refine_codes(start, grey, LEVELS, 1.0, NOISE, psf_refine.RefineSettings(), al_below=2)
    assert not (out[2:] == AL).any()
    out, _ = psf_refine.refine_codes(start, grey, LEVELS, 1.0, NOISE, psf_refine.RefineSettings(), al_below=3)
    assert (out[2] == AL).mean() > 0.9


@pytest.mark.parametrize("sigma, noise", [(float("nan"), NOISE), (0.0, NOISE), (1.0, float("nan")), (1.0, 0.0)])
def test_unknown_blur_or_noise_leaves_the_map(sigma, noise):
    truth = _scene((8, 16, 16))
    grey = _image(truth, 1.0)
    out, moved = psf_refine.refine_codes(_thresholded(grey), grey, LEVELS, sigma, noise, psf_refine.RefineSettings())
    assert moved == 0 and np.array_equal(out, _thresholded(grey))


def test_kernel_energy_is_the_discrete_kernel_squared_sum():
    # the continuous Gaussian's ∫G² = (4π σ²)^(-3/2), which the sampled kernel approaches for σ >= 1
    assert psf_refine.kernel_energy(2.0) == pytest.approx((4 * np.pi * 4.0) ** -1.5, rel=1e-3)


@pytest.mark.parametrize("kw, field", [(dict(beta=-1.0), "psf_refine_beta"), (dict(beta=float("nan")), "psf_refine_beta"),
                                       (dict(sweeps=1.5), "psf_refine_sweeps"), (dict(sweeps=-1), "psf_refine_sweeps")])
def test_bad_settings_are_refused_naming_the_field(kw, field):
    with pytest.raises(ValueError, match=field):
        psf_refine.RefineSettings(**kw)
