"""The point-spread σ measured on edges, against blocks blurred by a known Gaussian."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from detachment.blur import EdgeProfiles
from detachment.phases import CBD, NMC_LOW, VOID


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
