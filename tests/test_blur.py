"""The point-spread σ measured on edges, against blocks blurred by a known Gaussian."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from detachment.blur import SLICE_STEP, EdgeProfiles
from detachment.phases import AL, CBD, NMC_HIGH, NMC_LOW, VOID


@pytest.mark.parametrize("sigma", [0.5, 1.0, 1.5, 2.0])
def test_edge_profiles_measure_the_planted_blur(sigma):
    """Cubes of NMC (0.72) in electrolyte (0.0) and CBD (0.3), blurred by a Gaussian of σ with noise 0.02:
    the phase map is the sharp one, so every edge sits where it was planted; σ comes back within 0.1. At
    σ 0.5 the whole step lies between two voxels and σ is not identifiable; it must read below the
    plausibility bound (0.8)."""
    rng = np.random.default_rng(1)
    phases = np.full((24, 96, 96), VOID, np.uint8)
    phases[:, 48:] = CBD
    for z, y, x in rng.integers(0, 80, size=(25, 3)):
        phases[z % 16: z % 16 + 8, y: y + 14, x: x + 14] = NMC_LOW
    grey = np.zeros(256, np.float32)
    grey[[VOID, CBD, NMC_LOW]] = 0.0, 0.3, 0.72
    blurred = ndimage.gaussian_filter(grey[phases], sigma) + rng.normal(0, 0.02, phases.shape)
    profiles = EdgeProfiles()
    for z0 in range(0, 24, 8):  # slab by slab, as the thresholding adds them
        profiles.add(phases[z0:z0 + 8], blurred[z0:z0 + 8], z0)
    assert profiles.count > 1000
    if sigma < 1:
        assert profiles.sigma() < 0.8
    else:
        assert profiles.sigma() == pytest.approx(sigma, abs=0.1)


def test_too_few_edges_give_no_estimate():
    profiles = EdgeProfiles()
    profiles.add(np.full((4, 20, 20), VOID, np.uint8), np.zeros((4, 20, 20), np.float32))
    assert profiles.count == 0 and np.isnan(profiles.sigma())


def _edge_profiles_by_loops(phases: np.ndarray, grey: np.ndarray, z0: int, run: int):
    """The edges and profiles of EdgeProfiles.add, by plain loops over every position of every line."""
    solid = np.isin(phases, (NMC_LOW, NMC_HIGH))
    background = np.isin(phases, (VOID, CBD))
    total, count = np.zeros(2 * run), 0
    keep = [i for i in range(len(phases)) if (z0 + i) % SLICE_STEP == 0]
    for axis in (1, 2):
        s, b, g = (np.moveaxis(a[keep], axis, -1) for a in (solid, background, grey))
        for first, second, flip in ((s, b, False), (b, s, True)):
            for z, o, i in np.ndindex(s.shape[0], s.shape[1], s.shape[2] - 2 * run + 1):
                if first[z, o, i:i + run].all() and second[z, o, i + run:i + 2 * run].all():
                    prof = g[z, o, i:i + 2 * run].astype(np.float64)
                    total += prof[::-1] if flip else prof
                    count += 1
    return total, count


def test_edge_profiles_equal_plain_loops_and_do_not_depend_on_the_slabs():
    """Random phase maps with runs, every slice kept or one in SLICE_STEP; the same volume added in
    slabs of other sizes, in any order, gives the same sums bit for bit."""
    from detachment import blur

    rng = np.random.default_rng(5)
    phases = rng.choice(np.array([VOID, CBD, NMC_LOW, NMC_HIGH, AL], np.uint8), size=(9, 30, 34),
                        p=[0.3, 0.2, 0.3, 0.15, 0.05])
    phases = np.repeat(phases, 3, axis=2)[:, :, :40]  # runs along x
    phases[:, 5:20] = phases[:, 5:6]  # runs along y
    grey = rng.random(phases.shape).astype(np.float32)
    for z0 in (0, 3):
        profiles = EdgeProfiles()
        profiles.add(phases, grey, z0)
        total, count = _edge_profiles_by_loops(phases, grey, z0, blur.RUN)
        assert profiles.count == count > 0
        np.testing.assert_allclose(profiles.total, total, rtol=1e-12)
    whole = EdgeProfiles()
    whole.add(phases, grey)
    for cuts in ([0, 2, 9], [0, 5, 6, 9]):
        merged = EdgeProfiles()
        for a, b in reversed(list(zip(cuts[:-1], cuts[1:]))):
            part = EdgeProfiles()
            part.add(phases[a:b], grey[a:b], a)
            merged.merge(part)
        assert merged.count == whole.count
        np.testing.assert_array_equal(merged.total, whole.total)
