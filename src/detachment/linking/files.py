"""File front end: link a per-slice HDF5 file into a 3D particle file and its per-particle table."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
from scipy import ndimage

from .. import io
from .baselines import stitch_greedy
from .linker import link_slices
from .settings import LinkSettings
from .tracks import TABLE_COLUMNS


def _slices_from(path, dataset: str, slab: int) -> Iterator[np.ndarray]:
    with h5py.File(path, "r") as f:
        d = f[dataset]
        for z0, z1 in io.slab_ranges(d.shape[0], slab):
            yield from d[z0:z1]


def write_linked(path, linked: Iterator[np.ndarray], shape, voxel_size_um, slab: int) -> None:
    """Stream linked slices into ``path`` (``/labels`` uint32, chunked by slice), atomically.

    Parameters
    ----------
    path : path-like
        Output HDF5 file.
    linked : iterator of (y, x) int arrays
        The slices in z order, 3D ids.
    shape : (z, y, x) tuple of int
        Shape of the volume (voxels).
    voxel_size_um : sequence of 3 floats
        Voxel size (z, y, x) in µm, stored as the dataset's ``voxel_size_um`` attribute.
    slab : int
        Slices written at a time.
    """
    with io.atomic_output(path) as tmp, h5py.File(tmp, "w") as f:
        d = f.create_dataset("labels", shape=shape, dtype=np.uint32, chunks=io.slab_chunks(shape),
                             compression="gzip", compression_opts=1)
        d.attrs["voxel_size_um"] = np.asarray(voxel_size_um, float)
        buf = []
        z0 = 0
        for sl in linked:
            buf.append(sl)
            if len(buf) == slab:
                d[z0:z0 + slab] = np.stack(buf)
                z0 += slab
                buf = []
        if buf:
            d[z0:z0 + len(buf)] = np.stack(buf)


def finalize(path, out_path, tracks_table: pd.DataFrame, min_voxels: int, slab: int, min_score: float = 0.0,
             aliases: np.ndarray | None = None) -> pd.DataFrame:
    """Drop small and unconfident particles, renumber 1..n in order of first appearance, stream to ``out_path``.

    Adds per particle ``touches_border`` (any face of the volume: statistics biased) and ``connected_6``
    (its voxels form one 6-connected component; else it is flagged).

    Parameters
    ----------
    path : path-like
        HDF5 file whose ``/labels`` (z, y, x) holds track ids.
    out_path : path-like
        Output HDF5 file (``/labels``, particle ids 1..n, 0 = background).
    tracks_table : pandas.DataFrame
        Per track, the columns of :data:`detachment.linking.tracks.TABLE_COLUMNS` (``max_score`` optional).
    min_voxels : int
        Particles with fewer voxels are dropped.
    slab : int
        Slices read and written at a time.
    min_score : float
        Particles whose best instance scores under this are dropped (NaN = no score: kept).
    aliases : (n_tracks + 1,) int array, optional
        Track id -> the track it was merged into (:meth:`SliceLinker.aliases`); ``tracks_table`` then
        holds only the tracks merged into.

    Returns
    -------
    pandas.DataFrame
        One row per particle kept: ``label`` then the table's columns but ``track``, ``connected_6``
        and ``touches_border``.
    """
    low = tracks_table.max_score < min_score if "max_score" in tracks_table else False
    # sorted: a track that other tracks were merged into may have been started after them
    keep = tracks_table[(tracks_table.voxels >= min_voxels) & ~low].sort_values(["z_min", "track"], kind="stable")
    top = max(int(tracks_table.track.max()) if len(tracks_table) else 0,
              int(aliases.max()) if aliases is not None and len(aliases) else 0)
    lut = np.zeros(top + 1, np.uint32)
    lut[keep.track.to_numpy()] = np.arange(1, len(keep) + 1, dtype=np.uint32)
    if aliases is not None:
        lut = lut[aliases]
    keep.insert(0, "label", np.arange(1, len(keep) + 1))
    with h5py.File(path, "r") as f:
        shape = f["labels"].shape
        voxel = f["labels"].attrs["voxel_size_um"]
    write_linked(out_path, (lut[s] for s in _slices_from(path, "labels", slab)), shape, voxel, slab)
    conn = []
    with h5py.File(out_path, "r") as f:
        d = f["labels"]
        for row in keep.itertuples():
            crop = d[row.z_min:row.z_max + 1, row.y_min:row.y_max, row.x_min:row.x_max] == row.label
            conn.append(ndimage.label(crop)[1] == 1)
    keep["connected_6"] = conn
    keep["touches_border"] = ((keep.z_min == 0) | (keep.z_max == shape[0] - 1) | (keep.y_min == 0)
                              | (keep.x_min == 0) | (keep.y_max == shape[1]) | (keep.x_max == shape[2]))
    return keep.drop(columns="track").reset_index(drop=True)


def slice_scores(table: pd.DataFrame, depth: int) -> list[np.ndarray]:
    """Per-slice detection scores from a per-instance table.

    Parameters
    ----------
    table : pandas.DataFrame
        Columns ``z`` (slice index), ``label`` (instance id) and ``score``.
    depth : int
        Number of slices.

    Returns
    -------
    list of 1D float arrays
        Per slice, scores indexed by instance id (NaN where no row).
    """
    out = []
    by_z = {z: g for z, g in table.groupby("z")} if len(table) else {}
    for z in range(depth):
        g = by_z.get(z)
        a = np.full(int(g.label.max()) + 1 if g is not None else 1, np.nan)
        if g is not None:
            a[g.label.to_numpy(int)] = g.score.to_numpy(float)
        out.append(a)
    return out


def read_candidates(slices_path) -> tuple[str, list[np.ndarray] | None]:
    """Which dataset of a per-slice file to link, and its per-slice scores.

    Parameters
    ----------
    slices_path : path-like
        Per-slice HDF5 file (``/labels``; ``/candidates`` and ``/table`` when inference kept candidates).

    Returns
    -------
    str
        ``"candidates"`` when the file has candidates and their table, else ``"labels"``.
    list of 1D float arrays or None
        Per slice, candidate scores indexed by instance id (:func:`slice_scores`); None for ``"labels"``.
    """
    with h5py.File(slices_path, "r") as f:
        if "candidates" not in f or "table" not in f:
            return "labels", None
        cols = str(f["table"].attrs["columns"]).split(",")
        table = pd.DataFrame(f["table"][...], columns=cols)
        depth = f["candidates"].shape[0]
    return "candidates", slice_scores(table, depth)


def link_file(slices_path, out_path, s: LinkSettings, method: str = "hungarian", greedy_threshold: float = 0.25
              ) -> pd.DataFrame:
    """Link a per-slice file into 3D particles at ``out_path``.

    Links ``/candidates`` with their scores (hysteresis, ``s.min_track_score``) when the file has them,
    else ``/labels``.

    Parameters
    ----------
    slices_path : path-like
        Per-slice HDF5 file (see :func:`read_candidates`).
    out_path : path-like
        Output HDF5 file (``/labels`` (z, y, x) uint32, particle ids 1..n, 0 = background).
    s : LinkSettings
        The linking settings.
    method : {"hungarian", "greedy"}
        The linker; the greedy baseline links ``/labels`` without hysteresis.
    greedy_threshold : float
        IoU threshold of the greedy baseline.

    Returns
    -------
    pandas.DataFrame
        The per-particle table of :func:`finalize`.

    Raises
    ------
    ValueError
        When ``method`` is neither.
    """
    dataset, scores = read_candidates(slices_path) if method == "hungarian" else ("labels", None)
    with h5py.File(slices_path, "r") as f:
        shape = f[dataset].shape
        voxel = f["labels"].attrs.get("voxel_size_um", np.ones(3))
    raw = _slices_from(slices_path, dataset, s.slab)
    out_path = Path(out_path)
    tmp_path = out_path.with_name(f".{out_path.name}.unfiltered")
    if method == "hungarian":
        linked, linker = link_slices(raw, s, scores)
        write_linked(tmp_path, linked, shape, voxel, s.slab)
        table, aliases = linker.book.table(), linker.aliases()
    elif method == "greedy":
        write_linked(tmp_path, stitch_greedy(raw, greedy_threshold), shape, voxel, s.slab)
        table, aliases = pd.DataFrame(_bbox_rows(tmp_path, s.slab), columns=TABLE_COLUMNS), None
    else:
        raise ValueError(f"linking method {method!r} is not 'hungarian' or 'greedy'")
    try:
        return finalize(tmp_path, out_path, table, s.min_voxels, s.slab, s.min_track_score, aliases)
    finally:
        tmp_path.unlink(missing_ok=True)


def _bbox_rows(path, slab: int) -> list[dict]:
    """Per-label bounding boxes and sizes of a 3D label file, streamed."""
    acc: dict[int, dict] = {}
    z = 0
    for sl in _slices_from(path, "labels", slab):
        if sl.any():
            counts = np.bincount(sl.ravel())
            for lab, o in enumerate(ndimage.find_objects(sl), start=1):
                if o is None:
                    continue
                r = acc.setdefault(lab, {"track": lab, "z_min": z, "z_max": z, "y_min": o[0].start,
                                         "y_max": o[0].stop, "x_min": o[1].start, "x_max": o[1].stop, "voxels": 0,
                                         "mean_link_iou": np.nan, "gaps_bridged": 0})
                r["z_max"] = z
                r["y_min"], r["y_max"] = min(r["y_min"], o[0].start), max(r["y_max"], o[0].stop)
                r["x_min"], r["x_max"] = min(r["x_min"], o[1].start), max(r["x_max"], o[1].stop)
                r["voxels"] += int(counts[lab])
        z += 1
    return [acc[k] for k in sorted(acc)]
