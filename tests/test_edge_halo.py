"""The edge-halo measure against a planar edge's analytic profile, and the phantom's halo found by it."""

import math

import numpy as np
import pytest
from scipy import ndimage

from detachment import edge_halo, plausibility
from detachment.phantom import PhantomParams, generate_phantom
from detachment.phases import NMC_LOW, VOID

NMC_LEVEL, VOID_LEVEL = 0.72, 0.0


def _planar(sigma: float, halo: float = 0.0, halo_sigma: float = 2.0, drift: float = 0.0, noise: float = 0.01,
            nmc_depth: int | None = None, seed: int = 0):
    """NMC for x < 32, electrolyte beyond (in slices z < ``nmc_depth`` only, electrolyte everywhere above),
    blurred by σ, with the phantom's halo, a linear drift along z and white noise."""
    shape = (64, 48, 96)
    codes = np.full(shape, VOID, np.uint8)
    codes[: nmc_depth or shape[0], :, :32] = NMC_LOW
    levels = np.where(codes == NMC_LOW, NMC_LEVEL, VOID_LEVEL).astype(np.float32)
    grey = ndimage.gaussian_filter(levels, sigma, mode="nearest")
    if halo:
        grey += halo * (grey - ndimage.gaussian_filter(grey, halo_sigma, mode="nearest"))
    grey += drift * np.linspace(0, 1, shape[0], dtype=np.float32)[:, None, None]
    grey += noise * np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    return codes, grey


def _kernel(sigma: float) -> np.ndarray:
    """The sampled, normalised Gaussian a voxel grid blurs with (cut at 4 σ)."""
    r = int(4 * sigma + 0.5)
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    return k / k.sum()


def _expected(sigma: float, halo: float = 0.0, halo_sigma: float = 2.0) -> np.ndarray:
    """A planar step's level over its contrast at voxels 1, 2, ... beyond the edge, written out in one
    dimension with numpy's convolution: the step blurred, plus the halo's difference with the blurred step
    blurred again by the halo's Gaussian."""
    step = np.r_[np.ones(200), np.zeros(200)]  # the last NMC voxel at 199
    blurred = np.convolve(np.pad(step, 50, mode="edge"), _kernel(sigma), mode="same")[50:-50]
    again = np.convolve(np.pad(blurred, 50, mode="edge"), _kernel(halo_sigma), mode="same")[50:-50]
    return (blurred + halo * (blurred - again))[200:]


@pytest.mark.parametrize("sigma", [0.5, 1.0, 1.5])
def test_blur_alone_never_reads_below_the_open_electrolyte(sigma):
    codes, grey = _planar(sigma)
    h = edge_halo.measure(codes, grey, VOID_LEVEL, NMC_LEVEL)
    expected = _expected(sigma)[: edge_halo.NEAR_VOX]
    assert np.allclose(h.profile, expected, atol=0.005), (h.profile, expected)
    assert h.undershoot < 0.005  # the medians of a few thousand noisy voxels


@pytest.mark.parametrize("halo", [0.3, 0.5, 1.0])
def test_a_halo_reads_as_the_analytic_undershoot(halo):
    codes, grey = _planar(0.5, halo=halo)
    h = edge_halo.measure(codes, grey, VOID_LEVEL, NMC_LEVEL)
    line = _expected(0.5, halo)
    # the open electrolyte (6 voxels on, to the volume's far side) still holds the halo's far tail: the
    # reference sits that much low
    tail = np.median(line[edge_halo.FAR_VOX - 1: 64])
    expected = line[: edge_halo.NEAR_VOX] - tail
    assert np.allclose(h.profile, expected, atol=0.005), (h.profile, expected)
    assert h.undershoot == pytest.approx(-expected.min(), abs=0.005)
    assert h.undershoot > 0.05


def test_a_slow_shading_along_z_is_not_a_halo():
    # the particles fill the lower half only, so the electrolyte beside them lies where the drift is low and
    # most of the open electrolyte where it is high: read against each slice's own, the drift cancels
    codes, grey = _planar(0.5, drift=0.2, nmc_depth=32)
    h = edge_halo.measure(codes, grey, VOID_LEVEL, NMC_LEVEL)
    assert h.undershoot < 0.005  # the medians of a few thousand noisy voxels
    whole = np.median(grey[(codes == VOID) & (np.arange(64)[:, None, None] >= 32)]) - np.median(
        grey[:32, :, 33:36])
    assert whole > 0.05 * NMC_LEVEL  # read against the whole volume's open electrolyte, it would be a halo


def test_no_contrast_or_no_electrolyte_reads_nothing():
    codes, grey = _planar(0.5)
    assert math.isnan(edge_halo.measure(codes, grey, 0.5, 0.5).undershoot)
    only_nmc = np.full(codes.shape, NMC_LOW, np.uint8)
    assert math.isnan(edge_halo.measure(only_nmc, grey, VOID_LEVEL, NMC_LEVEL).undershoot)


def test_the_phantoms_halo_is_found_on_its_own_truth():
    base = dict(shape_zyx=(40, 96, 96), n_particles=14)
    plain = generate_phantom(PhantomParams(**base), seed=3)
    halo = generate_phantom(PhantomParams(**base, halo_amplitude=0.5), seed=3)
    assert np.array_equal(plain.phases, halo.phases)
    read = {name: edge_halo.measure(p.phases, p.volume, 0.0, 0.72).undershoot for name, p in
            (("plain", plain), ("halo", halo))}
    assert read["plain"] < 0.01
    assert read["halo"] > 0.05


def test_phantom_refuses_a_bad_halo():
    with pytest.raises(ValueError, match="halo_amplitude"):
        PhantomParams(halo_amplitude=-0.1).validate()
    with pytest.raises(ValueError, match="halo_sigma_vox"):
        PhantomParams(halo_amplitude=0.5, halo_sigma_vox=0).validate()


def test_an_undershoot_beyond_the_bound_stops_the_map_with_its_reason():
    counts = plausibility.PhaseCounts(np.array([[0, 0, 0, 0, 100]] * 4 + [[60, 20, 20, 0, 0]] * 20))
    bound = plausibility.EDGE_UNDERSHOOT_BOUND
    ok = plausibility.check_phase_map(counts, edge_undershoot=bound - 0.01).set_index("check")
    assert ok.loc["edge_undershoot", "passed"]
    assert "edge_undershoot" not in set(plausibility.check_phase_map(counts, edge_undershoot=float("nan")).check)
    bad = plausibility.check_phase_map(counts, edge_undershoot=bound + 0.05)
    with pytest.raises(plausibility.ImplausiblePhaseMap, match=r"sample 'cell_x'.*edge_undershoot.*halo"):
        plausibility.enforce(bad, "cell_x", "stop")


def test_the_phase_figure_names_an_overshoot_beyond_the_bound_only():
    from detachment.plots import phase_title

    bound = plausibility.EDGE_UNDERSHOOT_BOUND
    assert "EDGES OVERSHOOT" in phase_title("s", 0, "informed", edge_undershoot=bound + 0.04)
    assert "0.09 of the NMC" in phase_title("s", 0, "informed", edge_undershoot=0.093)
    assert "OVERSHOOT" not in phase_title("s", 0, "informed", edge_undershoot=bound - 0.01)
    assert "OVERSHOOT" not in phase_title("s", 0, "informed", edge_undershoot=float("nan"))
