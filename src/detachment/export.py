"""Export of label volumes (phase map, 3D particles) to files napari and Fiji open: TIFF and OME-Zarr.

Both writers stream a (z, y, x) HDF5 dataset slab by slab (memory ~ one slab) and write atomically (a
temporary name renamed when complete).

* TIFF (:func:`export_tiff`): an ImageJ hyperstack (axes ZYX, ``spacing`` and ``unit`` = µm in the
  ImageJ description, x/y resolution in pixels per µm) when the values fit ImageJ's types (uint8, uint16,
  float32; integer labels of another type whose ids all lie in 0..65535 are written as uint16, values
  unchanged); else a plain BigTIFF of the dataset's type, resolution in pixels per cm.
* OME-Zarr (:func:`export_ome_zarr`): OME-NGFF 0.4, one multiscale level ``0``, axes z, y, x in
  micrometre, a ``scale`` coordinate transformation equal to the voxel size; zarr v2 layout written
  by hand (``.zgroup``, ``.zattrs``, ``0/.zarray``, uncompressed C-order chunks under ``0/z/y/x``, the
  ``/`` dimension separator; edge chunks padded with the fill value 0).

Main entry points: :func:`export_tiff`, :func:`export_ome_zarr`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np

from . import io

IMAGEJ_TYPES = (np.uint8, np.uint16, np.float32)
ZARR_CHUNK = (16, 256, 256)  # voxels (z, y, x), at most


def _dataset_info(path, name) -> tuple[tuple[int, ...], np.dtype, tuple[float, float, float]]:
    path = Path(path)
    if not path.exists():
        raise io.InputError(f"{path}: file does not exist")
    with h5py.File(path, "r") as f:
        if name not in f:
            raise io.InputError(f"{path}: has no dataset '/{name}'")
        d = f[name]
        if d.ndim != 3:
            raise io.InputError(f"{path}: '/{name}' has shape {d.shape}; expected (z, y, x)")
        voxel = io.parse_voxel_size(d.attrs.get("voxel_size_um", np.nan), f"{path}: attribute 'voxel_size_um'")
        return tuple(d.shape), d.dtype, voxel


def _slabs(path, name, slab: int, dtype=None) -> Iterator[np.ndarray]:
    with h5py.File(path, "r") as f:
        d = f[name]
        for z0, z1 in io.slab_ranges(d.shape[0], slab):
            yield d[z0:z1] if dtype is None else d[z0:z1].astype(dtype)


def tiff_type(path, name, slab: int = 16) -> tuple[np.dtype, bool]:
    """The TIFF pixel type of a dataset and whether it can be an ImageJ hyperstack.

    Parameters
    ----------
    path : str or os.PathLike
        HDF5 file.
    name : str
        Dataset name.
    slab : int, default 16
        Slices read at a time when the id range must be checked.

    Returns
    -------
    dtype : numpy.dtype
        The type written: the dataset's, or uint16 for integer labels within 0..65535.
    imagej : bool
        True for an ImageJ hyperstack, False for a plain BigTIFF.
    """
    _, dtype, _ = _dataset_info(path, name)
    if any(dtype == t for t in IMAGEJ_TYPES):
        return np.dtype(dtype), True
    if dtype.kind in "iu":
        ranges = [(int(s.min()), int(s.max())) for s in _slabs(path, name, slab) if s.size]
        if all(lo >= 0 and hi <= np.iinfo(np.uint16).max for lo, hi in ranges):
            return np.dtype(np.uint16), True
    return np.dtype(dtype), False


def export_tiff(path, name: str, out, slab: int = 16) -> np.dtype:
    """Write a (z, y, x) HDF5 dataset as a TIFF stack with its voxel size, slab by slab.

    Parameters
    ----------
    path : str or os.PathLike
        HDF5 file; the dataset carries ``voxel_size_um`` (z, y, x) in µm.
    name : str
        Dataset name, e.g. ``"phases"`` or ``"labels"``.
    out : str or os.PathLike
        The TIFF to write (one page per z slice), atomically.
    slab : int, default 16
        Slices read at a time.

    Returns
    -------
    numpy.dtype
        The pixel type written (:func:`tiff_type`).

    Raises
    ------
    InputError
        When the file or dataset is missing, not 3D, or has no valid ``voxel_size_um``.
    """
    import tifffile

    shape, _, (vz, vy, vx) = _dataset_info(path, name)
    dtype, imagej = tiff_type(path, name, slab)
    pages = (page for s in _slabs(path, name, slab, dtype) for page in s)
    with io.atomic_output(out) as tmp, tifffile.TiffWriter(tmp, imagej=imagej, bigtiff=not imagej) as tif:
        if imagej:
            tif.write(pages, shape=shape, dtype=dtype, resolution=(1 / vx, 1 / vy),
                      metadata={"axes": "ZYX", "spacing": vz, "unit": "um"})
        else:
            tif.write(pages, shape=shape, dtype=dtype, resolution=(1e4 / vx, 1e4 / vy),
                      resolutionunit="CENTIMETER", metadata={"axes": "ZYX", "voxel_size_um": [vz, vy, vx]})
    return dtype


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; it replaces ``path`` when the ``with`` block completes.

    Parameters
    ----------
    path : str or os.PathLike
        The final folder (removed first if it exists when the block completes).

    Yields
    ------
    pathlib.Path
        The temporary folder to fill; removed on any exception.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        shutil.rmtree(path, ignore_errors=True)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def ome_zarr_attrs(name: str, voxel_size_um) -> dict:
    """OME-NGFF 0.4 ``.zattrs`` of a single-level (z, y, x) image in micrometre.

    Parameters
    ----------
    name : str
        Image name.
    voxel_size_um : sequence of float
        Voxel size (z, y, x) in µm: the ``scale`` transformation of level ``0``.

    Returns
    -------
    dict
        ``{"multiscales": [...]}``.
    """
    axes = [{"name": a, "type": "space", "unit": "micrometer"} for a in "zyx"]
    level = {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [float(v) for v in voxel_size_um]}]}
    return {"multiscales": [{"version": "0.4", "name": name, "axes": axes, "datasets": [level]}]}


def export_ome_zarr(path, name: str, out, slab: int | None = None) -> tuple[int, ...]:
    """Write a (z, y, x) HDF5 dataset as a single-level OME-Zarr (0.4, zarr v2, uncompressed), slab by slab.

    Parameters
    ----------
    path : str or os.PathLike
        HDF5 file; the dataset carries ``voxel_size_um`` (z, y, x) in µm.
    name : str
        Dataset name, e.g. ``"phases"`` or ``"labels"``.
    out : str or os.PathLike
        The ``.ome.zarr`` folder to write, atomically.
    slab : int, optional
        Slices read at a time; default the chunk depth (a multiple of it keeps chunks whole).

    Returns
    -------
    tuple of int
        The chunk shape (z, y, x) in voxels.

    Raises
    ------
    InputError
        When the file or dataset is missing, not 3D, or has no valid ``voxel_size_um``.
    """
    shape, dtype, voxel = _dataset_info(path, name)
    chunks = tuple(min(c, n) for c, n in zip(ZARR_CHUNK, shape))
    slab = max(1, (slab or chunks[0]) // chunks[0]) * chunks[0]
    zarray = {"zarr_format": 2, "shape": list(shape), "chunks": list(chunks), "dtype": np.dtype(dtype).str,
              "compressor": None, "fill_value": 0, "order": "C", "filters": None, "dimension_separator": "/"}
    with atomic_directory(out) as tmp:
        (tmp / ".zgroup").write_text(json.dumps({"zarr_format": 2}))
        (tmp / ".zattrs").write_text(json.dumps(ome_zarr_attrs(Path(out).name.split(".")[0], voxel), indent=1))
        (tmp / "0").mkdir()
        (tmp / "0" / ".zarray").write_text(json.dumps(zarray, indent=1))
        for k, data in enumerate(_slabs(path, name, slab)):
            _write_chunks(tmp / "0", data, k * slab // chunks[0], chunks)
    return chunks


def _write_chunks(folder: Path, data: np.ndarray, first: int, chunks: tuple[int, ...]) -> None:
    """Write the chunks of a slab (whole chunks along z, starting at chunk row ``first``), padded to size."""
    cz, cy, cx = chunks
    for i in range(-(-data.shape[0] // cz)):
        for j in range(-(-data.shape[1] // cy)):
            for k in range(-(-data.shape[2] // cx)):
                block = data[i * cz:(i + 1) * cz, j * cy:(j + 1) * cy, k * cx:(k + 1) * cx]
                full = np.zeros(chunks, data.dtype)
                full[: block.shape[0], : block.shape[1], : block.shape[2]] = block
                target = folder / str(first + i) / str(j) / str(k)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(full.tobytes(order="C"))
