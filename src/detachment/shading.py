"""Slow shading of the grey levels across a volume, measured on the electrolyte the phase map finds.

Reconstructions carry low-frequency grey-level variations: cupping and the truncation of region-of-interest
scans, flat-field and beam drift. The phase model places one threshold per pair of phases for the whole
volume, so where the electrolyte's own level wanders by a fair share of the step to CBD, electrolyte reads as
CBD in the bright parts (gaps read attached) and CBD as electrolyte in the dark ones, while every histogram
check still passes. Here the wander is measured: the median grey level of the electrolyte's interior voxels
(two 6-connected steps from any other code, so that the blur of the boundaries does not count) in each block
of :data:`BLOCK_VOX` voxels, and the spread of those block levels (the 98th less the 2nd percentile) in units
of the CBD - electrolyte contrast. Only the electrolyte is read: its voxels are the ones a phase map codes
right even where blur makes it misread CBD's pores, so the measure does not grow with the map's errors.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .phases import VOID

#: Edge of the blocks (voxels) whose electrolyte level is read.
BLOCK_VOX = 16
#: 6-connected steps from any other code a voxel of electrolyte must lie to be read.
INTERIOR_DEPTH_VOX = 2
#: Fewest interior electrolyte voxels a block needs for its level to be read.
MIN_BLOCK_VOXELS = 200
#: Fewest blocks with a level for the shading to be measured at all.
MIN_BLOCKS = 20
#: Percentiles of the block levels whose difference is the shading.
PERCENTILES = (2.0, 98.0)


@dataclass(frozen=True)
class Shading:
    """How far the electrolyte's grey level wanders across a volume.

    Attributes
    ----------
    spread : float
        98th less 2nd percentile of the blocks' electrolyte levels, grey level; NaN with fewer than
        :data:`MIN_BLOCKS` blocks.
    contrast : float
        CBD's grey level less the electrolyte's (given; :func:`contrast_from_fwhm`), grey level.
    blocks : int
        Blocks whose electrolyte level was read.
    """

    spread: float
    contrast: float
    blocks: int

    @property
    def ratio(self) -> float:
        """``spread`` over ``contrast``; NaN where either is not a number or the contrast is not > 0."""
        if not (np.isfinite(self.spread) and np.isfinite(self.contrast) and self.contrast > 0):
            return float("nan")
        return float(self.spread / self.contrast)


def block_levels(codes: np.ndarray, grey: np.ndarray, block: int = BLOCK_VOX) -> np.ndarray:
    """Median grey level of the electrolyte's interior voxels in each block of ``block`` voxels of a
    (z, y, x) map and its grey levels, for the blocks with at least :data:`MIN_BLOCK_VOXELS` such voxels;
    voxels at the array's faces are not interior (the faces count as another code)."""
    inside = ndimage.binary_erosion(codes == VOID, ndimage.generate_binary_structure(3, 1),
                                    iterations=INTERIOR_DEPTH_VOX)
    return _levels_of_blocks(inside, grey, block, 0, codes.shape[0])


def _levels_of_blocks(inside: np.ndarray, grey: np.ndarray, block: int, z0: int, z1: int) -> np.ndarray:
    """Block medians of ``grey`` over ``inside`` for the blocks whose slices are ``z0``-``z1`` of the arrays."""
    out = []
    for z in range(z0, z1, block):
        for y in range(0, inside.shape[1], block):
            for x in range(0, inside.shape[2], block):
                sl = (slice(z, min(z + block, z1)), slice(y, y + block), slice(x, x + block))
                m = inside[sl]
                if int(m.sum()) >= MIN_BLOCK_VOXELS:
                    out.append(float(np.median(grey[sl][m])))
    return np.asarray(out, np.float64)


def measure(codes_ds, grey_ds, contrast: float, block: int = BLOCK_VOX) -> Shading:
    """:class:`Shading` of a volume read block row by block row from two (z, y, x) datasets (h5py or arrays):
    the phase codes and the grey levels they were read from; ``contrast``: CBD's level less the
    electrolyte's. The same block levels as :func:`block_levels` of the whole arrays."""
    depth, halo = codes_ds.shape[0], INTERIOR_DEPTH_VOX
    ball = ndimage.generate_binary_structure(3, 1)
    levels = []
    for z0 in range(0, depth, block):
        z1 = min(z0 + block, depth)
        a, b = max(0, z0 - halo), min(depth, z1 + halo)
        void = np.asarray(codes_ds[a:b]) == VOID
        # beyond the volume's first and last slices nothing is electrolyte, as at the whole array's faces
        void = np.pad(void, ((halo - (z0 - a), halo - (b - z1)), (0, 0), (0, 0)))
        inside = ndimage.binary_erosion(void, ball, iterations=halo)[halo: halo + z1 - z0]
        levels.append(_levels_of_blocks(inside, np.asarray(grey_ds[z0:z1]), block, 0, z1 - z0))
    levels = np.concatenate(levels) if levels else np.empty(0)
    spread = (float(np.diff(np.percentile(levels, PERCENTILES))[0]) if levels.size >= MIN_BLOCKS
              else float("nan"))
    return Shading(spread, float(contrast), int(levels.size))


def contrast_from_fwhm(fwhm) -> float:
    """The step from the electrolyte's grey level to the nearest brighter phase the model resolves (CBD,
    where it is resolved), from the thresholding's per-phase table (``phase_fwhm.csv``: ``phase``, ``centre``,
    optional ``resolved``); NaN without the electrolyte or a brighter phase. Where shading hides CBD, the
    step to the next phase still says how far the electrolyte wanders."""
    t = fwhm[fwhm["resolved"].astype(bool)] if "resolved" in fwhm else fwhm
    centre = dict(zip(t["phase"], t["centre"].astype(float)))
    void = centre.pop("void", np.nan)
    steps = [c - void for c in centre.values() if np.isfinite(c) and c > void]
    return float(min(steps)) if steps else float("nan")


def measure_files(phases_path, volume_path, contrast: float) -> Shading:
    """:func:`measure` of a phase map's ``/phases`` and the volume it was read from (HDF5 files)."""
    import h5py

    from . import io

    with h5py.File(phases_path, "r") as fp, h5py.File(volume_path, "r") as fv:
        return measure(fp["phases"], fv[io.VOLUME_DATASET], contrast)
