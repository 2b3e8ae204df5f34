"""A first estimate of the shading from the grey levels alone, for a volume whose phases cannot be read,
or not read right, until it is taken out.

Strong shading can stop the phase model before any map is made (the electrolyte at the far face is no
longer the darkest class, slice z = 0 is not uniform enough to be the collector), or make the first map
misread the electrolyte where the shading is strongest, so that the levels the shading measure of
:mod:`detachment.shading` reads on it are far off there. Here no phase is known. The blocks whose grey
levels are as uniform as the most uniform tenth of the volume's blocks hold one phase only, nearly always
the open electrolyte (above the electrode, in wide pores), and the field is fitted to their medians: linear
along z (drift of the beam and of the detector's response over a scan) and quadratic across the slices
(cupping, a region-of-interest scan's truncation), by least absolute deviations, so that the few uniform
blocks of another phase (the inside of a large particle, a thick collector) do not pull it. Where no
uniform block lies (in a crowded electrode) the field is extrapolated. It only has to let the phase model
fit; the shading is then read on the map (:func:`detachment.shading.threshold_flattened`).
"""
from __future__ import annotations

import numpy as np
from scipy import sparse
from scipy.optimize import linprog

from .shading import BLOCK_VOX

#: A block is uniform where its grey levels' interquartile range is at most this many times the 10th
#: percentile of the blocks' ranges.
UNIFORM_IQR_FACTOR = 1.5
#: Fewest uniform blocks for the field (seven coefficients) to be fitted.
MIN_BLOCKS = 30
#: Most uniform blocks the field is fitted to (an even stride through them beyond): seven coefficients need
#: far fewer, and the linear programme grows with them (seconds for a few thousand).
MAX_FIT_BLOCKS = 4000


def block_centres(length: int, block: int) -> np.ndarray:
    """Centres (voxels) of the blocks of ``block`` voxels along an axis of ``length`` voxels, the last block
    possibly shorter (the convention of :func:`detachment.shading.field_on`)."""
    first = np.arange(0, length, block)
    return (first + np.minimum(first + block, length)) / 2 - 0.5


def block_quartiles(volume_ds, block: int = BLOCK_VOX) -> tuple[np.ndarray, np.ndarray]:
    """(z blocks, y blocks, x blocks) median and interquartile range of the grey levels in each block of
    ``block`` voxels of a (z, y, x) dataset (h5py or array), read one row of blocks at a time."""
    depth, ny, nx = volume_ds.shape
    shape = tuple(len(range(0, n, block)) for n in (depth, ny, nx))
    median, iqr = np.empty(shape), np.empty(shape)
    for i, z0 in enumerate(range(0, depth, block)):
        slab = np.asarray(volume_ds[z0:z0 + block], np.float32)
        for j, y0 in enumerate(range(0, ny, block)):
            for k, x0 in enumerate(range(0, nx, block)):
                q = np.percentile(slab[:, y0:y0 + block, x0:x0 + block], (25, 50, 75))
                median[i, j, k], iqr[i, j, k] = q[1], q[2] - q[0]
    return median, iqr


def field_design(shape, block: int) -> np.ndarray:
    """(blocks, 7) terms of the field at the block centres, blocks in raster order: 1, z, y, x, y², x², y x,
    each axis scaled to -0.5-0.5 over the volume (``shape``, voxels)."""
    axes = [block_centres(n, block) / max(n - 1, 1) - 0.5 for n in shape]
    z, y, x = (a.ravel() for a in np.meshgrid(*axes, indexing="ij"))
    return np.stack([np.ones_like(z), z, y, x, y * y, x * x, y * x], axis=1)


def quantile_regression(design: np.ndarray, values: np.ndarray, quantile: float = 0.5) -> np.ndarray:
    """Coefficients minimising the pinball loss of ``values`` at ``quantile`` (0.5: least absolute
    deviations), as a linear programme on the residuals' positive and negative parts."""
    n, p = design.shape
    cost = np.concatenate([np.zeros(p), np.full(n, quantile), np.full(n, 1 - quantile)])
    eye = sparse.identity(n, format="csr")
    a_eq = sparse.hstack([sparse.csr_matrix(design), eye, -eye], format="csr")
    bounds = [(None, None)] * p + [(0, None)] * (2 * n)
    res = linprog(cost, A_eq=a_eq, b_eq=values, bounds=bounds, method="highs")
    if not res.success:
        raise ValueError(f"quantile regression did not converge: {res.message}")
    return res.x[:p]


def provisional_field(volume_ds, block: int = BLOCK_VOX) -> np.ndarray | None:
    """The shading field on the block grid of :func:`detachment.shading.block_grid` (float32, less its
    median), estimated from the grey levels alone: the least-absolute-deviations fit of
    :func:`field_design`'s terms to the uniform blocks' medians (:data:`MAX_FIT_BLOCKS` at most), at every
    block's centre; None with fewer than :data:`MIN_BLOCKS` uniform blocks."""
    median, iqr = block_quartiles(volume_ds, block)
    uniform = iqr <= UNIFORM_IQR_FACTOR * np.percentile(iqr, 10)
    if int(uniform.sum()) < MIN_BLOCKS:
        return None
    design = field_design(volume_ds.shape, block)
    rows = np.flatnonzero(uniform.ravel())
    rows = rows[:: -(-rows.size // MAX_FIT_BLOCKS)]
    fitted = design @ quantile_regression(design[rows], median.ravel()[rows])
    return (fitted - np.median(fitted)).reshape(median.shape).astype(np.float32)
