"""Bin indices of float32 grey levels on uniform bins, equal to :func:`numpy.histogram`'s.

numpy.histogram with ``bins=n`` and ``range=(lo, hi)`` puts a value ``v`` in bin
``i`` when ``edges[i] <= v < edges[i + 1]`` (the last bin also holds ``hi``),
comparing in the type of its edges (float32 when ``lo`` and ``hi`` are Python
floats and the data float32; float64 when they are numpy float64). Here the
comparison is made once per volume on a fine grid of cells instead of per
voxel: ``x = (v - lo) * scale`` in float32 is monotone in ``v``, so its integer
part ``q`` splits the float32 line into consecutive cells; a lookup table gives
the bin of each cell that lies inside one bin, and the few voxels in a cell
holding an edge are compared with that edge. The result is exact, not an
approximation (``tests/test_threshold.py`` checks it against numpy.histogram on
values next to every edge).
"""

from __future__ import annotations

import numpy as np

#: cells of the lookup grid: its tables (6 bytes a cell) stay in the CPU cache
N_CELLS = 1 << 14
#: values per block: a block's temporaries stay in the CPU cache
BLOCK = 1 << 16


def ceil_float32(x) -> np.ndarray:
    """Smallest float32 >= each value of ``x``: ``v >= x`` equals ``v >= ceil_float32(x)`` for float32 ``v``.

    Parameters
    ----------
    x : array_like of float64

    Returns
    -------
    np.ndarray
        float32, same shape.
    """
    x = np.asarray(x, np.float64)
    c = x.astype(np.float32)
    return np.where(c < x, np.nextafter(c, np.float32(np.inf)), c)


class UniformBins:
    """Bins ``edges[i] <= v < edges[i + 1]`` (last bin closed) of float32 values in ``[edges[0], edges[-1]]``.

    Parameters
    ----------
    edges : (n + 1,) increasing array, float32 or float64 (the type numpy.histogram compares in);
        evenly spaced, as from ``np.linspace``.

    Raises
    ------
    ValueError
        When the edges are not increasing or the grid cannot be built (the caller then uses numpy.histogram).
    """

    def __init__(self, edges: np.ndarray):
        edges = np.asarray(edges)
        inner = ceil_float32(edges[1:-1]) if edges.dtype == np.float64 else edges[1:-1].astype(np.float32)
        lo, hi = np.float32(edges[0]), np.float32(edges[-1])
        if not (np.all(np.diff(edges) > 0) and lo == edges[0] and hi == edges[-1] and np.isfinite(hi - lo)):
            raise ValueError("edges must be increasing float32 values")
        self.n = len(edges) - 1
        self.lo, self.inner = lo, inner
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

    def index(self, v: np.ndarray) -> np.ndarray:
        """Bin of each value.

        Parameters
        ----------
        v : float32 array of values in ``[edges[0], edges[-1]]`` (grey levels); at most a few
            :data:`BLOCK` values for speed (the caller splits larger arrays).

        Returns
        -------
        np.ndarray
            int32 bin indices in ``0 .. n - 1``, same shape as ``v``.
        """
        q = self._cells(v)
        b = np.take(self.lut, q)
        b += v >= np.take(self.edge_in, q)
        return b

    def counts(self, v: np.ndarray) -> np.ndarray:
        """Histogram of ``v``, as ``np.histogram`` with these bins.

        Parameters
        ----------
        v : float32 array (any shape) of values in ``[edges[0], edges[-1]]`` (grey levels).

        Returns
        -------
        np.ndarray
            int64 voxel counts per bin, shape (n,).
        """
        flat = np.ravel(v)
        out = np.zeros(self.n, np.int64)
        for i in range(0, flat.size, BLOCK):
            out += np.bincount(self.index(flat[i: i + BLOCK]), minlength=self.n)
        return out
