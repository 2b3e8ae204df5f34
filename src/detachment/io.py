"""Reading, validating and atomically writing volumes, label images and tables.

Contract (docs/outputs.md): a volume file is HDF5 with dataset ``/volume`` (float32, axes z, y, x,
chunked by slab) and attributes ``voxel_size_um`` (3 floats, z, y, x) and ``source``. Label volumes
are ``/labels`` (uint32, 0 = background), phase maps ``/phases`` (uint8, codes in
:mod:`detachment.phases`). Every writer goes through :func:`atomic_output`, so a killed job never
leaves a file that looks finished.

Main entry points: :func:`import_volume`, :func:`read_volume_info`, :func:`read_volume`,
:func:`iter_volume_slabs`, :func:`write_arrays`, :func:`write_csv`.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np

log = logging.getLogger(__name__)

VOLUME_DATASET = "volume"
#: attribute of ``/volume``: [min, max] of its grey levels as written (a hint; readers verify it)
GREY_RANGE_ATTR = "grey_range"
MIN_INPLANE = 16  # px; smaller slices cannot hold a particle cross-section
MAX_VOXELS = 2**36  # 64 Gi voxels: beyond this something is wrong with the shape


class InputError(ValueError):
    """Bad user input; the message names the file, the field and what is expected."""


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` on success.

    The file is written under a temporary name (``.{name}.tmp-{pid}``) in the destination folder and
    renamed into place only when the ``with`` block completes, so a killed job never leaves a file that
    looks finished. On any exception the temporary file is removed and ``path`` is left as it was (a
    previous complete result stays intact). A writer killed by SIGKILL cannot clean up; its leftovers of
    the same ``path`` are removed on entry (the workflow has one writer per target). The destination
    folder is created if missing.

    Parameters
    ----------
    path : str or os.PathLike
        The final file.

    Yields
    ------
    pathlib.Path
        The temporary path to write to.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # a writer killed by SIGKILL cannot clean up; its leftovers never carry the final name, and the
    # workflow has one writer per target, so stale ones are removed here
    for stale in path.parent.glob(f".{glob.escape(path.name)}.tmp-*"):
        stale.unlink(missing_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def slab_ranges(depth: int, slab: int) -> Iterator[tuple[int, int]]:
    """Consecutive ``(z0, z1)`` half-open ranges of at most ``slab`` slices covering ``[0, depth)``.

    Parameters
    ----------
    depth : int
        Number of z slices of the volume.
    slab : int
        Slices per range; at least 1.

    Yields
    ------
    tuple of int
        ``(z0, z1)``, ``z1`` exclusive; the last range may be shorter.
    """
    for z0 in range(0, depth, max(1, slab)):
        yield z0, min(depth, z0 + slab)


def slab_chunks(shape: tuple[int, ...]) -> tuple[int, ...]:
    """HDF5 chunk shape for a (z, y, x) array: one slice deep, in-plane tiles of at most 256 px.

    Slab-wise reads take whole slices either way; tiles keep a per-particle crop from decompressing
    whole large slices (at 1024² px, a 40 px crop of labels read 4 MiB per slice with 1024 px tiles).

    Parameters
    ----------
    shape : tuple of int
        Array shape, z first.

    Returns
    -------
    tuple of int
        ``(1, min(y, 256), min(x, 256))`` (each axis after the first capped at 256).
    """
    return (1,) + tuple(min(s, 256) for s in shape[1:])


def parse_voxel_size(value, where: str) -> tuple[float, float, float]:
    """Voxel size in µm as (z, y, x) from one number (isotropic) or three.

    Parameters
    ----------
    value : float, str or sequence of float
        One or three edge lengths in µm, z y x; a string may separate them by spaces or commas.
    where : str
        Prefix of the error message (file and field).

    Returns
    -------
    tuple of float
        Voxel edge lengths (z, y, x) in µm.

    Raises
    ------
    InputError
        When ``value`` is not one or three positive finite numbers.
    """
    if isinstance(value, str):
        parts = value.replace(",", " ").split()
        try:
            value = [float(p) for p in parts]
        except ValueError:
            raise InputError(f"{where}: voxel size {value!r} is not a number or three numbers (µm)") from None
    vals = np.atleast_1d(np.asarray(value, dtype=float)).ravel()
    if vals.size == 1:
        vals = np.repeat(vals, 3)
    if vals.size != 3 or not np.all(np.isfinite(vals)) or np.any(vals <= 0):
        raise InputError(f"{where}: voxel size must be one or three positive finite numbers (µm, z y x), got {value!r}")
    return tuple(float(v) for v in vals)


def check_volume_dtype(dtype: np.dtype, where: str) -> None:
    """Accept real integer or floating voxels; refuse bool, complex and others.

    Parameters
    ----------
    dtype : numpy.dtype or dtype-like
        Voxel type of the volume.
    where : str
        Prefix of the error message (the file).

    Raises
    ------
    InputError
        When the type is not a signed or unsigned integer or a float.
    """
    if np.dtype(dtype).kind not in "iuf":
        raise InputError(f"{where}: voxel type {np.dtype(dtype)} is not a real number type (expected integer or float)")


def check_volume_shape(shape: tuple[int, ...], where: str) -> None:
    """Refuse a volume that is not 3D, too small in-plane or implausibly large.

    Parameters
    ----------
    shape : tuple of int
        Volume shape (z, y, x) in voxels.
    where : str
        Prefix of the error message (the file).

    Raises
    ------
    InputError
        When the shape has other than three axes, no slice, slices under :data:`MIN_INPLANE` px in y or x,
        or more than :data:`MAX_VOXELS` voxels.
    """
    if len(shape) != 3:
        raise InputError(f"{where}: volume has {len(shape)} dimensions {tuple(shape)}; expected 3 (z, y, x)")
    if shape[0] < 1 or shape[1] < MIN_INPLANE or shape[2] < MIN_INPLANE:
        raise InputError(f"{where}: volume shape {tuple(shape)} is too small; slices need at least "
                         f"{MIN_INPLANE}x{MIN_INPLANE} px")
    if int(np.prod(shape, dtype=np.int64)) > MAX_VOXELS:
        raise InputError(f"{where}: volume shape {tuple(shape)} exceeds {MAX_VOXELS} voxels")


class _SlabStats:
    """Running finiteness and range checks over slabs of a volume."""

    def __init__(self, where: str):
        self.where = where
        self.lo = np.inf
        self.hi = -np.inf

    def update(self, slab: np.ndarray, locate) -> None:
        """Refuse non-finite voxels of ``slab``; track min and max.

        ``locate`` maps an index into ``slab`` to the voxel's (axis 0, 1, 2) index in the file.
        """
        finite = np.isfinite(slab)
        if not finite.all():
            i = tuple(np.argwhere(~finite)[0])
            z, y, x = locate(i)
            raise InputError(f"{self.where}: voxel (z={z}, y={y}, x={x}) is {slab[i]}; "
                             f"volumes must be finite (no NaN or Inf)")
        self.lo = min(self.lo, float(slab.min()))
        self.hi = max(self.hi, float(slab.max()))

    def finish(self) -> None:
        """Refuse a constant volume."""
        if not self.hi > self.lo:
            raise InputError(f"{self.where}: volume is constant ({self.lo}); nothing to segment")


def _tiff_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in (".tif", ".tiff"))
    else:
        files = sorted(Path(p) for p in glob.glob(str(path)))
    if not files:
        raise InputError(f"{path}: no TIFF files found")
    return files


class VolumeSource:
    """A (z, y, x) volume to import, read slab by slab without loading it whole.

    Shape and voxel type are read and validated on construction (:func:`check_volume_shape`,
    :func:`check_volume_dtype`); the voxels are read by :meth:`slabs`.

    Parameters
    ----------
    path : str or os.PathLike
        HDF5 file (``.h5``, ``.hdf5``, ``.hdf``), a multi-page TIFF (``.tif``, ``.tiff``), or a folder or
        glob pattern of 2D TIFF slices sorted by name (one slice per file, in order of z).
    dataset : str, optional
        HDF5 dataset name (required for HDF5, ignored for TIFF).

    Attributes
    ----------
    path : pathlib.Path
        The source as given.
    dataset : str or None
        HDF5 dataset name.
    kind : str
        ``"hdf5"`` or ``"tiff"``.
    shape : tuple of int
        (z, y, x) in voxels.
    dtype : numpy.dtype
        Voxel type of the source (slabs are converted to float32).

    Raises
    ------
    InputError
        When the file or dataset is missing, cannot be read, has an unknown suffix, or its shape or voxel
        type is refused.
    """

    def __init__(self, path: str | os.PathLike, dataset: str | None = None):
        self.path = Path(path)
        self.dataset = dataset
        is_pattern = any(c in str(path) for c in "*?[")
        if not is_pattern and not self.path.exists():
            raise InputError(f"{self.path}: volume file does not exist")
        suffix = self.path.suffix.lower()
        self._files: list[Path] | None = None
        if suffix in (".h5", ".hdf5", ".hdf"):
            self.kind = "hdf5"
            if not dataset:
                raise InputError(f"{self.path}: field 'dataset' is required for an HDF5 volume")
            try:
                with h5py.File(self.path, "r") as f:
                    if dataset not in f:
                        raise InputError(f"{self.path}: has no dataset '{dataset}' "
                                         f"(found: {', '.join(sorted(f.keys())) or 'nothing'})")
                    d = f[dataset]
                    if not isinstance(d, h5py.Dataset):
                        raise InputError(f"{self.path}: '{dataset}' is a group, not a dataset")
                    self.shape, self.dtype = tuple(d.shape), d.dtype
            except OSError as e:
                raise InputError(f"{self.path}: cannot be read as HDF5 ({e})") from None
        elif self.path.is_dir() or is_pattern or suffix in (".tif", ".tiff"):
            self.kind = "tiff"
            import tifffile

            files = _tiff_files(self.path) if (self.path.is_dir() or is_pattern) else [self.path]
            try:
                if len(files) == 1:
                    self._tiff = files[0]  # the stack itself, also when a folder or glob holds only it
                    with tifffile.TiffFile(files[0]) as t:
                        series = t.series[0]
                        self.shape, self.dtype = tuple(series.shape), series.dtype
                else:
                    self._files = files
                    first = tifffile.TiffFile(files[0])
                    with first:
                        page = first.pages[0]
                        shape2, self.dtype = tuple(page.shape), page.dtype
                    self.shape = (len(files),) + shape2
            except (tifffile.TiffFileError, OSError, IndexError) as e:
                raise InputError(f"{self.path}: cannot be read as TIFF ({e})") from None
        else:
            raise InputError(f"{self.path}: unknown volume format '{suffix}' (expected .h5/.hdf5, .tif/.tiff "
                             f"or a folder of TIFF slices)")
        check_volume_shape(self.shape, str(self.path))
        check_volume_dtype(self.dtype, str(self.path))

    def slabs(self, slab: int = 16) -> Iterator[tuple[int, np.ndarray]]:
        """Read the volume in order of z, one slab at a time.

        Parameters
        ----------
        slab : int, default 16
            Slices per slab.

        Yields
        ------
        tuple of (int, numpy.ndarray)
            ``(z0, data)``: the first slice index and a (n <= slab, y, x) float32 array of grey levels.

        Raises
        ------
        InputError
            For a folder of TIFF slices, when a slice's shape differs from the first slice's or its type is
            not a real number type.
        """
        for z0, z1 in slab_ranges(self.shape[0], slab):
            yield z0, self.block(0, z0, z1)

    def block(self, axis: int, lo: int, hi: int, dtype=np.float32) -> np.ndarray:
        """Read the file's indices ``[lo, hi)`` along ``axis``, whole along the two other axes.

        HDF5 and uncompressed TIFF read only the block; a compressed multi-page TIFF or a folder of slices
        reads every slice for a block along axis 1 or 2 (memory stays one block).

        Parameters
        ----------
        axis : int
            File axis (0, 1 or 2) of the range.
        lo, hi : int
            Half-open index range along ``axis``.
        dtype : numpy dtype or None, default float32
            Type of the result; None keeps the file's.

        Returns
        -------
        numpy.ndarray
            The block, in the file's axes order.

        Raises
        ------
        InputError
            For a folder of TIFF slices, when a slice's shape differs from the first slice's or its type is
            not a real number type.
        """
        index = tuple(slice(lo, hi) if a == axis else slice(None) for a in range(3))
        if self.kind == "hdf5":
            with h5py.File(self.path, "r") as f:
                return np.asarray(f[self.dataset][index], dtype=dtype)
        import tifffile

        if self._files is None and _is_memmappable(self._tiff):
            return np.asarray(tifffile.memmap(self._tiff, mode="r")[index], dtype=dtype)
        zs = range(lo, hi) if axis == 0 else range(self.shape[0])
        out = np.empty((len(zs),) + tuple(len(range(n)[i]) for n, i in zip(self.shape[1:], index[1:])),
                       dtype or self.dtype)
        if self._files is None:
            with tifffile.TiffFile(self._tiff) as t:
                for i, z in enumerate(zs):
                    out[i] = t.pages[z].asarray()[index[1:]]
            return out
        for i, z in enumerate(zs):
            fname = self._files[z]
            img = tifffile.imread(fname)
            if img.shape != self.shape[1:]:
                raise InputError(f"{fname}: slice shape {img.shape} differs from the first slice "
                                 f"{self.shape[1:]} ({self._files[0].name})")
            check_volume_dtype(img.dtype, str(fname))
            out[i] = img[index[1:]]
        return out


def _is_memmappable(path: Path) -> bool:
    import tifffile

    try:
        tifffile.memmap(path, mode="r")
        return True
    except ValueError:
        return False


def oriented_slabs(source: VolumeSource, orient, slab: int, dtype=np.float32, stage_dir=None
                   ) -> Iterator[tuple[int, np.ndarray]]:
    """Read a file in the internal convention, one output z-slab at a time, without loading it whole.

    A file that cannot be read by blocks across its slices (a folder of TIFF slices, a compressed TIFF)
    whose collector is not on a ``z`` face is first copied, slab by slab, into a temporary HDF5 file in
    ``stage_dir`` (chunked for the transposed reads; removed afterwards), so that it is read once rather
    than once per output slab.

    Parameters
    ----------
    source : VolumeSource
        The file.
    orient : detachment.orientation.Orientation
        Where its collector lies.
    slab : int
        Output slices per slab.
    dtype : numpy dtype or None, default float32
        Type of the slabs; None keeps the file's.
    stage_dir : str or os.PathLike, optional
        Folder of the temporary copy (default: the system's temporary folder).

    Yields
    ------
    tuple of (int, numpy.ndarray)
        ``(z0, data)``: the first output slice and the (n, y, x) slab, contiguous, in output axes.
    """
    import tempfile

    shape = orient.shape(source.shape)
    with contextlib.ExitStack() as stack:
        if _needs_staging(source, orient):
            folder = stack.enter_context(tempfile.TemporaryDirectory(prefix=".stage-", dir=stage_dir))
            source = _stage(source, orient, slab, Path(folder) / "staged.h5")
        for z0, z1 in slab_ranges(shape[0], slab):
            lo, hi = orient.source_range(z0, z1, shape[0])
            yield z0, np.ascontiguousarray(orient.apply(source.block(orient.axis, lo, hi, dtype)))


def _needs_staging(source: VolumeSource, orient) -> bool:
    """A TIFF read by pages (a folder of slices or a compressed stack) and a collector on a y or x face."""
    if orient.axis == 0 or source.kind != "tiff":
        return False
    return source._files is not None or not _is_memmappable(source._tiff)


def _stage(source: VolumeSource, orient, slab: int, path: Path) -> VolumeSource:
    """Copy ``source`` (its own type, file axes) to HDF5 ``path`` by slabs along axis 0; chunks of ``slab``
    along axis 0 and the collector's axis, whole along the third, so both the writes and the reads across
    the slices touch whole chunks."""
    chunks = tuple(min(slab, n) if a in (0, orient.axis) else n for a, n in enumerate(source.shape))
    with h5py.File(path, "w") as f:
        d = f.create_dataset("staged", shape=source.shape, dtype=source.dtype, chunks=chunks)
        for z0, z1 in slab_ranges(source.shape[0], slab):
            d[z0:z1] = source.block(0, z0, z1, dtype=None)
    return VolumeSource(path, "staged")


def _checked_slabs(source: VolumeSource, slab: int) -> Iterator[tuple[int, np.ndarray]]:
    """:meth:`VolumeSource.slabs`, refusing a NaN or Inf voxel (by its position) as it is read."""
    checked = _SlabStats(str(source.path))
    for z0, data in source.slabs(slab):
        checked.update(data, lambda i, z0=z0: (i[0] + z0, i[1], i[2]))
        yield z0, data


def resolve_orientation(source: VolumeSource, collector_side: str, slab: int, where: str):
    """The :class:`~detachment.orientation.Orientation` of a file; ``auto`` reads it once to find the face.

    Parameters
    ----------
    source : VolumeSource
        The volume file.
    collector_side : str
        ``auto`` or one of :data:`detachment.orientation.SIDES`; empty means ``auto``.
    slab : int
        Slices read at a time by ``auto``.
    where : str
        Prefix of error messages (sheet file, sample, field).

    Returns
    -------
    detachment.orientation.Orientation

    Raises
    ------
    InputError
        When the side is not valid, or ``auto`` finds no face or several.
    """
    from detachment import orientation as orient_mod

    side = (collector_side or orient_mod.AUTO).strip()
    try:
        if side == orient_mod.AUTO:
            stats = orient_mod.face_statistics(_checked_slabs(source, slab), source.shape)
            side = orient_mod.detect_collector_side(stats, f"{where} ({source.path})")
            log.info("%s: collector found on face %s", source.path, side)
        return orient_mod.orientation(side, where)
    except InputError:
        raise
    except ValueError as e:
        raise InputError(str(e)) from None


def import_volume(src: str | os.PathLike, out: str | os.PathLike, *, dataset: str | None,
                  voxel_size_um, slab: int = 16, collector_side: str = "z0",
                  where: str = "field 'collector_side'") -> tuple[int, int, int]:
    """Validate a user volume and write it in the project's HDF5 contract, in the internal convention.

    Streams slab by slab (memory ~ one slab): the file is transposed and flipped so that z runs away from
    the current collector (:mod:`detachment.orientation`); the dataset's attributes ``collector_side``,
    ``axes_order`` and ``flipped`` state the transform. Refuses, with a message naming the file and what is
    wrong: a missing file or dataset, a non-3D or too small shape, a non-real dtype, NaN/Inf voxels (their
    position given in the file's axes), a constant volume, a bad voxel size, a bad or undetectable
    collector side.

    Parameters
    ----------
    src : str or os.PathLike
        The user's volume, any format :class:`VolumeSource` reads.
    out : str or os.PathLike
        The contract file to write (``/volume`` float32, z y x), atomically.
    dataset : str or None
        HDF5 dataset name of ``src`` (required for HDF5).
    voxel_size_um : float, str or sequence of float
        Voxel size in µm, one number or three along the file's axes 0, 1, 2; see :func:`parse_voxel_size`.
    slab : int, default 16
        Slices read and written at a time.
    collector_side : str, default "z0"
        File face the collector lies on (:data:`detachment.orientation.SIDES`) or ``auto``.
    where : str, default "field 'collector_side'"
        Prefix of orientation errors (sheet file, sample, field).

    Returns
    -------
    tuple of int
        The volume shape (z, y, x) in voxels, in the internal convention.

    Raises
    ------
    InputError
        When the input is refused (see above).
    """
    source = VolumeSource(src, dataset)
    voxel = parse_voxel_size(voxel_size_um, f"{src}: field 'voxel_size_um'")
    orient = resolve_orientation(source, collector_side, slab, where)
    shape = orient.shape(source.shape)
    stats = _SlabStats(str(src))
    with atomic_output(out) as tmp, h5py.File(tmp, "w") as f:
        d = f.create_dataset(VOLUME_DATASET, shape=shape, dtype=np.float32, chunks=slab_chunks(shape))
        for z0, data in oriented_slabs(source, orient, slab, stage_dir=Path(out).parent):
            stats.update(data, lambda i, z0=z0: orient.source_index((i[0] + z0, i[1], i[2]), source.shape))
            d[z0:z0 + len(data)] = data
        stats.finish()
        d.attrs[GREY_RANGE_ATTR] = np.array([stats.lo, stats.hi])
        d.attrs["voxel_size_um"] = np.asarray(orient.voxel_size(voxel))
        d.attrs["source"] = str(src) + (f":{dataset}" if dataset else "")
        for k, v in orient.attrs().items():
            d.attrs[k] = v
    log.info("imported %s %s (collector %s) -> %s %s", src, source.shape, orient.collector_side, out, shape)
    return shape


def volume_orientation(path: str | os.PathLike):
    """The :class:`~detachment.orientation.Orientation` an imported contract volume was written with.

    Parameters
    ----------
    path : str or os.PathLike
        Contract volume (``/volume``); without a ``collector_side`` attribute (a phantom) it is ``z0``.

    Returns
    -------
    detachment.orientation.Orientation
    """
    from detachment import orientation as orient_mod

    with h5py.File(path, "r") as f:
        side = f[VOLUME_DATASET].attrs.get("collector_side", orient_mod.CONVENTION)
    return orient_mod.orientation(str(side), f"{path}: attribute 'collector_side'")


LABELS_DATASET = "labels"


def import_labels(src: str | os.PathLike, out: str | os.PathLike, *, volume_path: str | os.PathLike,
                  slab: int = 16, where: str = "field 'labels'") -> tuple[int, int, int]:
    """Validate a user's instance labels and write them as ``/labels`` (uint32) in the internal convention.

    The labels are read like a volume (HDF5 dataset ``/labels``, a multi-page TIFF such as napari's or
    Fiji's saved label layer, or a folder / glob of 2D TIFF slices), must have the shape of the file the
    volume was imported from and an integer type (0 = background, unlabelled slices all 0), and are
    transposed and flipped as the volume was (its ``collector_side`` attribute). Streams slab by slab.

    Parameters
    ----------
    src : str or os.PathLike
        The label file, folder or glob.
    out : str or os.PathLike
        The contract file to write, atomically.
    volume_path : str or os.PathLike
        The sample's imported contract volume.
    slab : int, default 16
        Slices read and written at a time.
    where : str, default "field 'labels'"
        Sheet file, sample and field, named in error messages.

    Returns
    -------
    tuple of int
        The label volume's shape (z, y, x) in voxels, the volume's.

    Raises
    ------
    InputError
        A missing file or dataset, a shape other than the volume's file's, a non-integer type, negative ids
        or ids beyond uint32.
    """
    try:
        source = VolumeSource(src, LABELS_DATASET)
    except InputError as e:
        raise InputError(f"{e} ({where})") from None
    if np.dtype(source.dtype).kind not in "iu":
        raise InputError(f"{src}: labels have type {source.dtype}; instance labels must be integers ({where})")
    shape, voxel = read_volume_info(volume_path)
    orient = volume_orientation(volume_path)
    if orient.shape(source.shape) != tuple(shape):
        raise InputError(f"{src}: labels shape {tuple(source.shape)} (file axes) differs from the volume's "
                         f"{orient.source_shape(shape)} ({volume_path}, in its file's axes); {where} must label "
                         f"the volume voxel for voxel")
    with atomic_output(out) as tmp, h5py.File(tmp, "w") as f:
        d = f.create_dataset(LABELS_DATASET, shape=shape, dtype=np.uint32, chunks=slab_chunks(shape),
                             compression="gzip", compression_opts=1)
        for z0, data in oriented_slabs(source, orient, slab, dtype=None, stage_dir=Path(out).parent):
            if data.size and (data.min() < 0 or data.max() > np.iinfo(np.uint32).max):
                raise InputError(f"{src}: label ids must lie in 0..{np.iinfo(np.uint32).max}, found "
                                 f"{data.min()}..{data.max()} ({where})")
            d[z0:z0 + len(data)] = data
        d.attrs["voxel_size_um"] = np.asarray(voxel, float)
        d.attrs["source"] = str(src)
        for k, v in orient.attrs().items():
            d.attrs[k] = v
    log.info("imported labels %s %s -> %s %s", src, source.shape, out, shape)
    return tuple(shape)


def view_regions(key, shape: tuple[int, ...], name: str) -> tuple[list[tuple[int, int]], tuple[int, ...]]:
    """The ``(start, stop)`` each axis of ``shape`` reads for ``key`` (integers and unit-step slices, as a
    volume view such as the grey levels less a shading field or a halo takes them), and the axes an integer
    takes away. ``name`` names the view in the error for a slice with another step."""
    key = key if isinstance(key, tuple) else (key,)
    key = key + (slice(None),) * (len(shape) - len(key))
    regions, squeeze = [], []
    for axis, (k, n) in enumerate(zip(key, shape)):
        if isinstance(k, slice):
            start, stop, step = k.indices(n)
            if step != 1:
                raise IndexError(f"{name}: slice step {step} on axis {axis}; only unit steps")
            regions.append((start, max(start, stop)))
        else:
            i = int(k) % n
            regions.append((i, i + 1))
            squeeze.append(axis)
    return regions, tuple(squeeze)


def write_volume_view(volume_path, out_path, view_of, slab: int = 32) -> None:
    """Write ``view_of(dataset)`` of the volume at ``volume_path`` (a view read by slices along z, e.g. the
    grey levels less a shading field or a halo) to ``out_path`` by the contract (``/volume`` float32 with the
    same attributes and its own grey range), atomically and ``slab`` slices at a time."""
    with h5py.File(volume_path, "r") as fin, atomic_output(out_path) as tmp, h5py.File(tmp, "w") as fout:
        src = fin[VOLUME_DATASET]
        view = view_of(src)
        dst = fout.create_dataset(VOLUME_DATASET, shape=src.shape, dtype=np.float32, chunks=slab_chunks(src.shape))
        lo, hi = np.inf, -np.inf
        for z0, z1 in slab_ranges(src.shape[0], slab):
            part = view[z0:z1]
            dst[z0:z1] = part
            lo, hi = min(lo, float(part.min())), max(hi, float(part.max()))
        dst.attrs.update({k: v for k, v in src.attrs.items()})
        dst.attrs[GREY_RANGE_ATTR] = np.array([lo, hi], float)


def write_volume(path: str | os.PathLike, volume: np.ndarray, voxel_size_um, source: str) -> None:
    """Write a (z, y, x) volume to ``path`` atomically, by the contract (``/volume`` float32).

    Parameters
    ----------
    path : str or os.PathLike
        The HDF5 file to write.
    volume : numpy.ndarray
        (z, y, x) grey levels, any real type (converted to float32).
    voxel_size_um : float, str or sequence of float
        Voxel size in µm, one number or three (z, y, x).
    source : str
        Provenance, stored as the ``source`` attribute.

    Raises
    ------
    InputError
        When the shape or the voxel size is refused.
    """
    volume = np.asarray(volume, dtype=np.float32)
    check_volume_shape(volume.shape, str(path))
    with atomic_output(path) as tmp, h5py.File(tmp, "w") as f:
        d = f.create_dataset(VOLUME_DATASET, data=volume, chunks=slab_chunks(volume.shape))
        if volume.size:
            d.attrs[GREY_RANGE_ATTR] = np.array([volume.min(), volume.max()], float)
        d.attrs["voxel_size_um"] = np.asarray(parse_voxel_size(voxel_size_um, str(path)))
        d.attrs["source"] = source


def read_volume_info(path: str | os.PathLike) -> tuple[tuple[int, int, int], tuple[float, float, float]]:
    """Shape and voxel size of a contract volume file, validated, without reading the voxels.

    Parameters
    ----------
    path : str or os.PathLike
        HDF5 file with dataset ``/volume``.

    Returns
    -------
    shape : tuple of int
        (z, y, x) in voxels.
    voxel_size_um : tuple of float
        Voxel edge lengths (z, y, x) in µm.

    Raises
    ------
    InputError
        When the file is missing or not HDF5, has no ``/volume``, or its shape or ``voxel_size_um``
        attribute is refused.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: volume file does not exist")
    try:
        with h5py.File(path, "r") as f:
            if VOLUME_DATASET not in f:
                raise InputError(f"{path}: has no dataset '/{VOLUME_DATASET}'")
            d = f[VOLUME_DATASET]
            shape = tuple(d.shape)
            check_volume_shape(shape, str(path))
            voxel = parse_voxel_size(d.attrs.get("voxel_size_um", np.nan), f"{path}: attribute 'voxel_size_um'")
    except OSError as e:
        raise InputError(f"{path}: cannot be read as HDF5 ({e})") from None
    return shape, voxel


def read_grey_range(path: str | os.PathLike) -> tuple[float, float] | None:
    """The ``grey_range`` attribute of a contract volume, if it holds two finite increasing numbers.

    It is a hint written with the volume (:func:`write_volume`, :func:`import_volume`): a file changed
    since may hold other grey levels, so a caller that relies on it checks the values it reads.

    Parameters
    ----------
    path : str or os.PathLike
        HDF5 file with dataset ``/volume``.

    Returns
    -------
    tuple of float or None
        ``(min, max)`` grey level, or None where the attribute is absent or malformed.
    """
    with h5py.File(path, "r") as f:
        r = np.asarray(f[VOLUME_DATASET].attrs.get(GREY_RANGE_ATTR, []), dtype=float).ravel()
    if r.size != 2 or not np.all(np.isfinite(r)) or not r[1] > r[0]:
        return None
    return float(r[0]), float(r[1])


def read_volume(path: str | os.PathLike) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Read a whole contract volume and its voxel size.

    Parameters
    ----------
    path : str or os.PathLike
        HDF5 file with dataset ``/volume``.

    Returns
    -------
    volume : numpy.ndarray
        (z, y, x) float32 grey levels.
    voxel_size_um : tuple of float
        Voxel edge lengths (z, y, x) in µm.

    Raises
    ------
    InputError
        As :func:`read_volume_info`.
    """
    _, voxel = read_volume_info(path)
    with h5py.File(path, "r") as f:
        return f[VOLUME_DATASET][...].astype(np.float32, copy=False), voxel


def iter_volume_slabs(path: str | os.PathLike, slab: int, halo: int = 0, buffers: int = 0
                      ) -> Iterator[tuple[int, int, np.ndarray]]:
    """Read a contract volume slab by slab, each slab with ``halo`` extra slices on either side.

    Parameters
    ----------
    path : str or os.PathLike
        HDF5 file with dataset ``/volume``.
    slab : int
        Slices per slab (at least 1).
    halo : int, default 0
        Extra slices read on each side of a slab, clipped to the volume.
    buffers : int, default 0
        Read a float32 volume into this many buffers in turn (no allocation per slab): a slab's
        ``data`` is overwritten ``buffers`` slabs later, so the caller must be done with it by then.
        0 allocates a new array per slab.

    Yields
    ------
    tuple of (int, int, numpy.ndarray)
        ``(z0, z1, data)``: the slab's range ``[z0, z1)`` and float32 (n, y, x) grey levels covering
        ``[max(0, z0 - halo), min(depth, z1 + halo))``.

    Raises
    ------
    InputError
        As :func:`read_volume_info`.
    """
    shape, _ = read_volume_info(path)
    with h5py.File(path, "r") as f:
        d = f[VOLUME_DATASET]
        n = min(shape[0], slab + 2 * halo)
        pool = [np.empty((n,) + shape[1:], np.float32) for _ in range(buffers)] if d.dtype == np.float32 else []
        for i, (z0, z1) in enumerate(slab_ranges(shape[0], slab)):
            a, b = max(0, z0 - halo), min(shape[0], z1 + halo)
            if pool:
                buf = pool[i % len(pool)]
                d.read_direct(buf, np.s_[a:b], np.s_[0:b - a])
                yield z0, z1, buf[: b - a]
            else:
                yield z0, z1, d[a:b].astype(np.float32, copy=False)


def write_arrays(path: str | os.PathLike, arrays: dict[str, np.ndarray], attrs: dict | None = None,
                 voxel_size_um=None) -> None:
    """Write several arrays (labels, phases, ...) to one HDF5 file atomically.

    3D arrays are chunked by slice (:func:`slab_chunks`) and gzip-compressed (level 1); others are stored
    as they are.

    Parameters
    ----------
    path : str or os.PathLike
        The HDF5 file to write.
    arrays : dict of str to numpy.ndarray
        Dataset name to array, e.g. ``{"labels": (z, y, x) uint32}``; dtypes are kept.
    attrs : dict, optional
        File-level attributes.
    voxel_size_um : sequence of float, optional
        Voxel size (z, y, x) in µm, stored as the ``voxel_size_um`` attribute of each 3D dataset (not
        validated).
    """
    with atomic_output(path) as tmp, h5py.File(tmp, "w") as f:
        for name, arr in arrays.items():
            arr = np.asarray(arr)
            kw = {"chunks": slab_chunks(arr.shape), "compression": "gzip", "compression_opts": 1} \
                if arr.ndim == 3 else {}
            d = f.create_dataset(name, data=arr, **kw)
            if voxel_size_um is not None and arr.ndim == 3:
                d.attrs["voxel_size_um"] = np.asarray(voxel_size_um, dtype=float)
        for k, v in (attrs or {}).items():
            f.attrs[k] = v


def read_dataset(path: str | os.PathLike, name: str) -> np.ndarray:
    """Read one whole dataset of an HDF5 file.

    Parameters
    ----------
    path : str or os.PathLike
        HDF5 file.
    name : str
        Dataset name (e.g. ``"labels"``, ``"phases"``).

    Returns
    -------
    numpy.ndarray
        The dataset, in its stored type and shape.

    Raises
    ------
    InputError
        When the file or the dataset does not exist.
    """
    return read_region(path, name, ...)


def read_region(path: str | os.PathLike, name: str, index) -> np.ndarray:
    """Read part of a dataset of an HDF5 file (one slice, a crop), without the rest.

    Parameters
    ----------
    path : str or os.PathLike
        HDF5 file.
    name : str
        Dataset name (e.g. ``"labels"``, ``"phases"``, :data:`VOLUME_DATASET`).
    index : int, slice or tuple of slices
        What to read, in the dataset's axes (e.g. ``z`` for one (y, x) slice of a (z, y, x) volume).

    Returns
    -------
    numpy.ndarray
        The selected part, in the stored type.

    Raises
    ------
    InputError
        When the file or the dataset does not exist.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: file does not exist")
    with h5py.File(path, "r") as f:
        if name not in f:
            raise InputError(f"{path}: has no dataset '/{name}'")
        return f[name][index]


def count_per_slice(path: str | os.PathLike, name: str, slab: int = 16) -> np.ndarray:
    """Non-zero voxels in each z slice of a (z, y, x) dataset, read slab by slab.

    Parameters
    ----------
    path : str or os.PathLike
        HDF5 file.
    name : str
        Dataset name (e.g. ``"labels"``).
    slab : int
        Slices read at once.

    Returns
    -------
    (z,) int64 array
        Count of non-zero voxels per slice.
    """
    with h5py.File(path, "r") as f:
        d = f[name]
        return np.concatenate([(d[z0:z1] > 0).sum(axis=(1, 2)) for z0, z1 in slab_ranges(d.shape[0], slab)])


def write_csv(path: str | os.PathLike, table) -> None:
    """Write a table to CSV atomically, without the index column.

    Parameters
    ----------
    path : str or os.PathLike
        The CSV file to write.
    table : pandas.DataFrame
        The table.
    """
    with atomic_output(path) as tmp:
        table.to_csv(tmp, index=False)


def save_figure(fig, path: str | os.PathLike, dpi: int = 120) -> None:
    """Save a matplotlib figure atomically as PNG and close it.

    Parameters
    ----------
    fig : matplotlib.figure.Figure
        The figure; closed afterwards.
    path : str or os.PathLike
        The file to write (PNG whatever its suffix).
    dpi : int, default 120
        Resolution in dots per inch.
    """
    import matplotlib.pyplot as plt

    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png", bbox_inches="tight")
    plt.close(fig)


def particle_crop(row, shape, pad: int) -> tuple[slice, slice, slice]:
    """Bounding box of one ``links.csv`` row, grown by ``pad`` voxels and clipped to the volume.

    Parameters
    ----------
    row : namedtuple or pandas.Series
        A row with ``z_min``, ``z_max`` (inclusive), ``y_min``, ``y_max``, ``x_min``, ``x_max``
        (``y_max``/``x_max`` exclusive), in voxel indices.
    shape : tuple of int
        Volume shape (z, y, x) in voxels.
    pad : int
        Margin added on every side, in voxels.

    Returns
    -------
    tuple of slice
        (z, y, x) slices of the crop.
    """
    lo = (row.z_min - pad, row.y_min - pad, row.x_min - pad)
    hi = (row.z_max + 1 + pad, row.y_max + pad, row.x_max + pad)
    return tuple(slice(max(0, a), min(n, b)) for a, b, n in zip(lo, hi, shape))


def scatter_part(item: str) -> tuple[int, int]:
    """Parse a Snakemake scatter item ``"k-of-n"``.

    Parameters
    ----------
    item : str
        The scatter item, e.g. ``"2-of-8"``.

    Returns
    -------
    tuple of int
        ``(k, n)`` with 1 <= k <= n.

    Raises
    ------
    ValueError
        When ``item`` is not of the form ``k-of-n`` or k is not in 1..n.
    """
    m = re.fullmatch(r"(\d+)-of-(\d+)", item)
    if not m:
        raise ValueError(f"scatter item {item!r} is not of the form 'k-of-n'")
    k, n = int(m.group(1)), int(m.group(2))
    if not 1 <= k <= n:
        raise ValueError(f"scatter item {item!r}: k must lie in 1..n")
    return k, n


def part_rows(table, item: str):
    """The rows of ``table`` belonging to scatter item ``"k-of-n"``.

    Every n-th row from the (k-1)-th, so the parts of a size-sorted or z-sorted table get a fair share
    of large and small particles.

    Parameters
    ----------
    table : pandas.DataFrame
        The whole table (e.g. ``links.csv``).
    item : str
        Scatter item ``"k-of-n"`` (:func:`scatter_part`).

    Returns
    -------
    pandas.DataFrame
        Rows k-1, k-1+n, k-1+2n, ... of ``table`` (a view keeping the index).

    Raises
    ------
    ValueError
        When ``item`` is malformed.
    """
    k, n = scatter_part(item)
    return table.iloc[k - 1::n]


def gather_tables(paths, key: str = "label"):
    """Concatenate part tables (CSV) and sort them by ``key``; an empty part contributes nothing.

    Parameters
    ----------
    paths : iterable of str or os.PathLike
        The part CSV files.
    key : str, default "label"
        Column to sort by (stable sort); not sorted when the table lacks it.

    Returns
    -------
    pandas.DataFrame
        The rows of every non-empty part, with a fresh index; where every part is empty, the first part
        (its header only), or an empty table with column ``key`` when ``paths`` is empty.
    """
    import pandas as pd

    read = [pd.read_csv(p) for p in paths]
    parts = [t for t in read if len(t)]  # empty parts would turn every column's dtype to object
    table = pd.concat(parts, ignore_index=True) if parts else (read[0] if read else pd.DataFrame(columns=[key]))
    return table.sort_values(key, kind="stable").reset_index(drop=True) if key in table else table
