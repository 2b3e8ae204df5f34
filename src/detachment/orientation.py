"""Orientation of imported volumes: which face the current collector lies on, and the internal convention.

The pipeline's convention (docs/outputs.md) is axes (z, y, x) with z = 0 at the current collector and z
running away from it. A user's file may hold the collector on any of its six faces: ``z0`` / ``z1`` (the
first / last slice of the file's axis 0), ``y0`` / ``y1`` (axis 1) or ``x0`` / ``x1`` (axis 2). An
:class:`Orientation` maps the file's axes to the convention by one transpose and at most one flip:

* output axis 0 (z) is the file axis normal to the collector face, reversed when the face is the last
  slice (``...1``);
* output axes 1 and 2 (y, x) are the two other file axes in their file order, not reversed.

``auto`` finds the face from the grey levels (:func:`detect_collector_side`): the Al collector is a thin
slab that is bright against the electrolyte and uniform.

Main entry points: :func:`orientation`, :func:`face_statistics`, :func:`detect_collector_side`,
:func:`to_source_layout`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

SIDES = ("z0", "z1", "y0", "y1", "x0", "x1")
AUTO = "auto"
#: convention of phantoms and of files without the column: axis 0 runs away from the collector
CONVENTION = "z0"
FACE_DEPTH = 2  # voxels: layers of each face summarised by face_statistics
MAX_FACE_SPREAD = 0.1  # std of a collector face / the volume's 1-99 % grey range
MIN_FACE_LEVEL = 0.35  # (mean of a collector face - 1 % level) / the 1-99 % grey range
SAMPLE_VOXELS = 2_000_000  # voxels sampled for the volume's grey range


@dataclass(frozen=True)
class Orientation:
    """How a file's axes map to the internal convention (z away from the collector, y, x).

    Parameters
    ----------
    collector_side : str
        The file face the collector lies on, one of :data:`SIDES`.

    Attributes
    ----------
    axis : int
        File axis normal to the collector (becomes output z).
    flipped : bool
        Output z runs opposite to that file axis (the collector is its last slice).
    axes_order : tuple of int
        File axis of each output axis (z, y, x), as in ``numpy.transpose``.
    """

    collector_side: str

    @property
    def axis(self) -> int:
        return "zyx".index(self.collector_side[0])

    @property
    def flipped(self) -> bool:
        return self.collector_side[1] == "1"

    @property
    def axes_order(self) -> tuple[int, int, int]:
        return (self.axis,) + tuple(a for a in range(3) if a != self.axis)

    def shape(self, source_shape) -> tuple[int, int, int]:
        """Output (z, y, x) shape, in voxels, of a file of shape ``source_shape`` (file axes)."""
        return tuple(int(source_shape[a]) for a in self.axes_order)

    def source_shape(self, shape) -> tuple[int, int, int]:
        """File shape (axis 0, 1, 2), in voxels, of an output (z, y, x) shape: the inverse of :meth:`shape`."""
        return tuple(int(shape[k]) for k in np.argsort(self.axes_order))

    def voxel_size(self, source_voxel_um) -> tuple[float, float, float]:
        """Output (z, y, x) voxel size in µm from the voxel size along the file's axes 0, 1, 2."""
        return tuple(float(source_voxel_um[a]) for a in self.axes_order)

    def source_range(self, z0: int, z1: int, depth: int) -> tuple[int, int]:
        """File index range along :attr:`axis` holding output slices ``[z0, z1)``; ``depth`` = output depth."""
        return (depth - z1, depth - z0) if self.flipped else (z0, z1)

    def apply(self, block: np.ndarray) -> np.ndarray:
        """Bring a file block (file axes, whole along the two in-plane axes) to output axes (a view)."""
        out = np.transpose(block, self.axes_order)
        return out[::-1] if self.flipped else out

    def source_index(self, index, source_shape) -> tuple[int, int, int]:
        """File (axis 0, 1, 2) index of the output voxel ``index`` (z, y, x)."""
        src = [0, 0, 0]
        for k, a in enumerate(self.axes_order):
            src[a] = int(index[k])
        if self.flipped:
            src[self.axis] = int(source_shape[self.axis]) - 1 - src[self.axis]
        return tuple(src)

    def attrs(self) -> dict:
        """HDF5 attributes stating the transform: ``collector_side``, ``axes_order``, ``flipped``."""
        return {"collector_side": self.collector_side, "axes_order": np.asarray(self.axes_order, np.int64),
                "flipped": bool(self.flipped)}


def orientation(side: str, where: str) -> Orientation:
    """Validate a collector side and return its :class:`Orientation`.

    Parameters
    ----------
    side : str
        One of :data:`SIDES` (``auto`` must be resolved first, :func:`detect_collector_side`).
    where : str
        Prefix of the error message (sheet file, sample, field).

    Returns
    -------
    Orientation

    Raises
    ------
    ValueError
        When ``side`` is not one of :data:`SIDES`.
    """
    if side not in SIDES:
        raise ValueError(f"{where}: collector side {side!r} is not one of {', '.join(SIDES)}")
    return Orientation(side)


def to_source_layout(array: np.ndarray, side: str) -> np.ndarray:
    """Map an output array (z, y, x; e.g. a phase map) back to the file's axes: the inverse transform.

    Parameters
    ----------
    array : numpy.ndarray
        (z, y, x) array in the internal convention.
    side : str
        The ``collector_side`` attribute of the imported volume.

    Returns
    -------
    numpy.ndarray
        A view of ``array`` with the file's axes 0, 1, 2.
    """
    o = orientation(side, "to_source_layout")
    return np.transpose(array[::-1] if o.flipped else array, np.argsort(o.axes_order))


def face_statistics(slabs: Iterable[tuple[int, np.ndarray]], shape, depth: int = FACE_DEPTH) -> dict:
    """Grey-level mean and spread of the outer ``depth`` layers of each face, against the volume's range.

    One pass over the file's axis-0 slabs (memory ~ one slab plus the four side faces).

    Parameters
    ----------
    slabs : iterable of (int, numpy.ndarray)
        ``(z0, data)`` slabs along the file's axis 0 covering it in order, grey levels (n, y, x).
    shape : tuple of int
        File shape (axis 0, 1, 2) in voxels.
    depth : int, default FACE_DEPTH
        Layers of each face, voxels.

    Returns
    -------
    dict of str to dict
        Per side in :data:`SIDES`: ``level`` ((mean - 1 % level) / (99 % - 1 % level)) and ``spread``
        (standard deviation / (99 % - 1 % level)), both dimensionless.
    """
    n0 = int(shape[0])
    step = max(1, int(np.ceil(np.sqrt(np.prod(shape, dtype=float) / SAMPLE_VOXELS))))
    sums = {s: np.zeros(3) for s in SIDES}  # count, sum, sum of squares
    sample = []

    def add(side, values):
        v = np.asarray(values, np.float64)
        sums[side] += (v.size, v.sum(), np.square(v).sum())

    for z0, data in slabs:
        z1 = z0 + len(data)
        add("z0", data[: max(0, min(depth, z1) - z0)])
        add("z1", data[max(0, n0 - depth - z0):])
        add("y0", data[:, :depth])
        add("y1", data[:, -depth:])
        add("x0", data[:, :, :depth])
        add("x1", data[:, :, -depth:])
        sample.append(np.asarray(data[:, ::step, ::step], np.float64).ravel())
    lo, hi = np.percentile(np.concatenate(sample), [1, 99])
    span = max(hi - lo, np.finfo(float).tiny)
    stats = {}
    for side, (n, s, s2) in sums.items():
        mean = s / n
        stats[side] = {"level": (mean - lo) / span, "spread": np.sqrt(max(s2 / n - mean**2, 0.0)) / span}
    return stats


def detect_collector_side(stats: dict, where: str) -> str:
    """The one face that looks like the Al collector: uniform and bright against the volume's range.

    A face qualifies when its ``spread`` is below :data:`MAX_FACE_SPREAD` and its ``level`` above
    :data:`MIN_FACE_LEVEL` (:func:`face_statistics`): the collector is a uniform slab, the electrolyte
    above the particles is uniform but dark, and the side faces cut through every phase.

    Parameters
    ----------
    stats : dict
        :func:`face_statistics` of the volume.
    where : str
        Prefix of the error message (sheet file, sample, volume file).

    Returns
    -------
    str
        The collector side, one of :data:`SIDES`.

    Raises
    ------
    ValueError
        When no face or several faces qualify; the message lists every face's figures and asks for the
        sheet column ``collector_side``.
    """
    found = [s for s in SIDES if stats[s]["spread"] < MAX_FACE_SPREAD and stats[s]["level"] > MIN_FACE_LEVEL]
    if len(found) == 1:
        return found[0]
    figures = ", ".join(f"{s}: level {stats[s]['level']:.2f} spread {stats[s]['spread']:.3f}" for s in SIDES)
    what = "no face looks like" if not found else f"several faces ({', '.join(found)}) look like"
    raise ValueError(
        f"{where}: collector_side auto: {what} the Al current collector (a uniform bright slab: spread < "
        f"{MAX_FACE_SPREAD}, level > {MIN_FACE_LEVEL} of the 1-99 % grey range; {figures}); set the sheet "
        f"column 'collector_side' to one of {', '.join(SIDES)}"
    )
