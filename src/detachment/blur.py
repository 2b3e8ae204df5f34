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
#: Every this many slices (by volume z) is read: the mean profile needs thousands of edges, not all.
SLICE_STEP = 4


class EdgeProfiles:
    """Mean grey-level profile across straight NMC / background edges, accumulated slice by slice.

    The profiles of each slice are summed apart and the slices added in z order, so the result does
    not depend on how the volume was cut into slabs or in which order they came.

    Attributes
    ----------
    slices : dict
        Volume z -> ((2 RUN,) float64 sum of the slice's profiles, int number of profiles).
    """

    def __init__(self):
        self.slices: dict[int, tuple[np.ndarray, int]] = {}

    @property
    def total(self) -> np.ndarray:
        """(2 RUN,) float64 sum of the profiles, NMC side first (positions -RUN + 0.5 .. RUN - 0.5 voxels
        from the edge), the slices added in z order."""
        out = np.zeros(2 * RUN)
        for z in sorted(self.slices):
            out += self.slices[z][0]
        return out

    @property
    def count(self) -> int:
        """Profiles summed."""
        return sum(n for _, n in self.slices.values())

    def add(self, phases: np.ndarray, grey: np.ndarray, z0: int = 0) -> None:
        """Add the edges of one slab (of its slices whose volume z is a multiple of :data:`SLICE_STEP`).

        Every edge of those slices is used (:func:`detachment.slab_kernels.edge_profiles`).

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
        totals, counts = np.zeros((keep.size, 2 * RUN)), np.zeros(keep.size, np.int64)
        slab_kernels.edge_profiles(np.ascontiguousarray(phases[keep]), np.ascontiguousarray(grey[keep], np.float32),
                                   (NMC_LOW, NMC_HIGH), (VOID, CBD), RUN, totals, counts)
        for i, z in enumerate(keep):
            self.slices[z0 + int(z)] = (totals[i], int(counts[i]))

    def merge(self, other: EdgeProfiles) -> None:
        """Take the slices of ``other`` (slabs added elsewhere, e.g. in another thread)."""
        self.slices.update(other.slices)

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

