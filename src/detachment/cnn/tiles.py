"""Tiled inference of large slices: overlapping tiles, each instance kept from the one tile whose core holds it.

A slice the model would see larger than ``tile_px`` is cut into equal overlapping tiles (:func:`tile_windows`);
the tiles' cores (the tile less half of each overlap with a neighbour) partition the slice. An instance found
in a tile is kept only when its mask's box centre lies in that tile's core (:func:`core_crops`), after the
big-image prediction of StarDist and cellpose: a particle crossing a seam is kept once, and whole when the
overlap is at least its diameter (:func:`tile_overlap`). Kept instances are held as crops of their box, never
as whole-slice masks, and painted as whole-slice detections are (:func:`paint_crops`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from .scale import scaled_shape

#: the tile side ``infer.tile_px: auto`` stands for, px of the model's input (after rescaling): a dense slice of
#: the paper's (~1700 particle sections per 1024² px) holds ~110 per tile, under the default detection cap (150)
AUTO_TILE_PX = 256
#: the least overlap of neighbouring tiles, px of the model's input
MIN_OVERLAP_PX = 64


@dataclass(frozen=True)
class Tile:
    """One tile of a slice: its window ``[y0, y1) x [x0, x1)`` and its core ``[cy0, cy1) x [cx0, cx1)``, slice px.

    The cores of a slice's tiles partition the slice.
    """

    y0: int
    y1: int
    x0: int
    x1: int
    cy0: int
    cy1: int
    cx0: int
    cx1: int


class Crop(NamedTuple):
    """A detection held within its box: ``score``, top-left ``y0``, ``x0`` (slice px) and its binary ``mask``
    (the tight box of the pixels at or above the mask threshold)."""

    score: float
    y0: int
    x0: int
    mask: np.ndarray


def resolve_tile_px(value) -> int | None:
    """The tile side of ``infer.tile_px``: ``auto`` is :data:`AUTO_TILE_PX`, None never tiles.

    Parameters
    ----------
    value : int, str or None
        ``auto``, a side in px of the model's input (a whole number, at least 2 :data:`MIN_OVERLAP_PX`), or
        None.

    Returns
    -------
    int or None

    Raises
    ------
    ValueError
        For any other value.
    """
    if value is None or value == "auto":
        return None if value is None else AUTO_TILE_PX
    whole = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) \
        and float(value).is_integer()  # YAML or JSON may give 512.0
    if not whole or value < 2 * MIN_OVERLAP_PX:
        raise ValueError(f"infer.tile_px: {value!r} is not 'auto', null or an integer ≥ {2 * MIN_OVERLAP_PX}")
    return int(value)


def tile_overlap(meta: dict) -> int:
    """The overlap of neighbouring tiles for a model: twice its training particle diameter, at least
    :data:`MIN_OVERLAP_PX`.

    A particle is whole in the tile whose core holds its centre when the overlap is at least its diameter;
    twice the median diameter of the training instances leaves room for the large ones.

    Parameters
    ----------
    meta : dict
        The model's metadata; ``scale.particle_diameter_px`` (px of the model's input) where recorded.

    Returns
    -------
    int
        Overlap, px of the model's input.
    """
    d = (meta.get("scale") or {}).get("particle_diameter_px")
    if d is None or not np.isfinite(d):
        return MIN_OVERLAP_PX
    return max(MIN_OVERLAP_PX, math.ceil(2 * float(d)))


def axis_tiles(length: int, tile: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """Equal tiles covering one axis with at least ``overlap`` between neighbours, and their cores.

    As few tiles of at most ``tile`` px as cover the axis, then shrunk to the smallest equal side that still
    overlaps by ``overlap``; a core ends halfway through the overlap with the next tile.

    Parameters
    ----------
    length : int
        Axis length, px.
    tile, overlap : int
        Largest tile side and least overlap, px; ``tile > overlap``.

    Returns
    -------
    list of tuple of int
        ``(start, stop, core_start, core_stop)`` per tile, px, ends exclusive; one tile ``(0, length)``
        when the axis fits in one.

    Raises
    ------
    ValueError
        When ``tile <= overlap``.
    """
    if tile <= overlap:
        raise ValueError(f"a tile of {tile} px cannot overlap its neighbour by {overlap} px")
    if length <= tile:
        return [(0, length, 0, length)]
    n = -(-(length - overlap) // (tile - overlap))
    side = -(-(length + (n - 1) * overlap) // n)
    starts = [i * (length - side) // (n - 1) for i in range(n)]
    bounds = [0] + [(a + b + side) // 2 for a, b in zip(starts, starts[1:])] + [length]
    return [(s, s + side, bounds[i], bounds[i + 1]) for i, s in enumerate(starts)]


def _slice_side(tile_px: int, factor: float) -> int:
    """The largest side (slice px) whose resized side (:func:`~.scale.scaled_shape`) is at most ``tile_px``."""
    side = int(math.floor((tile_px + 0.5) / factor)) + 1
    while side > 1 and scaled_shape((side, side), (factor, factor))[0] > tile_px:
        side -= 1
    return side


def tile_windows(shape: tuple[int, int], scale: tuple[float, float], tile_px: int | None,
                 overlap_px: int) -> list[Tile] | None:
    """The tiles of a slice, or None when the model takes it whole.

    Tiles are cut on the slice's own grid; their side and overlap are ``tile_px`` and ``overlap_px`` of the
    model's input divided by the resize factor. An axis the model sees no longer than ``tile_px`` is one tile.

    Parameters
    ----------
    shape : tuple of int
        (h, w) of the slice, px.
    scale : tuple of float
        (fy, fx) resize factor of the slice for the model (:func:`~.scale.scale_factor`).
    tile_px : int or None
        Largest tile side the model sees, px; None: never tile.
    overlap_px : int
        Least overlap of neighbouring tiles as the model sees them, px.

    Returns
    -------
    list of Tile or None
        Row-major tiles of one size, whose cores partition the slice; None when ``tile_px`` is None or the
        resized slice is at most ``tile_px`` on both axes.

    Raises
    ------
    ValueError
        When ``tile_px < 2 overlap_px`` (cores would be under half a tile), whether or not the slice is tiled.
    """
    if tile_px is not None and tile_px < 2 * overlap_px:
        raise ValueError(f"infer.tile_px {tile_px} is under twice the tile overlap {overlap_px} px "
                         f"(2 x the model's particle diameter, at least {MIN_OVERLAP_PX}): use at least {2 * overlap_px}")
    scaled = scaled_shape(shape, scale)
    if tile_px is None or max(scaled) <= tile_px:
        return None
    axes = []
    for length, length_scaled, f in zip(shape, scaled, scale):
        if length_scaled <= tile_px:
            axes.append([(0, length, 0, length)])
        else:
            axes.append(axis_tiles(length, _slice_side(tile_px, f), math.ceil(overlap_px / f)))
    return [Tile(y0, y1, x0, x1, cy0, cy1, cx0, cx1) for y0, y1, cy0, cy1 in axes[0] for x0, x1, cx0, cx1 in axes[1]]


def core_crops(scores: np.ndarray, probs: np.ndarray, tile: Tile, mask_threshold: float) -> list[Crop]:
    """The detections of one tile whose mask's box centre lies in the tile's core, as crops.

    Parameters
    ----------
    scores : numpy.ndarray
        (n,) detection scores.
    probs : numpy.ndarray
        (n, y, x) mask probabilities on the tile's window (slice px).
    tile : Tile
        The tile.
    mask_threshold : float
        Lowest mask probability of a detection's pixels.

    Returns
    -------
    list of Crop
        In the order of ``scores``; detections with an empty mask are left out.
    """
    out = []
    for score, p in zip(scores, probs):
        full = p >= mask_threshold  # one tile-sized mask at a time
        ys, xs = np.flatnonzero(full.any(1)), np.flatnonzero(full.any(0))
        if len(ys) == 0:
            continue
        y0, y1, x0, x1 = ys[0] + tile.y0, ys[-1] + 1 + tile.y0, xs[0] + tile.x0, xs[-1] + 1 + tile.x0
        # the box centre (y0 + y1) / 2 in [cy0, cy1), in doubled integers
        if 2 * tile.cy0 <= y0 + y1 < 2 * tile.cy1 and 2 * tile.cx0 <= x0 + x1 < 2 * tile.cx1:
            out.append(Crop(float(score), int(y0), int(x0), full[ys[0]:ys[-1] + 1, xs[0]:xs[-1] + 1].copy()))
    return out


def paint_crops(crops: list[Crop], shape: tuple[int, int], min_visible_fraction: float = 0.5
                ) -> tuple[np.ndarray, list[dict]]:
    """Paint detections held as crops into one label slice, highest score first, with mask-level NMS.

    The painting of :func:`~.predict.predictions_to_labels` (a detection of which less than
    ``min_visible_fraction`` of its mask is still free is dropped), on crops instead of whole-slice masks.

    Parameters
    ----------
    crops : list of Crop
        The detections to paint (already above the score threshold).
    shape : tuple of int
        (y, x) of the slice, px.
    min_visible_fraction : float
        Share of a detection's mask that must still be free for it to be painted.

    Returns
    -------
    labels : numpy.ndarray
        (y, x) uint32, ids 1..n by decreasing score (ties in the order of ``crops``), 0 = background.
    rows : list of dict
        Per painted detection: ``label``, ``score``, bounding box ``y0``, ``x0``, ``y1``, ``x1`` (px,
        end exclusive) and ``area_px`` of its painted pixels.
    """
    out = np.zeros(shape, np.uint32)
    rows = []
    order = np.argsort(-np.array([c.score for c in crops], np.float64), kind="stable")
    n = 0
    for k in order:
        score, y0, x0, box = crops[k]
        free = out[y0:y0 + box.shape[0], x0:x0 + box.shape[1]]
        pix = box & (free == 0)
        area = int(np.count_nonzero(pix))
        if area == 0 or area < min_visible_fraction * np.count_nonzero(box):
            continue
        n += 1
        free[pix] = n
        py, px = np.nonzero(pix)
        rows.append({"label": n, "score": score, "y0": int(py.min() + y0), "x0": int(px.min() + x0),
                     "y1": int(py.max() + y0) + 1, "x1": int(px.max() + x0) + 1, "area_px": area})
    return out, rows
