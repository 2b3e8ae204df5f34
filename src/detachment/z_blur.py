"""Whether the blur along z is the blur within the slices: step widths on lines along z and along y, x.

:class:`detachment.blur.EdgeProfiles` reads the point spread along y and x, within slices, and the forward model
(:mod:`detachment.psf_refine`) takes it as isotropic. A reconstruction's resolution along the volume's normal can
be coarser than within its slices (a vertical drift during the scan, slices interpolated or binned, a volume
resampled from a coarser axis): the contacts under and over the particles are then blurred more than the in-plane
edges show, and the map's tops and bottoms are placed under the wrong blur. This module fits the same error
function to every NMC / background edge (``RUN`` voxels of NMC, then ``RUN`` of electrolyte or CBD) on lines along
z and on lines along y and x of the same slabs; their ratio is 1 under an isotropic point spread.
Axes (z, y, x). Main entry point: :func:`measure`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import slab_kernels
from .blur import MIN_EDGES, RUN, fit_step
from .phases import CBD, NMC_HIGH, NMC_LOW, VOID

#: Slices read at a time. Only edges whose 2 RUN voxels lie within one slab are read along z, so none is read
#: twice; those that straddle two slabs (about 2 RUN / SLAB_VOX of them) are left out, which biases nothing.
SLAB_VOX = 32
#: Rows (y) transposed at a time, with one row of context each side (the flat test's neighbouring lines).
ROWS = 128
#: Fewest edges along z for a ratio: which surfaces the lines cross, and how obliquely, varies with the volume,
#: and the surfaces of a few particles do not average their orientations out (docs/results.md). Fewer: no
#: ratio, and no check.
MIN_RATIO_EDGES = 5000


@dataclass(frozen=True)
class ZBlur:
    """How wide a step looks along z and within the slices, over every NMC / background edge of the map.

    Attributes
    ----------
    width_z, width_yx : float
        σ (voxels) of the error function fitted to the mean profile of every edge on lines along z, and on
        lines along y and x (NaN with fewer than :data:`detachment.blur.MIN_EDGES` edges or where the fit fails).
        Both carry the same widening by surfaces that meet the lines obliquely, so under an isotropic point
        spread they agree whatever it is.
    edges_z, edges_yx : int
        The edges each was read on.
    """

    width_z: float
    width_yx: float
    edges_z: int
    edges_yx: int

    @property
    def ratio(self) -> float:
        """``width_z / width_yx``: 1 under an isotropic point spread, above 1 where z is the blurrier axis; NaN
        with fewer than :data:`MIN_RATIO_EDGES` edges along z."""
        if self.edges_z < MIN_RATIO_EDGES or not self.width_yx > 0:
            return float("nan")
        return self.width_z / self.width_yx


def measure(codes_ds, grey_ds) -> ZBlur:
    """Step widths along z and within the slices, each an error function fitted to the mean grey-level profile
    across every NMC / background edge of the map on lines of that direction.

    Parameters
    ----------
    codes_ds : array-like
        (z, y, x) uint8 phase codes (an h5py dataset or an array; read a slab at a time).
    grey_ds : array-like
        (z, y, x) grey levels the map was read from (flattened where it was: :func:`detachment.shading.flat_view`).

    Returns
    -------
    ZBlur
    """
    sums = {"z": [np.zeros(2 * RUN), 0], "yx": [np.zeros(2 * RUN), 0]}
    nz, ny = codes_ds.shape[0], codes_ds.shape[1]
    for z0 in range(0, nz, SLAB_VOX):
        z1 = min(nz, z0 + SLAB_VOX)
        codes, grey = np.asarray(codes_ds[z0:z1]), np.asarray(grey_ds[z0:z1], np.float32)
        for y0 in range(0, ny, ROWS):
            lo, hi = max(0, y0 - 1), min(ny, y0 + ROWS + 1)
            rows = np.arange(y0 - lo, min(ny, y0 + ROWS) - lo)
            # in the frame (y, z, x) the rows are the kernel's slices and its first line direction runs along z
            _add(sums["z"], codes[:, lo:hi].transpose(1, 0, 2), grey[:, lo:hi].transpose(1, 0, 2), rows, (True, False))
        _add(sums["yx"], codes, grey, np.arange(z1 - z0), (True, True))
    (tz, nz_), (tyx, nyx) = sums["z"], sums["yx"]
    return ZBlur(_width(tz, nz_), _width(tyx, nyx), nz_, nyx)


def _add(acc: list, codes: np.ndarray, grey: np.ndarray, keep: np.ndarray, directions: tuple[bool, bool]) -> None:
    """Add to ``acc`` ([summed profile, count]) every edge on the lines ``directions`` of the slices ``keep``."""
    n = keep.size
    totals, counts = np.zeros((n, 2 * RUN)), np.zeros(n, np.int64)
    flat_totals, flat_counts = np.zeros((n, 2 * RUN)), np.zeros(n, np.int64)
    slab_kernels.edge_profiles(np.ascontiguousarray(codes), np.ascontiguousarray(grey, np.float32),
                               keep.astype(np.int64), np.ones(n, np.bool_), (NMC_LOW, NMC_HIGH), (VOID, CBD), RUN,
                               totals, counts, flat_totals, flat_counts, np.array(directions))
    acc[0] += totals.sum(axis=0)
    acc[1] += int(counts.sum())


def _width(total: np.ndarray, count: int) -> float:
    fit = fit_step(total, count, MIN_EDGES)
    return float("nan") if fit is None else fit.sigma


def measure_files(phases_path, volume_path) -> ZBlur:
    """:func:`measure` of ``phases.h5`` and the volume it was read from, through the shading field the map was
    read less (:func:`detachment.shading.flat_view`)."""
    from .shading import open_flat

    with open_flat(phases_path, volume_path) as (codes, grey):
        return measure(codes, grey)
