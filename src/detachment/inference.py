"""Per-slice Mask R-CNN inference over z-slabs of a volume, and the gathering of slabs.

Two label stacks are written: ``/labels``, the detections scoring at least ``score_threshold`` (the
operating point the comparison reports), and ``/candidates``, every detection scoring at least
``candidate_threshold`` (≤ ``score_threshold``). Painting is by decreasing score, so ``/labels`` is
exactly ``/candidates`` with the low-scoring ids removed. The linker follows particles through the
candidates (hysteresis), so a particle is not cut where the per-slice model was unsure.

Main entry points: :func:`scatter_range`, :func:`infer_slab`, :func:`gather_slabs`;
:func:`record_probe_diameter` for ``infer.rescale: particle_size``.
"""

from __future__ import annotations

import functools
import logging

import h5py
import numpy as np
import pandas as pd
import torch

from . import io
from .cnn.model import select_device
from .cnn.predict import load_model, predict
from .cnn.scale import RESCALE_RANGE, probe_slices, scale_factor, scaled_shape, section_diameters, size_factor
from .cnn.tiles import MIN_OVERLAP_PX, resolve_tile_px, tile_overlap, tile_windows

log = logging.getLogger(__name__)

TABLE_COLUMNS = ["z", "label", "score", "y0", "x0", "y1", "x1", "area_px"]
#: detection score and mask probability of the particle-size probe (the workflow's default operating point)
PROBE_SCORE, PROBE_MASK = 0.6, 0.7
#: side (px, as the model sees it) of the central window of each probe slice that is segmented: one
#: forward pass, and at the default phantom's crowding (~110 sections) under the model's detection cap
#: (150), which a larger window reaches (the cap keeps the best-scoring sections, a biased sample)
PROBE_WINDOW_PX = 192


def scatter_range(item: str, depth: int) -> tuple[int, int]:
    """z range of a Snakemake scatter item over the volume's slices, in near-equal parts.

    Parameters
    ----------
    item : str
        Scatter item ``"k-of-n"``.
    depth : int
        Number of slices of the volume.

    Returns
    -------
    tuple of int
        ``(z0, z1)``, ``z1`` exclusive; empty (``z0 == z1``) when n exceeds ``depth`` for some k.

    Raises
    ------
    ValueError
        When ``item`` is malformed (:func:`detachment.io.scatter_part`).
    """
    k, n = io.scatter_part(item)
    edges = np.linspace(0, depth, n + 1).round().astype(int)
    return int(edges[k - 1]), int(edges[k])


def model_slices(volume, z0: int, z1: int, context: int) -> np.ndarray:
    """Slices ``[z0, z1)`` of a volume as the model takes them.

    Parameters
    ----------
    volume : h5py.Dataset or numpy.ndarray
        (z, y, x) grey levels.
    z0, z1 : int
        Slice range, ``z1`` exclusive.
    context : int
        ``model.context_slices``: 0 for single slices, 1 to add the neighbours.

    Returns
    -------
    numpy.ndarray
        float32 (n, y, x), or with ``context`` (n, 3, y, x) holding slices z-1, z, z+1 (the edge slice
        repeated at the volume's faces).
    """
    if not context:
        return volume[z0:z1].astype(np.float32)
    lo, hi = max(z0 - 1, 0), min(z1 + 1, volume.shape[0])
    block = volume[lo:hi].astype(np.float32)
    z = np.arange(z0, z1)
    return np.stack([block[np.clip(z + k, 0, volume.shape[0] - 1) - lo] for k in (-1, 0, 1)], axis=1)


def infer_slab(volume_path, weights_path, meta_path, z0: int, z1: int, out_path, *, batch_size: int = 4,
               score_threshold: float = 0.5, mask_threshold: float = 0.5, min_visible_fraction: float = 0.5,
               candidate_threshold: float | None = None, device: str = "auto", threads: int = 1,
               progress: bool = True, tta: bool = False, rescale: str = "auto", tile_px="auto",
               max_detections: int | None = None) -> int:
    """Mask R-CNN instances of slices ``[z0, z1)``, written to one slab file atomically.

    Parameters
    ----------
    volume_path, weights_path, meta_path : str or os.PathLike
        The contract grey volume, the model's weights and its JSON metadata
        (:func:`detachment.maskrcnn.load_model`).
    z0, z1 : int
        Slice range, ``z1`` exclusive.
    out_path : str or os.PathLike
        The slab file: ``/labels`` and ``/candidates`` ((z1 - z0, y, x) uint32, ids 1..n per slice by
        decreasing score), ``/table`` (float64, one row of :data:`TABLE_COLUMNS` per candidate, names in the
        file attribute ``columns``) and the attributes ``z0``, ``z1`` and ``score_threshold``.
    batch_size : int, default 4
        Slices per forward pass.
    score_threshold, mask_threshold, min_visible_fraction : float, default 0.5
        Detection score of ``/labels``; mask probability of an instance pixel; mask-level NMS: the least
        share of a detection's mask free of higher-scoring ones (docs/methods.md, Mask R-CNN). All 0-1.
    candidate_threshold : float, optional
        Score (0-1) of ``/candidates``; defaults to, and is capped at, ``score_threshold``.
    device, threads, progress : str, int, bool; default "auto", 1, True
        ``"auto"``, ``"cpu"`` or ``"cuda[:N]"`` (:func:`detachment.maskrcnn.select_device`); CPU threads of
        torch; whether to show a progress bar.
    tta : bool, default False
        Fuse the predictions of the four flips of each slice (four times the compute).
    rescale : {"auto", "particle_size", "off"}, default "auto"
        ``auto``: slices resized by volume / training voxel size, masks mapped back (:func:`_model_at_scale`);
        ``particle_size``: then also by the particles' measured size; ``off``: native scale.
    tile_px : int, "auto" or None, default "auto"
        Largest slice side (px, after rescaling) the model sees whole; larger slices go in overlapping tiles
        (:mod:`detachment.cnn.tiles`; ``auto``: 256 px; None: never).
    max_detections : int, optional
        Most detections a crowded slice or tile is predicted again with (:mod:`detachment.cnn.caps`).

    Returns
    -------
    int
        Number of candidates found (rows of ``/table``).

    Raises
    ------
    detachment.io.InputError
        When the model, the rescale factor or ``tile_px`` is refused.
    """
    low = score_threshold if candidate_threshold is None else min(candidate_threshold, score_threshold)
    model, dev, context, shape, factor, tiling = _model_at_scale(weights_path, meta_path, volume_path, device,
                                                                 threads, rescale, tile_px)
    run = functools.partial(predict, model, device=dev, batch_size=batch_size, score_threshold=low, tta=tta,
                            mask_threshold=mask_threshold, progress=progress, scale=factor,
                            min_visible_fraction=min_visible_fraction, max_detections=max_detections, **tiling)
    with io.atomic_output(out_path) as tmp, h5py.File(tmp, "w") as out, h5py.File(volume_path, "r") as f:
        table = _infer_chunks(run, f[io.VOLUME_DATASET], out, (z0, z1), shape, context, max(batch_size, 16),
                              score_threshold)
    return len(table)


def _infer_chunks(run, volume, out, zs: tuple[int, int], shape, context: int, chunk: int,
                  score_threshold: float) -> pd.DataFrame:
    """Predict slices ``[z0, z1)`` of ``volume`` ``chunk`` at a time with ``run`` (:func:`predict` bound to
    the model and settings) into the slab file ``out`` (:func:`infer_slab`); its table."""
    z0, z1 = zs
    d, dc = _label_stacks(out, z0, z1, shape)
    rows = []
    for a, b in io.slab_ranges(z1 - z0, chunk):
        cand, r = run(model_slices(volume, z0 + a, z0 + b, context), first_z=z0 + a)
        dc[a:b] = cand
        d[a:b] = _detections(cand, r, score_threshold)
        rows += [{"z": z0 + a + row.pop("index"), **row} for row in r]
    table = _write_table(out, rows, z0, z1, score_threshold)
    log.info("slab [%d, %d): %d candidates, %d detections", z0, z1, len(table),
             int((table.score >= score_threshold).sum()))
    return table


def _model_at_scale(weights_path, meta_path, volume_path, device: str, threads: int, rescale: str,
                    tile_px=None) -> tuple:
    """The model on its device, its context slices, the volume's shape, the (y, x) resize factor of its
    slices for the model (by voxel size, :func:`detachment.cnn.scale.scale_factor`; with ``particle_size``
    also by the particles' measured size, :func:`_size_corrected`) and the tiling (:func:`_tiling`),
    logged; InputError when the model, the factor or the tile side is refused."""
    torch.set_num_threads(max(1, threads))
    dev = select_device(device)
    model, meta = load_model(weights_path, meta_path, dev)
    shape, voxel = io.read_volume_info(volume_path)
    factor = scale_factor(voxel, meta, rescale, where=str(volume_path))
    if rescale == "particle_size":
        factor = _size_corrected(model, dev, meta, volume_path, factor)
    log.info("%s: slices resized by (y, x) %s for the model (voxel size %s µm, training %s µm)", volume_path,
             factor, list(voxel[1:]), (meta.get("scale") or {}).get("voxel_size_um"))
    tiling = _tiling(tile_px, meta, shape, factor, str(volume_path))
    return model, dev, int(meta["model"].get("context_slices", 0)), shape, factor, tiling


def probe_sections(model, dev, meta: dict, volume_path, factor: tuple[float, float]) -> tuple[float, int]:
    """Median equivalent diameter (px, at the model's input scale) and number of the particle sections the
    model finds on the volume's probe slices (:func:`detachment.cnn.scale.probe_slices`): their central
    window of :data:`PROBE_WINDOW_PX` px as the model sees it, segmented at ``factor`` without flips at the
    workflow's default thresholds."""
    context = int(meta["model"].get("context_slices", 0))
    shape, _ = io.read_volume_info(volume_path)
    # the central window of each slice the model sees whole: enough sections, one forward pass per slice
    side = [min(n, max(1, int(PROBE_WINDOW_PX / f))) for n, f in zip(shape[1:], factor)]
    window = tuple(slice((n - s) // 2, (n - s) // 2 + s) for n, s in zip(shape[1:], side))
    with h5py.File(volume_path, "r") as f:
        volume = f[io.VOLUME_DATASET]
        images = np.concatenate([model_slices(volume, z, z + 1, context) for z in probe_slices(volume)])
    images = images[(Ellipsis,) + window]
    tiling = _tiling("auto", meta, (len(images),) + images.shape[-2:], factor, str(volume_path))
    labels, _ = predict(model, images, dev, batch_size=2, score_threshold=PROBE_SCORE, mask_threshold=PROBE_MASK,
                        scale=factor, **tiling)
    d = section_diameters(labels)
    return (float(np.median(d)) * float(np.mean(factor)) if len(d) else float("nan")), int(len(d))


def record_probe_diameter(weights_path, meta_path, volume_paths, device: str = "cpu", threads: int = 1) -> float:
    """Write the training volumes' probe measurement into a model's metadata (``scale.probe_diameter_px``).

    Each volume's probe sections (:func:`probe_sections`, at its voxel-size factor) are measured with the
    trained model; the median over the volumes is recorded, so ``infer.rescale: particle_size`` compares
    like with like. The metadata file is replaced atomically.

    Parameters
    ----------
    weights_path, meta_path : str or os.PathLike
        The trained model.
    volume_paths : sequence of str or os.PathLike
        Its training volumes.
    device : str, default "cpu"
    threads : int, default 1

    Returns
    -------
    float
        The recorded diameter, px (NaN where no section was found).
    """
    import json
    from pathlib import Path

    torch.set_num_threads(max(1, threads))
    dev = select_device(device)
    model, meta = load_model(weights_path, meta_path, dev)
    seen = []
    for v in volume_paths:
        _, voxel = io.read_volume_info(v)
        d, n = probe_sections(model, dev, meta, v, scale_factor(voxel, meta, "auto", where=str(v)))
        log.info("%s: probe sections %.1f px (median of %d)", v, d, n)
        seen.append(d)
    value = float(np.nanmedian(seen)) if np.isfinite(seen).any() else float("nan")
    meta.setdefault("scale", {})["probe_diameter_px"] = value
    with io.atomic_output(meta_path) as tmp:
        Path(tmp).write_text(json.dumps(meta, indent=2, default=float))
    return value


def _size_corrected(model, dev, meta: dict, volume_path, factor: tuple[float, float]) -> tuple[float, float]:
    """``factor`` times the particle-size factor of the volume (:func:`probe_sections`,
    :func:`detachment.cnn.scale.size_factor`); InputError where the product leaves the accepted range."""
    seen, n = probe_sections(model, dev, meta, volume_path, factor)
    size = size_factor(seen, n, meta, where=str(volume_path))
    out = (factor[0] * size, factor[1] * size)
    lo, hi = RESCALE_RANGE
    if not all(lo <= f <= hi for f in out):
        raise io.InputError(f"{volume_path}: the particles' size needs a rescale factor {np.round(out, 3).tolist()}, "
                            f"outside [{lo}, {hi}]; set infer.rescale: auto to rescale by voxel size only")
    return out


def _tiling(tile_px, meta: dict, shape, factor, where: str) -> dict:
    """``tile_px`` and ``overlap_px`` of :func:`detachment.cnn.predict.predict` for a volume's slices, the
    decision logged; InputError for a ``tile_px`` that is not one or under twice the overlap."""
    try:
        tile = resolve_tile_px(tile_px)
        overlap = tile_overlap(meta)
        tiles = tile_windows(tuple(shape[1:]), factor, tile, overlap)
    except ValueError as e:
        raise io.InputError(f"{where}: {e}") from None
    seen = scaled_shape(tuple(shape[1:]), factor)
    if tiles is None:
        log.info("%s: whole slices of %s px as the model sees them (infer.tile_px %s)", where, list(seen), tile)
    else:
        t = tiles[0]
        log.info("%s: slices of %s px as the model sees them, predicted in %d tiles of %d x %d slice px "
                 "(infer.tile_px %d, overlap %d px of the model's input: 2 x the training particle diameter "
                 "%s px, at least %d)", where, list(seen), len(tiles), t.y1 - t.y0, t.x1 - t.x0, tile, overlap,
                 _rounded((meta.get("scale") or {}).get("particle_diameter_px")), MIN_OVERLAP_PX)
    return {"tile_px": tile, "overlap_px": overlap}


def _rounded(value, digits: int = 1):
    """``value`` rounded for a message; None stays None."""
    return None if value is None else round(float(value), digits)


def _label_stacks(out, z0: int, z1: int, shape) -> tuple:
    """Create a slab file's ``/labels`` and ``/candidates``: (z1 - z0, y, x) uint32, one chunk per slice."""
    kw = {"chunks": (1,) + tuple(shape[1:]), "compression": "gzip", "compression_opts": 1} if z1 > z0 else {}
    d = out.create_dataset("labels", shape=(z1 - z0,) + tuple(shape[1:]), dtype=np.uint32, **kw)
    dc = out.create_dataset("candidates", shape=(z1 - z0,) + tuple(shape[1:]), dtype=np.uint32, **kw)
    return d, dc


def _detections(cand: np.ndarray, rows: list[dict], score_threshold: float) -> np.ndarray:
    """The candidates ``cand`` (n, y, x) with only the detections (score ≥ ``score_threshold``) kept.

    ``rows`` are :func:`detachment.cnn.predict.predict`'s, with ``index`` the slice in ``cand``. Ids are
    1..n by decreasing score in each slice: the detections are the first k of them.
    """
    n_det = np.zeros(len(cand), np.int64)
    for row in rows:
        if row["score"] >= score_threshold:
            n_det[row["index"]] = max(n_det[row["index"]], row["label"])
    return np.where(cand <= n_det[:, None, None], cand, 0)


def _write_table(out, rows: list[dict], z0: int, z1: int, score_threshold: float) -> pd.DataFrame:
    """Write a slab file's ``/table`` and its attributes ``columns``, ``z0``, ``z1``, ``score_threshold``."""
    table = pd.DataFrame(rows, columns=TABLE_COLUMNS)
    out.create_dataset("table", data=table.to_numpy(dtype=np.float64))
    out.attrs["columns"] = ",".join(TABLE_COLUMNS)
    out.attrs["z0"], out.attrs["z1"] = z0, z1
    out.attrs["score_threshold"] = score_threshold
    return table


def gather_slabs(slab_paths, volume_path, labels_path, table_path) -> pd.DataFrame:
    """Concatenate slab files into the sample's per-slice instances and their table.

    Writes ``labels_path`` with ``/labels`` and ``/candidates`` ((z, y, x) uint32, ids per slice; the
    volume's ``voxel_size_um`` on ``/labels``), the candidates' ``/table`` (float64, column names in its
    ``columns`` attribute) and the file attribute ``score_threshold`` (the lowest of the slabs'), and
    ``table_path``, one CSV row per candidate with a ``detection`` column (in ``/labels``).

    Parameters
    ----------
    slab_paths : iterable of str or os.PathLike
        Slab files of :func:`infer_slab`, in any order.
    volume_path : str or os.PathLike
        The contract grey volume (shape and voxel size).
    labels_path, table_path : str or os.PathLike
        The HDF5 file and the CSV file to write.

    Returns
    -------
    pandas.DataFrame
        The candidates: :data:`TABLE_COLUMNS` (``z`` the slice index, ``label`` the id in that slice,
        ``score``, box ``y0``, ``x0``, ``y1``, ``x1`` in px with exclusive ends, ``area_px``) and
        ``detection`` (bool).

    Raises
    ------
    ValueError
        When the slabs leave a gap, overlap, or do not cover the volume's slices, so a missing slab
        cannot pass unnoticed.
    """
    shape, voxel = io.read_volume_info(volume_path)
    parts = _ordered_slabs(slab_paths, shape[0])
    tables = []
    with io.atomic_output(labels_path) as tmp, h5py.File(tmp, "w") as out:
        d = out.create_dataset("labels", shape=shape, dtype=np.uint32, chunks=io.slab_chunks(shape),
                               compression="gzip", compression_opts=1)
        d.attrs["voxel_size_um"] = np.asarray(voxel)
        d.attrs["note"] = "instance ids are per slice (1..n in each z); link_slices makes 3D ids"
        dc = out.create_dataset("candidates", shape=shape, dtype=np.uint32, chunks=io.slab_chunks(shape),
                                compression="gzip", compression_opts=1)
        threshold = np.inf
        for z0, z1, p in parts:
            with h5py.File(p, "r") as f:
                d[z0:z1] = f["labels"][...]
                dc[z0:z1] = f["candidates"][...] if "candidates" in f else f["labels"][...]
                threshold = min(threshold, float(f.attrs.get("score_threshold", 0.0)))
                cols = str(f.attrs["columns"]).split(",")
                tables.append(pd.DataFrame(f["table"][...], columns=cols))
        table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=TABLE_COLUMNS)
        for c in TABLE_COLUMNS:
            if c != "score":
                table[c] = table[c].astype(np.int64)
        out.create_dataset("table", data=table[TABLE_COLUMNS].to_numpy(dtype=np.float64))
        out["table"].attrs["columns"] = ",".join(TABLE_COLUMNS)
        out.attrs["score_threshold"] = threshold if np.isfinite(threshold) else 0.0
    table["detection"] = table.score >= (threshold if np.isfinite(threshold) else 0.0)
    io.write_csv(table_path, table)
    return table


def _ordered_slabs(slab_paths, depth: int) -> list[tuple[int, int, object]]:
    """``(z0, z1, path)`` of the slab files by z; ValueError unless they tile slices ``[0, depth)``."""
    parts = []
    for p in slab_paths:
        with h5py.File(p, "r") as f:
            parts.append((int(f.attrs["z0"]), int(f.attrs["z1"]), p))
    parts.sort()
    expect = 0
    for z0, z1, p in parts:
        if z0 != expect:
            raise ValueError(f"{p}: slab starts at z={z0}, expected {expect} (a slab is missing or overlaps)")
        expect = z1
    if expect != depth:
        raise ValueError(f"slabs cover z < {expect} but the volume has {depth} slices")
    return parts
