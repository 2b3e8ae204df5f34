"""Halos at the particles' edges: the electrolyte beside them darker than the open electrolyte.

A blur whose point-spread function is nowhere negative (the Gaussian the forward model, the edge rules and the
contact reading assume) only lifts the electrolyte beside a brighter particle towards the particle's level.
Phase-contrast imaging does otherwise: a Zernike phase ring's halo, or the fringes a propagation-based
(holotomographic) reconstruction leaves where one δ/β ratio is assumed for phases that differ in it, and a
sharpening filter's ringing, all undershoot on an edge's dark side. There the electrolyte a few voxels from a
particle reads darker than the open electrolyte, the measured blur comes out narrower than the optics', and a
CBD coat under the dark rim reads towards the electrolyte: detachment reads high with no other check failing.

Measured on the phase map and the grey levels it was read from, streamed by slabs: for each 6-connected
distance ``k`` = 1 .. :data:`NEAR_VOX` from the map's NMC, the median over the volume of the electrolyte's grey
level at that distance less the median of the open electrolyte of its own slice (at least :data:`FAR_VOX` steps
from any other phase; slices without enough of it are left out, so that a slow shading along z cancels), over
the NMC - electrolyte contrast. :attr:`EdgeHalo.undershoot` is the deepest of these below zero.
Axes (z, y, x). Entry points: :func:`measure`, :func:`measure_files`, :func:`measure_map`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .phases import NMC_HIGH, NMC_LOW, VOID

#: Distances from NMC (6-connected steps) at which the electrolyte is read.
NEAR_VOX = 4
#: 6-connected steps from any other phase beyond which the electrolyte is open (its level the reference).
FAR_VOX = 6
#: Slices read at a time (with their context of ``max(NEAR_VOX, FAR_VOX) + 1`` slices each side).
SLAB_VOX = 16
#: Fewest electrolyte voxels a distance needs, over the volume, to be read.
MIN_VOXELS = 200
#: Fewest open electrolyte voxels a slice needs to be a reference for its own near electrolyte.
MIN_SLICE_VOXELS = 50
#: Grey-level bins of the medians, per unit of the NMC - electrolyte contrast.
BINS_PER_CONTRAST = 2000


@dataclass(frozen=True)
class EdgeHalo:
    """The electrolyte's level beside the particles against the open electrolyte's.

    Attributes
    ----------
    profile : numpy.ndarray
        (:data:`NEAR_VOX`,) float64: at 1 .. NEAR_VOX steps from NMC, the median of the electrolyte's grey
        level less its slice's open electrolyte's, over the NMC - electrolyte contrast; NaN with fewer than
        :data:`MIN_VOXELS` voxels.
    voxels : numpy.ndarray
        (:data:`NEAR_VOX`,) int64: electrolyte voxels read at each distance.
    contrast : float
        NMC's grey level less the electrolyte's (given), grey level.
    """

    profile: np.ndarray
    voxels: np.ndarray
    contrast: float

    @property
    def undershoot(self) -> float:
        """How far the electrolyte beside the particles reads below the open electrolyte, over the contrast
        (0 where it reads nowhere below it; NaN where no distance was read)."""
        good = np.isfinite(self.profile)
        if not good.any():
            return float("nan")
        return float(max(0.0, -np.min(self.profile[good])))


def _slab_distances(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """6-connected steps (capped at ``max(NEAR_VOX, FAR_VOX) + 1``) of every voxel of ``codes`` from NMC and
    from any code other than the electrolyte."""
    cap = max(NEAR_VOX, FAR_VOX) + 1
    nmc = (codes == NMC_LOW) | (codes == NMC_HIGH)
    from_nmc = ndimage.distance_transform_cdt(~nmc, metric="taxicab") if nmc.any() else np.full(codes.shape, cap)
    other = codes != VOID
    from_other = ndimage.distance_transform_cdt(~other, metric="taxicab") if other.any() else np.full(codes.shape, cap)
    return np.minimum(from_nmc, cap), np.minimum(from_other, cap)


def _median(counts: np.ndarray, edges: np.ndarray) -> float:
    """Median of a histogram (its bin's centre)."""
    c = np.cumsum(counts)
    i = int(np.searchsorted(c, 0.5 * c[-1]))
    return float(0.5 * (edges[i] + edges[i + 1]))


def measure(codes_ds, grey_ds, electrolyte: float, nmc: float) -> EdgeHalo:
    """:class:`EdgeHalo` of a phase map and its grey levels, read slab by slab.

    Parameters
    ----------
    codes_ds : array-like
        (z, y, x) uint8 phase codes (an h5py dataset or an array; read a slab at a time).
    grey_ds : array-like
        (z, y, x) grey levels the map was read from (flattened where it was: :func:`detachment.shading.flat_view`).
    electrolyte, nmc : float
        The electrolyte's and NMC's grey levels (``phase_fwhm.csv`` centres), whose difference scales the profile.

    Returns
    -------
    EdgeHalo
    """
    contrast = float(nmc - electrolyte)
    if not (np.isfinite(contrast) and contrast > 0):
        return EdgeHalo(np.full(NEAR_VOX, np.nan), np.zeros(NEAR_VOX, np.int64), contrast)
    # differences from the slice's open electrolyte; beyond half the contrast a voxel is misread, not lifted
    edges = np.linspace(-0.5 * contrast, 0.5 * contrast, BINS_PER_CONTRAST + 1)
    counts = np.zeros((NEAR_VOX, BINS_PER_CONTRAST), np.int64)
    context = max(NEAR_VOX, FAR_VOX) + 1
    n = codes_ds.shape[0]
    for z0 in range(0, n, SLAB_VOX):
        z1 = min(n, z0 + SLAB_VOX)
        lo, hi = max(0, z0 - context), min(n, z1 + context)
        codes = np.asarray(codes_ds[lo:hi])
        grey = np.asarray(grey_ds[z0:z1], np.float32)
        d_nmc, d_other = (d[z0 - lo: z1 - lo] for d in _slab_distances(codes))
        void = codes[z0 - lo: z1 - lo] == VOID
        for z in range(z1 - z0):
            open_grey = grey[z][void[z] & (d_other[z] >= FAR_VOX)]
            if open_grey.size < MIN_SLICE_VOXELS:
                continue  # a slice's own reference, so that a shading along z cancels
            reference = float(np.median(open_grey))
            for k in range(1, NEAR_VOX + 1):
                counts[k - 1] += np.histogram(grey[z][void[z] & (d_nmc[z] == k)] - reference, edges)[0]
    voxels = counts.sum(axis=1)
    profile = np.array([_median(c, edges) / contrast if v >= MIN_VOXELS else np.nan for c, v in zip(counts, voxels)])
    return EdgeHalo(profile, voxels, contrast)


def measure_files(phases_path, volume_path, electrolyte: float, nmc: float) -> EdgeHalo:
    """:func:`measure` of ``phases.h5`` and the volume it was read from, through the shading field the map was
    read less (:func:`detachment.shading.flat_view`)."""
    from .shading import open_flat

    with open_flat(phases_path, volume_path) as (codes, grey):
        return measure(codes, grey, electrolyte, nmc)


def measure_map(phases_path, volume_path, fwhm) -> EdgeHalo:
    """:func:`measure_files` with the electrolyte's and NMC's levels from the thresholding's per-phase table
    (``phase_fwhm.csv``: ``phase``, ``centre``; NMC's level is low-density NMC's, which also carries high density
    where the two are not resolved); a missing level gives NaN (nothing measured)."""
    centre = dict(zip(fwhm["phase"], fwhm["centre"]))
    electrolyte, nmc = (float(centre.get(name, np.nan)) for name in ("void", "nmc_low"))
    return measure_files(phases_path, volume_path, electrolyte, nmc)
