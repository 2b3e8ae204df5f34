"""Bin indices of float32 grey levels on uniform bins, equal to :func:`numpy.histogram`'s.

:class:`UniformBins` builds the tables that give the bin of each value, and the histogram
(:meth:`UniformBins.counts`, compiled in :mod:`detachment.slab_kernels`), exactly as
``np.histogram(v, n, range=(lo, hi))`` does: a lookup table over a fine grid of cells, comparing only
the values in a cell that holds an edge with that edge (docs/methods.md, "Streamed thresholding"). :func:`ceil_float32` rounds float64 thresholds up
to float32. ``tests/test_threshold.py`` checks the equality on values next to every edge.
"""

from __future__ import annotations

import numpy as np

from . import slab_kernels

#: cells of the lookup grid: its tables (6 bytes a cell) stay in the CPU cache
N_CELLS = 1 << 14


def ceil_float32(x) -> np.ndarray:
    """Smallest float32 >= each value of ``x``: ``v >= x`` equals ``v >= ceil_float32(x)`` for float32 ``v``.

    Parameters
    ----------
    x : array_like
        float64 values (e.g. thresholds, grey level), any shape.

    Returns
    -------
    numpy.ndarray
        float32, same shape as ``x``.
    """
    x = np.asarray(x, np.float64)
    c = x.astype(np.float32)
    return np.where(c < x, np.nextafter(c, np.float32(np.inf)), c)


class UniformBins:
    """Bins ``edges[i] <= v < edges[i + 1]`` (last bin closed) of float32 values in ``[edges[0], edges[-1]]``.

    Parameters
    ----------
    edges : numpy.ndarray
        (n + 1,) increasing bin edges, grey level, float32 or float64 (the type numpy.histogram
        compares in), evenly spaced as from ``np.linspace``; the end edges must be float32 values.

    Attributes
    ----------
    n : int
        Number of bins.
    lo, hi : numpy.float32
        The lowest and highest edges.
    inner : numpy.ndarray
        (n - 1,) float32 inner edges (float64 ones rounded up by :func:`ceil_float32`).
    scale : numpy.float32
        Cells per grey-level unit.
    lut : numpy.ndarray
        int32 bin of the values in each cell (the bin below the edge in a cell that holds one).
    edge_in : numpy.ndarray
        float32 edge inside each cell, +inf where a cell holds none.

    Raises
    ------
    ValueError
        When the edges are not increasing, the end edges are not float32 values, or the grid cannot be
        built (range too small, bins narrower than two cells); the caller then uses numpy.histogram.
    """

    def __init__(self, edges: np.ndarray):
        edges = np.asarray(edges)
        inner = ceil_float32(edges[1:-1]) if edges.dtype == np.float64 else edges[1:-1].astype(np.float32)
        lo, hi = np.float32(edges[0]), np.float32(edges[-1])
        if not (np.all(np.diff(edges) > 0) and lo == edges[0] and hi == edges[-1] and np.isfinite(hi - lo)):
            raise ValueError("edges must be increasing float32 values")
        self.n = len(edges) - 1
        self.lo, self.hi, self.inner = lo, hi, inner
        self.scale = np.float32(N_CELLS / (float(hi) - float(lo)))
        if not np.isfinite(self.scale) or not 0 < self.scale < np.float32(1e30):
            raise ValueError("range too small for the cell grid")
        # cell of each inner edge and of the float32 value just below it; cells are monotone in v
        q_edge = self._cells(inner)
        q_below = self._cells(np.nextafter(inner, np.float32(-np.inf)))
        if np.any(np.diff(q_edge) <= 0):
            raise ValueError("bins narrower than two cells")
        top = int(self._cells(np.array([hi], np.float32))[0])
        # bin of each cell's values; a cell holding edge i (values on both sides) gives the bin below it,
        # and ``edge_in`` the edge, +inf elsewhere: bin = lut[q] + (v >= edge_in[q])
        self.lut = np.searchsorted(q_edge, np.arange(top + 1), side="right").astype(np.int32)
        self.edge_in = np.full(top + 1, np.inf, np.float32)
        mixed = np.flatnonzero(q_below == q_edge)
        self.lut[q_edge[mixed]] -= 1
        self.edge_in[q_edge[mixed]] = inner[mixed]

    def _cells(self, v: np.ndarray) -> np.ndarray:
        # v >= lo, so x >= 0 and the cast truncates to the cell below
        x = np.subtract(v, self.lo, dtype=np.float32)
        x *= self.scale
        return x.astype(np.intp)

    def counts(self, v: np.ndarray) -> np.ndarray:
        """Histogram of ``v``, as ``np.histogram`` with these bins.

        Parameters
        ----------
        v : numpy.ndarray
            float32 grey levels in ``[edges[0], edges[-1]]``, any shape.

        Returns
        -------
        numpy.ndarray
            (n,) int64 voxel counts per bin.
        """
        return self.counts_and_range(v)[0]

    def counts_and_range(self, v: np.ndarray) -> tuple[np.ndarray, float, float]:
        """Histogram of the values of ``v`` within ``[edges[0], edges[-1]]``, and the min and max of all.

        Parameters
        ----------
        v : numpy.ndarray
            float32 grey levels, any shape.

        Returns
        -------
        counts : numpy.ndarray
            (n,) int64 voxel counts per bin (values outside the range are not counted).
        vmin, vmax : float
            The smallest and largest value of ``v`` (+inf and -inf when it is empty).
        """
        out = np.zeros(self.n, np.int64)
        if not np.size(v):
            return out, float("inf"), float("-inf")
        vmin, vmax = slab_kernels.bin_counts(np.ravel(np.asarray(v, np.float32)), self.lo, self.hi, self.scale,
                                             self.lut, self.edge_in, out)
        return out, float(vmin), float(vmax)
