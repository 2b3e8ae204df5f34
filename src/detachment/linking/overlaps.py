"""Per-slice instance index and overlap counting for the linker.

:class:`SliceIndex` indexes a slice's instances once (foreground pixels, ids, sizes, boxes);
:class:`LinkedSlice` is a held slice of track ids that keeps its per-track pixel counts and boxes.
Overlaps are counted with one ``bincount`` of pair codes, over the slice's foreground (:func:`pair_counts`)
or, for a few tracks or instances, over their pixels only.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


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
        values = flat[self.fg]
        if lab.dtype.kind != "u" and values.size and values.min() < 0:
            raise ValueError("instance ids must be >= 0 (0 = background)")
        values = values.astype(np.intp, copy=False)  # intp: gathers by it take numpy's fast path
        top = int(values.max()) if values.size else 0
        if top <= 4 * values.size + 1024:  # dense enough to count by id
            counts = np.bincount(values, minlength=top + 1)
            self.ids = np.flatnonzero(counts)
            self.sizes = counts[self.ids]
            self._pos: np.ndarray | None = self.lookup(self.ids, top + 1)  # id -> position, -1 = absent
            self.index = self._pos[values]
        else:
            self.ids, self.index, self.sizes = np.unique(values, return_inverse=True, return_counts=True)
            self._pos = None
        self._boxes: list | None = None
        self._counts: dict[int, tuple[int, np.ndarray]] = {}
        self._pixels: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}

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
        """Positions in :attr:`ids` of instance ids.

        Parameters
        ----------
        ids : sequence of int
            Instance ids present in the slice.

        Returns
        -------
        (len(ids),) intp array
        """
        return np.searchsorted(self.ids, np.asarray(ids, np.intp))

    def boxes(self) -> list[tuple[slice, slice]]:
        """Bounding boxes of the instances, from their row runs (computed once).

        Returns
        -------
        list of (slice, slice)
            Per instance of :attr:`ids`, its (y, x) extent in pixels, stops exclusive.
        """
        if self._boxes is None:
            self._boxes = _run_boxes(self.fg, self.index, len(self.ids), self.lab.shape)
        return self._boxes

    def counts_under(self, layer: LinkedSlice) -> np.ndarray:
        """Pixels shared by every track of a held slice and every instance: one pass over the foreground,
        cached until ``layer`` changes.

        Parameters
        ----------
        layer : LinkedSlice
            A held slice.

        Returns
        -------
        (len(layer.tracks()), len(ids)) int64 array
            Rows: :meth:`LinkedSlice.tracks`; columns: :attr:`ids`.
        """
        version, counts = self._counts.get(id(layer), (-1, None))
        if version != layer.version:
            tracks = layer.tracks()
            under = layer.labels.ravel()[self.fg].astype(np.intp)
            counts = pair_counts(self, under, tracks, int(tracks[-1]) if len(tracks) else 0)
            self._counts[id(layer)] = (layer.version, counts)
        return counts

    def positions_at(self, pixels: np.ndarray) -> np.ndarray:
        """The instances at some pixels.

        Parameters
        ----------
        pixels : 1D int array
            Flat (raster-order) pixel positions.

        Returns
        -------
        (len(pixels),) intp array
            Position in :attr:`ids` of the instance at each pixel, -1 on background.
        """
        values = self.lab.ravel()[pixels].astype(np.intp, copy=False)
        if self._pos is not None:
            return self._pos[values]
        pos = np.searchsorted(self.ids, values)
        pos[values == 0] = -1
        return pos

    def pixels_of(self, cols: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """The pixels of some instances (cached).

        Parameters
        ----------
        cols : sequence of int
            Distinct instance ids present in the slice.

        Returns
        -------
        1D intp array
            Flat (raster-order) positions of their pixels.
        1D intp array
            Per pixel, the index in ``cols`` of its instance.
        """
        key = tuple(cols)
        if key not in self._pixels:
            col_of = np.full(len(self.ids), -1, np.intp)
            col_of[self.positions(cols)] = np.arange(len(cols))
            c = col_of[self.index]
            self._pixels[key] = (self.fg[c >= 0], c[c >= 0])
        return self._pixels[key]

    def overlap(self, layer: LinkedSlice, rows: Sequence[int], cols: Sequence[int]) -> np.ndarray:
        """Pixels shared by tracks ``rows`` of ``layer`` (present there) and instances ``cols`` of this slice.

        Counted over the whole foreground once per ``layer`` (:meth:`counts_under`), unless that is not
        counted yet and the rows or the columns are few: then over their pixels only.

        Parameters
        ----------
        layer : LinkedSlice
            A held slice.
        rows : sequence of int
            Distinct track ids present in ``layer``.
        cols : sequence of int
            Distinct instance ids present in this slice.

        Returns
        -------
        (len(rows), len(cols)) int64 array
        """
        cached = self._counts.get(id(layer), (-1, None))[0] == layer.version
        if not cached and 4 * len(cols) <= len(self.ids):
            return self._counts_at_cols(layer, rows, cols)
        if not cached and 4 * len(rows) <= len(layer.tracks()):
            return self._counts_at_rows(layer, rows, cols)
        counts = self.counts_under(layer)
        if len(rows) != counts.shape[0]:
            counts = counts[np.searchsorted(layer.tracks(), np.asarray(rows, np.intp))]
        if len(cols) != counts.shape[1]:
            counts = counts[:, self.positions(cols)]
        return counts

    def _counts_at_cols(self, layer: LinkedSlice, rows: Sequence[int], cols: Sequence[int]) -> np.ndarray:
        """:meth:`overlap` counted over the pixels of the instances ``cols``."""
        pixels, col = self.pixels_of(cols)
        tracks = layer.tracks()
        row_of = np.full((int(tracks[-1]) if len(tracks) else 0) + 1, len(rows), np.intp)  # spare row
        row_of[np.asarray(rows, np.intp)] = np.arange(len(rows))
        row = row_of[layer.labels.ravel()[pixels]]
        counts = np.bincount(row * len(cols) + col, minlength=(len(rows) + 1) * len(cols))
        return counts[: len(rows) * len(cols)].reshape(len(rows), len(cols)).astype(np.int64, copy=False)

    def _counts_at_rows(self, layer: LinkedSlice, rows: Sequence[int], cols: Sequence[int]) -> np.ndarray:
        """:meth:`overlap` counted over the pixels of the tracks ``rows`` of ``layer``."""
        pixels, row = layer.pixels_of(rows)
        nc = len(cols)
        col = self.positions_at(pixels)  # -1 on background
        if nc != len(self.ids):  # some instances only: the others to the spare column -1 too
            col_of = np.full(len(self.ids) + 1, -1, np.intp)
            col_of[self.positions(cols)] = np.arange(nc)
            col = col_of[col]
        counts = np.bincount(row * (nc + 1) + col + 1, minlength=len(rows) * (nc + 1))
        return counts.reshape(len(rows), nc + 1)[:, 1:].astype(np.int64, copy=False)


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
    row_of = np.full(top + 1, na, np.intp)  # labels not in rows (and background) go to a spare row
    row_of[rows] = np.arange(na)
    counts = np.bincount(row_of[under] * nb + index.index, minlength=(na + 1) * nb)
    return counts[: na * nb].reshape(na, nb).astype(np.int64, copy=False)


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
    """A linked slice held for gap closing: track ids with per-track pixel counts and boxes kept up to date.

    Parameters
    ----------
    z : int
        Slice index.
    labels : (y, x) uint32 array
        Track ids, 0 = background; painted in place by :meth:`relabel` and :meth:`paint`.
    sizes : dict
        Track id -> its pixels in ``labels`` (tracks present only).
    boxes : dict
        Track id -> a box (y, x slices) holding all its pixels.

    Attributes
    ----------
    version : int
        Incremented on every change of ``labels``.
    """

    def __init__(self, z: int, labels: np.ndarray, sizes: dict[int, int], boxes: dict[int, tuple[slice, slice]]):
        self.z = z
        self.labels = labels
        self.sizes = sizes
        self.boxes = boxes
        self.version = 0
        self._tracks: tuple[int, np.ndarray] = (-1, np.zeros(0, np.intp))
        self._pixels: tuple = (None, None)

    def tracks(self) -> np.ndarray:
        """The track ids present.

        Returns
        -------
        1D intp array
            Ascending.
        """
        if self._tracks[0] != self.version:
            self._tracks = (self.version, np.array(sorted(self.sizes), np.intp))
        return self._tracks[1]

    def pixels_of(self, rows: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """The pixels of some tracks, found in their boxes (cached until the slice changes).

        Parameters
        ----------
        rows : sequence of int
            Distinct track ids present in the slice.

        Returns
        -------
        1D intp array
            Flat (raster-order) positions of their pixels.
        1D intp array
            Per pixel, the index in ``rows`` of its track.
        """
        key = (self.version, tuple(rows))
        if self._pixels[0] != key:
            parts, index = [np.zeros(0, np.intp)], [np.zeros(0, np.intp)]
            for k, r in enumerate(rows):
                box = self.boxes[r]
                ys, xs = np.nonzero(self.labels[box] == r)
                parts.append((ys + box[0].start) * self.labels.shape[1] + xs + box[1].start)
                index.append(np.full(len(ys), k, np.intp))
            self._pixels = (key, (np.concatenate(parts), np.concatenate(index)))
        return self._pixels[1]

    def relabel(self, old: int, new: int) -> None:
        """Give the pixels of one track to another.

        Parameters
        ----------
        old, new : int
            Track ids; nothing happens when ``old`` is absent or equals ``new``.
        """
        if old == new or old not in self.sizes:
            return
        box = self.boxes.pop(old)
        self.labels[box][self.labels[box] == old] = new
        self.sizes[new] = self.sizes.get(new, 0) + self.sizes.pop(old)
        self.boxes[new] = _union(self.boxes.get(new), box)
        self.version += 1

    def paint(self, track: int, box: tuple[slice, slice], mask: np.ndarray) -> dict[int, int]:
        """Paint a track into pixels of a crop (background, or another track's that it takes over).

        Parameters
        ----------
        track : int
            Track id.
        box : (slice, slice)
            A (y, x) crop of the slice.
        mask : bool array, the shape of the crop
            The pixels to paint.

        Returns
        -------
        dict
            Track id -> pixels taken from it (other tracks only; their sizes here are reduced).
        """
        n = int(np.count_nonzero(mask))
        if n == 0:
            return {}
        crop = self.labels[box]
        ids, counts = np.unique(crop[mask], return_counts=True)
        taken = {int(i): int(c) for i, c in zip(ids, counts) if i != 0 and i != track}
        for i, c in taken.items():
            self.sizes[i] -= c
            if self.sizes[i] == 0:
                del self.sizes[i], self.boxes[i]
        crop[mask] = track
        self.sizes[track] = self.sizes.get(track, 0) + n - int(counts[ids == track].sum())
        self.boxes[track] = _union(self.boxes.get(track), box)
        self.version += 1
        return taken


def _union(a: tuple[slice, slice] | None, b: tuple[slice, slice]) -> tuple[slice, slice]:
    if a is None:
        return b
    return (slice(min(a[0].start, b[0].start), max(a[0].stop, b[0].stop)),
            slice(min(a[1].start, b[1].start), max(a[1].stop, b[1].stop)))
