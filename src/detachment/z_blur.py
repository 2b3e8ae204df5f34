"""Whether the blur along z is the blur within the slices: step widths on lines along z and along y, x.

:class:`detachment.blur.EdgeProfiles` reads the point spread along y and x, within slices, and the forward model
(:mod:`detachment.psf_refine`) takes it as isotropic. A reconstruction's resolution along the volume's normal can
be coarser than within its slices (a vertical drift during the scan, slices interpolated or binned, a volume
resampled from a coarser axis), or finer: the contacts under and over the particles are then blurred more or less
than the in-plane edges show, and the map's tops and bottoms are placed under the wrong blur. This module fits the
same error function to the NMC / background edges (``RUN`` voxels of NMC, then ``RUN`` of electrolyte or CBD) on
lines along z and on lines along y and x; their ratio is 1 under an isotropic point spread.

Only edges where the surface crosses its line nearly square are read: where the map's surface normal (the
gradient of its NMC indicator, smoothed by :data:`NORMAL_SMOOTH_VOX`) lies within ``arccos(NORMAL_MIN)`` of the
line. A surface met obliquely widens a step by ``1 / cos`` of the angle along every axis alike, and where surfaces
cut voxels anywhere (partial volume, as in real reconstructions) the voxel's box widens both widths as well; read
over every edge, that common widening hides much of a difference between the axes (docs/results.md). Where the
edges crossed nearly square give no ratio (too few for a steady width on a small volume or a few particles, or
steps too sharp to fit), the ratio is read over every edge instead, under its own bounds
(:data:`detachment.plausibility.BLUR_Z_BOUNDS`).
Axes (z, y, x). Main entry point: :func:`measure`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .blur import MIN_EDGES, RUN, fit_step
from .phases import CBD, NMC_HIGH, NMC_LOW, VOID

#: σ (voxels) of the Gaussian that smooths the map's NMC indicator before its gradient gives the surface normal.
NORMAL_SMOOTH_VOX = 1.0
#: Least component of the unit surface normal along an edge's line (the mean of the voxels either side of the
#: edge) for the edge to be read: within about 37° of square. 0.9 parts the tuning cells that read outside the
#: goals from the isotropic ones more widely below 1, but reads half as many edges, too few on sparse volumes
#: (docs/results.md).
NORMAL_MIN = 0.8
#: Context (voxels) read around a tile: an edge's profile (RUN), or the normal one voxel before the tile (the
#: smoothing's radius, 4 σ, and the gradient's step past that).
HALO = max(RUN, int(4 * NORMAL_SMOOTH_VOX + 0.5) + 2)
#: Slices, and rows, owned by a tile read at a time (each with HALO of context): every edge belongs to the tile
#: that owns the first voxel past it, so each is read once and none is left out.
TILE_Z, TILE_Y = 32, 64
#: Fewest nearly square edges along z for a ratio over them: which surfaces the lines cross varies with the
#: volume, and a few particles' surfaces give a noisy width (docs/results.md).
MIN_RATIO_EDGES = 3000
#: Where those are fewer, fewest edges of every orientation along z for a ratio over every edge; fewer still: no
#: ratio, and no check (docs/results.md).
MIN_EVERY_EDGES = 5000
#: Narrowest width (σ, voxels) within the slices for a ratio: a step that sharp on the voxel grid is six samples
#: of nearly a step function, whose fitted width trades against its position, along z as well, so neither width
#: is measured (docs/results.md). Narrower over the nearly square edges: the ratio over every edge, whose
#: oblique surfaces widen the step; narrower there too: no ratio.
MIN_WIDTH_YX = 0.22
#: The two readings: over the edges crossed nearly square, and over every edge.
SQUARE, EVERY = "square", "every"


@dataclass(frozen=True)
class ZBlur:
    """How wide a step looks along z and within the slices, over the NMC / background edges the surface crosses
    nearly square (:data:`NORMAL_MIN`), or over every edge where those are too few.

    Attributes
    ----------
    width_z, width_yx : float
        σ (voxels) of the error function fitted to the mean profile of those edges on lines along z, and on
        lines along y and x (NaN with fewer than :data:`detachment.blur.MIN_EDGES` edges or where the fit fails).
    edges_z, edges_yx : int
        The edges each was read on.
    reading : str
        :data:`SQUARE` or :data:`EVERY`: which edges.
    """

    width_z: float
    width_yx: float
    edges_z: int
    edges_yx: int
    reading: str = SQUARE

    @property
    def ratio(self) -> float:
        """``width_z / width_yx``: 1 under an isotropic point spread, above 1 where z is the blurrier axis; NaN
        with fewer edges along z than the reading needs (:data:`MIN_RATIO_EDGES`, :data:`MIN_EVERY_EDGES`) or a
        width within the slices of :data:`MIN_WIDTH_YX` or less."""
        least = MIN_RATIO_EDGES if self.reading == SQUARE else MIN_EVERY_EDGES
        if self.edges_z < least or not self.width_yx > MIN_WIDTH_YX:
            return float("nan")
        return self.width_z / self.width_yx


def measure(codes_ds, grey_ds) -> ZBlur:
    """Step widths along z and within the slices, each an error function fitted to the mean grey-level profile
    across the NMC / background edges of the map on lines of that direction that the surface crosses nearly
    square; across every edge where those give no ratio (fewer than :data:`MIN_RATIO_EDGES` along z, or a step
    within the slices :data:`MIN_WIDTH_YX` wide or less) and every edge does.

    Parameters
    ----------
    codes_ds : array-like
        (z, y, x) uint8 phase codes (an h5py dataset or an array; read a tile at a time).
    grey_ds : array-like
        (z, y, x) grey levels the map was read from (flattened where it was: :func:`detachment.shading.flat_view`).

    Returns
    -------
    ZBlur
    """
    # per reading (square, every) and line axis: summed profile, count
    sums = [np.zeros((2, 3, 2 * RUN)), np.zeros((2, 3), np.int64)]
    nz, ny = codes_ds.shape[0], codes_ds.shape[1]
    for z0 in range(0, nz, TILE_Z):
        for y0 in range(0, ny, TILE_Y):
            lo = (max(0, z0 - HALO), max(0, y0 - HALO))
            hi = (min(nz, z0 + TILE_Z + HALO), min(ny, y0 + TILE_Y + HALO))
            own = (slice(z0 - lo[0], min(nz, z0 + TILE_Z) - lo[0]), slice(y0 - lo[1], min(ny, y0 + TILE_Y) - lo[1]),
                   slice(None))
            codes = np.asarray(codes_ds[lo[0]:hi[0], lo[1]:hi[1]])
            grey = np.asarray(grey_ds[lo[0]:hi[0], lo[1]:hi[1]], np.float32)
            _add_tile(sums, codes, grey, own)
    total, count = sums
    square, every = (ZBlur(_width(t[0], c[0]), _width(t[1] + t[2], c[1] + c[2]), int(c[0]), int(c[1] + c[2]),
                           reading) for t, c, reading in zip(total, count, (SQUARE, EVERY)))
    return every if np.isnan(square.ratio) and np.isfinite(every.ratio) else square


def _add_tile(sums: list, codes: np.ndarray, grey: np.ndarray, own: tuple) -> None:
    """Add to ``sums`` the edges along each axis whose first voxel past the edge lies in ``own`` (the tile less
    its context; slices of the three axes)."""
    solid = np.isin(codes, (NMC_LOW, NMC_HIGH))
    back = np.isin(codes, (VOID, CBD))
    gradient = np.gradient(ndimage.gaussian_filter(solid.astype(np.float32), NORMAL_SMOOTH_VOX))
    magnitude = np.sqrt(sum(g * g for g in gradient))
    for axis in range(3):
        normal = np.divide(np.abs(gradient[axis]), magnitude, out=np.zeros_like(magnitude), where=magnitude > 0)
        # the other two axes cut to the owned voxels; this one kept whole, as the profiles reach into the context
        cut = tuple(slice(None) if a == axis else own[a] for a in range(3))
        start, stop, _ = own[axis].indices(codes.shape[axis])
        read = line_edges(*(np.moveaxis(v[cut], axis, -1) for v in (solid, back, grey, normal)), (start, stop))
        for i, (total, count) in enumerate(read):
            sums[0][i, axis] += total
            sums[1][i, axis] += count


def line_edges(solid: np.ndarray, back: np.ndarray, grey: np.ndarray, normal: np.ndarray,
               owned: tuple[int, int]) -> tuple[tuple[np.ndarray, int], tuple[np.ndarray, int]]:
    """Summed grey-level profile (``2 RUN``, solid side first) and count of the edges on the last axis's lines:
    ``RUN`` solid voxels then ``RUN`` background (or the reverse) about a boundary whose next voxel ``b`` lies in
    ``range(*owned)``. Two: those where ``normal`` (the unit surface normal's component along the line) averaged
    over voxels ``b - 1`` and ``b`` is at least :data:`NORMAL_MIN`, and every one."""
    n = solid.shape[-1]
    first, last = max(owned[0], RUN), min(owned[1], n - RUN + 1)  # boundaries with a whole profile
    square, every = (np.zeros(2 * RUN), 0), (np.zeros(2 * RUN), 0)
    if last <= first:
        return square, every
    b = slice(first, last)
    crossed = 0.5 * (normal[..., first - 1:last - 1] + normal[..., b]) >= NORMAL_MIN
    for solid_first, (before, after) in ((True, (solid, back)), (False, (back, solid))):
        ok = np.ones(crossed.shape, bool)
        for k in range(RUN):
            ok &= before[..., first - RUN + k:last - RUN + k] & after[..., first + k:last + k]
        where = np.nonzero(ok)
        keep = crossed[where]
        for k in range(2 * RUN):
            values = grey[where[:-1] + (where[-1] + first - RUN + k,)]
            j = k if solid_first else 2 * RUN - 1 - k
            every[0][j] += values.sum(dtype=np.float64)
            square[0][j] += values[keep].sum(dtype=np.float64)
        every, square = (every[0], every[1] + where[0].size), (square[0], square[1] + int(keep.sum()))
    return square, every


def _width(total: np.ndarray, count: int) -> float:
    fit = fit_step(total, count, MIN_EDGES)
    return float("nan") if fit is None else fit.sigma


def measure_files(phases_path, volume_path) -> ZBlur:
    """:func:`measure` of ``phases.h5`` and the volume it was read from, through the shading field the map was
    read less (:func:`detachment.shading.flat_view`)."""
    from .shading import open_flat

    with open_flat(phases_path, volume_path) as (codes, grey):
        return measure(codes, grey)
