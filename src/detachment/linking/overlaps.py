"""Per-slice instance index and overlap counting for the linker (one pass over the foreground per pair).

:class:`SliceIndex` indexes a slice's instances once (foreground pixels, ids, sizes, boxes);
:class:`LinkedSlice` is a slice labelled with track ids that keeps its per-track pixel counts;
:func:`pair_counts` counts the pixels shared by the labels of two slices with one ``bincount``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage
from skimage.morphology import convex_hull_image


class SliceIndex:
    """The instances of one (y, x) label slice, indexed once.

    Parameters
    ----------
    lab : (y, x) int array
        Instance ids, 0 = background.

    Attributes
    ----------
    lab : (y, x) int array
        The slice.
    fg : 1D intp array
        Flat (raster-order) positions of its foreground pixels.
    ids : 1D intp array
        The instance ids present, ascending.
    index : 1D intp array
        Per foreground pixel, the position of its instance in ``ids``.
    sizes : 1D int64 array
        Pixels of each instance of ``ids``.

    Raises
    ------
    ValueError
        When an instance id is negative.
    """

    def __init__(self, lab: np.ndarray):
        self.lab = lab
        flat = lab.ravel()
        self.fg = np.flatnonzero(flat != 0)
        values = flat[self.fg].astype(np.intp, copy=False)
        if values.size and lab.dtype.kind == "i" and values.min() < 0:
            raise ValueError("instance ids must be >= 0 (0 = background)")
        top = int(values.max()) if values.size else 0
        if top <= 4 * values.size + 1024:  # dense enough to count by id
            counts = np.bincount(values, minlength=top + 1)
            self.ids = np.flatnonzero(counts)
            self.sizes = counts[self.ids]
            self.index = self.lookup(self.ids, top + 1)[values]
        else:
            self.ids, self.index, self.sizes = np.unique(values, return_inverse=True, return_counts=True)
        self._boxes: list | None = None
        self._counts: dict[int, tuple[int, np.ndarray]] = {}

    @staticmethod
    def lookup(ids: Sequence[int] | np.ndarray, size: int) -> np.ndarray:
        """Lookup table label -> its position in ``ids`` (-1 for labels not in it).

        Parameters
        ----------
        ids : sequence of int
            Distinct labels, each < ``size``.
        size : int
            Length of the table (largest label that will be looked up + 1).

        Returns
        -------
        (size,) intp array
        """
        lut = np.full(size, -1, np.intp)
        lut[np.asarray(ids, np.intp)] = np.arange(len(ids))
        return lut

    def positions(self, ids: Sequence[int]) -> np.ndarray:
        """Positions in :attr:`ids` of instance ids present in the slice."""
        return np.searchsorted(self.ids, np.asarray(ids, np.intp))

    def boxes(self) -> list[tuple[slice, slice]]:
        """Bounding box (y, x slices, pixels) of each instance of :attr:`ids`, from its row runs."""
        if self._boxes is None:
            self._boxes = _run_boxes(self.fg, self.index, len(self.ids), self.lab.shape)
        return self._boxes

    def counts_under(self, layer: LinkedSlice) -> np.ndarray:
        """Pixels shared by every track of ``layer`` (rows: :meth:`LinkedSlice.tracks`) and every instance
        (columns: :attr:`ids`); one pass over the foreground, cached until ``layer`` changes."""
        version, counts = self._counts.get(id(layer), (-1, None))
        if version != layer.version:
            tracks = layer.tracks()
            counts = pair_counts(self, layer.labels.ravel()[self.fg], tracks, tracks[-1] if tracks else 0)
            self._counts[id(layer)] = (layer.version, counts)
        return counts

    def overlap(self, layer: LinkedSlice, rows: Sequence[int], cols: Sequence[int]) -> np.ndarray:
        """Pixels shared by tracks ``rows`` of ``layer`` (present there) and instances ``cols`` of this slice.

        Returns
        -------
        (len(rows), len(cols)) int64 array
        """
        counts = self.counts_under(layer)
        r = np.searchsorted(np.asarray(layer.tracks(), np.intp), np.asarray(rows, np.intp))
        return counts[np.ix_(r, self.positions(cols))]


def _run_boxes(fg: np.ndarray, index: np.ndarray, n: int, shape) -> list[tuple[slice, slice]]:
    """Bounding boxes of ``n`` instances from their foreground pixels (flat raster positions ``fg``,
    instance positions ``index``): each row run of one instance is one (y, x0, x1) record."""
    if n == 0:
        return []
    ys = fg // shape[1]
    # one key that steps by exactly 1 between neighbours of one run: + ys breaks rows, + index instances
    key = fg + ys + index * (2 * fg[-1] + 2)
    brk = np.flatnonzero(np.diff(key) != 1) + 1
    first = np.concatenate(([0], brk))
    last = np.concatenate((brk, [len(fg)])) - 1
    ry, inst = ys[first], index[first]
    x0, x1 = fg[first] - ry * shape[1], fg[last] - ry * shape[1]
    y_lo, x_lo = np.full(n, max(shape)), np.full(n, max(shape))
    y_hi, x_hi = np.full(n, -1), np.full(n, -1)
    np.minimum.at(y_lo, inst, ry)
    np.minimum.at(x_lo, inst, x0)
    np.maximum.at(y_hi, inst, ry)
    np.maximum.at(x_hi, inst, x1)
    lo, hi = (y_lo.tolist(), x_lo.tolist()), (y_hi.tolist(), x_hi.tolist())
    return [(slice(a, b + 1), slice(c, d + 1)) for a, c, b, d in zip(*lo, *hi)]


def pair_counts(index: SliceIndex, under: np.ndarray, rows: Sequence[int], top: int | None = None) -> np.ndarray:
    """Pixels shared by labels of another slice and the instances of an indexed slice, in one ``bincount``.

    Parameters
    ----------
    index : SliceIndex
        The indexed slice.
    under : 1D int array
        The other slice's labels at ``index.fg``.
    rows : sequence of int
        Labels of the other slice, distinct.
    top : int, optional
        Largest label in ``under`` and ``rows`` (computed when not given).

    Returns
    -------
    (len(rows), len(index.ids)) int64 array
        Shared pixels of each (label, instance) pair.
    """
    rows = np.asarray(rows, np.intp)
    na, nb = len(rows), len(index.ids)
    if na == 0:
        return np.zeros((0, nb), np.int64)
    if top is None:
        top = max(int(under.max()) if under.size else 0, int(rows.max()))
    ra = SliceIndex.lookup(rows, top + 1)[under]
    sel = ra >= 0
    return np.bincount(ra[sel] * nb + index.index[sel], minlength=na * nb).reshape(na, nb).astype(np.int64, copy=False)


def iou_matrix(counts: np.ndarray, a_sizes: np.ndarray, b_sizes: np.ndarray) -> np.ndarray:
    """IoU of every pair from a dense overlap count matrix.

    Parameters
    ----------
    counts : (n_a, n_b) int array
        Shared pixels (:func:`pair_counts`).
    a_sizes, b_sizes : (n_a,), (n_b,) int arrays
        Pixels of each row label and each column label.

    Returns
    -------
    (n_a, n_b) float array
        |a ∩ b| / |a ∪ b|; 0 for pairs that share no pixel.
    """
    return counts / np.maximum(a_sizes[:, None] + b_sizes[None, :] - counts, 1)


class LinkedSlice:
    """A linked slice held for gap closing: track ids with per-track pixel counts kept up to date.

    Parameters
    ----------
    z : int
        Slice index.
    labels : (y, x) uint32 array
        Track ids, 0 = background; painted in place by :meth:`relabel` and :meth:`paint`.
    sizes : dict
        Track id -> its pixels in ``labels`` (tracks present only).

    Attributes
    ----------
    version : int
        Incremented on every change of ``labels``.
    """

    def __init__(self, z: int, labels: np.ndarray, sizes: dict[int, int]):
        self.z = z
        self.labels = labels
        self.sizes = sizes
        self.version = 0
        self._tracks: tuple[int, list[int]] = (-1, [])

    def tracks(self) -> list[int]:
        """The track ids present, ascending."""
        if self._tracks[0] != self.version:
            self._tracks = (self.version, sorted(self.sizes))
        return self._tracks[1]

    def relabel(self, old: int, new: int) -> None:
        """Give the pixels of track ``old`` to track ``new``."""
        if old == new:
            return
        self.labels[self.labels == old] = new
        self.sizes[new] = self.sizes.get(new, 0) + self.sizes.pop(old, 0)
        self.version += 1

    def paint(self, track: int, box: tuple[slice, slice], mask: np.ndarray) -> None:
        """Set the pixels ``mask`` of the crop ``box`` (all background) to ``track``."""
        self.labels[box][mask] = track
        self.sizes[track] = self.sizes.get(track, 0) + int(np.count_nonzero(mask))
        self.version += 1


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two boolean masks of equal shape (0 when both are empty)."""
    union = np.count_nonzero(a | b)
    return np.count_nonzero(a & b) / union if union else 0.0


def solidity(mask: np.ndarray) -> float:
    """Area over convex-hull area of a non-empty 2D boolean mask, computed on its bounding box."""
    sl = ndimage.find_objects(mask.astype(np.uint8))[0]
    crop = mask[sl]
    return float(crop.sum() / max(convex_hull_image(crop).sum(), 1))


def mask_box(mask: np.ndarray) -> tuple[slice, slice]:
    """Bounding box (y, x slices) of a non-empty 2D boolean mask."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1)


def union_box(boxes) -> tuple[slice, slice]:
    """The smallest box (y, x slices) holding all of ``boxes``."""
    boxes = list(boxes)
    return (slice(min(b[0].start for b in boxes), max(b[0].stop for b in boxes)),
            slice(min(b[1].start for b in boxes), max(b[1].stop for b in boxes)))


def solidity_at_least(mask: np.ndarray, threshold: float) -> bool:
    """``solidity(mask) >= threshold``, the convex hull computed only where a cheap bound does not decide.

    The hull's pixels lie in the octagon of the mask's extents along y, x, y + x and y - x (its vertices
    are pixel centres ± 0.5 along one axis), so area / octagon area ≤ solidity: at or above the
    threshold, so is the solidity.

    Parameters
    ----------
    mask : (y, x) bool array
        Non-empty.
    threshold : float
        Solidity to reach.

    Returns
    -------
    bool
        Exactly ``solidity(mask) >= threshold``.
    """
    crop = mask[ndimage.find_objects(mask.astype(np.uint8))[0]]
    ys, xs = np.nonzero(crop)
    gy, gx = np.ogrid[: crop.shape[0], : crop.shape[1]]
    octagon = np.count_nonzero((gy + gx >= (ys + xs).min()) & (gy + gx <= (ys + xs).max())
                               & (gy - gx >= (ys - xs).min()) & (gy - gx <= (ys - xs).max()))
    if crop.sum() / max(octagon, 1) >= threshold:
        return True
    return solidity(mask) >= threshold
