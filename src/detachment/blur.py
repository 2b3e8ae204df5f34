"""The point-spread function of a reconstruction, measured on the particles' own edges.

A blurred step is an error function whatever the contrast; averaged over many straight edges between
NMC and the background (electrolyte or CBD) of the phase map, the grey-level profile across the edge
gives the blur σ (voxels). It decides whether gaps of one to three voxels can be seen at all
(:mod:`detachment.plausibility`). Axes (z, y, x); edges are taken along y and x, within slices.
Main entry point: :class:`EdgeProfiles`.
"""

from __future__ import annotations

import warnings

import numpy as np

from . import slab_kernels
from .phases import CBD, NMC_HIGH, NMC_LOW, VOID

#: Voxels of the same class required on each side of an edge (the profile is 2 x this long).
RUN = 3
#: Profiles kept per slab and axis (an even subsample beyond), enough for a stable mean.
MAX_PER_SLAB = 20_000
#: Every this many slices (by volume z) is read: the mean profile needs thousands of edges, not all.
SLICE_STEP = 4


class EdgeProfiles:
    """Mean grey-level profile across straight NMC / background edges, accumulated slab by slab.

    Attributes
    ----------
    total : numpy.ndarray
        (2 RUN,) float64 sum of the profiles, NMC side first (positions -RUN + 0.5 .. RUN - 0.5 voxels
        from the edge).
    count : int
        Profiles summed.
    """

    def __init__(self):
        self.total = np.zeros(2 * RUN)
        self.count = 0

    def add(self, phases: np.ndarray, grey: np.ndarray, z0: int = 0) -> None:
        """Add the edges of one slab (of its slices whose volume z is a multiple of :data:`SLICE_STEP`).

        Parameters
        ----------
        phases : numpy.ndarray
            (z, y, x) uint8 phase codes.
        grey : numpy.ndarray
            (z, y, x) grey levels, same shape.
        z0 : int, default 0
            Volume z of the slab's first slice.
        """
        keep = np.nonzero((np.arange(z0, z0 + len(phases)) % SLICE_STEP) == 0)[0]
        if not keep.size:
            return
        self.count += slab_kernels.edge_profiles(
            np.ascontiguousarray(phases[keep]), np.ascontiguousarray(grey[keep], np.float32),
            (NMC_LOW, NMC_HIGH), (VOID, CBD), RUN, MAX_PER_SLAB, self.total)

    def sigma(self, min_profiles: int = 200) -> float:
        """The blur σ, voxels: an error function fitted to the mean profile; NaN with too few edges.

        Parameters
        ----------
        min_profiles : int, default 200
            Fewest profiles to fit.

        Returns
        -------
        float
            σ of the Gaussian point-spread function (voxels, in-plane), or NaN.
        """
        from scipy.optimize import OptimizeWarning, curve_fit
        from scipy.special import erf

        if self.count < min_profiles:
            return float("nan")
        mean = self.total / self.count
        x = np.arange(2 * RUN) - RUN + 0.5

        def step(x, x0, s, high, low):
            return high + (low - high) * 0.5 * (1 + erf((x - x0) / (np.sqrt(2) * s)))

        try:
            with warnings.catch_warnings():  # a step within one voxel leaves σ's variance undefined
                warnings.simplefilter("ignore", OptimizeWarning)
                p, _ = curve_fit(step, x, mean, p0=(0.0, 1.0, mean[0], mean[-1]), maxfev=5000)
        except (RuntimeError, ValueError):
            return float("nan")
        return float(abs(p[1]))

