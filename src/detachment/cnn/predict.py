"""Inference: a trained model's detections on slices, painted into non-overlapping instance labels.

:func:`predict` runs at native scale (:func:`native_scale`) on whole slices or, for large ones, on
overlapping tiles (:mod:`.tiles`), optionally fusing the four flips of each slice or tile
(:func:`fuse_flips`); :func:`predictions_to_labels` paints by decreasing score with mask-level NMS;
:func:`load_model` rebuilds a model from its JSON metadata and weights.
"""

from __future__ import annotations

import contextlib
import logging

import numpy as np
import torch
from torch import nn

from .. import io
from .caps import detection_budget, detection_cap, raised_caps, score_floor
from .checkpoint import load_checkpoint
from .model import ModelSettings, build_model, to_tensor
from .reuse import check_model_meta
from .scale import resize_images, restore_prediction, scaled_shape
from .tiles import MIN_OVERLAP_PX, Crop, Tile, core_crops, paint_crops, tile_windows

log = logging.getLogger(__name__)

#: test-time augmentation: the four flips of a slice (dims of a (3, y, x) tensor), identity first
TTA_FLIPS: tuple[tuple[int, ...], ...] = ((), (-1,), (-2,), (-2, -1))
#: detections below this score in a flipped pass are not worth fusing
TTA_MIN_SCORE = 0.05


def predictions_to_labels(pred: dict[str, torch.Tensor], shape: tuple[int, int], score_threshold: float,
                          mask_threshold: float, min_visible_fraction: float = 0.5) -> tuple[np.ndarray, list[dict]]:
    """Paint detections into one non-overlapping label slice, highest score first.

    A pixel goes to the highest-scoring detection whose mask probability there is ≥ ``mask_threshold``.
    A detection of which less than ``min_visible_fraction`` of its mask is still free is dropped
    (mask-level NMS): box NMS at IoU 0.5 keeps duplicates of one particle whose boxes differ, and their
    leftovers would be false fragments.

    Parameters
    ----------
    pred : dict
        One image's model output: ``scores`` (n,) and ``masks`` (n, 1, y, x) probabilities.
    shape : tuple of int
        (y, x) of the slice, px.
    score_threshold, mask_threshold : float
        Lowest score of a painted detection; lowest mask probability of its pixels.
    min_visible_fraction : float
        Share of a detection's mask that must still be free for it to be painted.

    Returns
    -------
    labels : numpy.ndarray
        (y, x) uint32, ids 1..n by decreasing score, 0 = background.
    rows : list of dict
        Per painted detection: ``label``, ``score``, bounding box ``y0``, ``x0``, ``y1``, ``x1`` (px,
        end exclusive) and ``area_px`` of its painted pixels.
    """
    scores = pred["scores"].detach().cpu().numpy()
    keep = np.nonzero(scores >= score_threshold)[0]
    keep = keep[np.argsort(-scores[keep], kind="stable")]
    probs = pred["masks"][:, 0].detach().cpu().numpy()  # on a CPU a view: the kept masks are not copied
    crops = []
    for k in keep:
        full = probs[k] >= mask_threshold
        # painting works within the mask's bounding box (it is empty outside)
        ys, xs = np.flatnonzero(full.any(1)), np.flatnonzero(full.any(0))
        if len(ys):
            crops.append(Crop(float(scores[k]), int(ys[0]), int(xs[0]),
                              full[ys[0]:ys[-1] + 1, xs[0]:xs[-1] + 1].copy()))
    return paint_crops(crops, shape, min_visible_fraction)


def _mask_boxes(binary: list[torch.Tensor]) -> list[tuple[int, int, int, int]]:
    """(y0, x0, y1, x1) boxes of binary (y, x) masks, end exclusive; (0, 0, 0, 0) for an empty mask."""
    boxes = []
    for b in binary:
        ys, xs = torch.nonzero(b.any(1)).flatten(), torch.nonzero(b.any(0)).flatten()
        boxes.append((int(ys[0]), int(xs[0]), int(ys[-1]) + 1, int(xs[-1]) + 1) if len(ys) else (0, 0, 0, 0))
    return boxes


def _mask_iou_at_least(bi: torch.Tensor, bj: torch.Tensor, a: tuple, b: tuple, match_iou: float) -> bool:
    """Whether binary masks ``bi``, ``bj`` with boxes ``a``, ``b`` overlap at IoU ≥ ``match_iou``, compared on
    the joint box only (masks whose boxes do not intersect never match)."""
    (a0, a1, a2, a3), (b0, b1, b2, b3) = a, b
    y0, x0, y1, x1 = max(a0, b0), max(a1, b1), min(a2, b2), min(a3, b3)
    if y0 >= y1 or x0 >= x1:
        return False
    y0, x0, y1, x1 = min(a0, b0), min(a1, b1), max(a2, b2), max(a3, b3)
    bi, bj = bi[y0:y1, x0:x1], bj[y0:y1, x0:x1]
    inter = (bi & bj).sum().item()
    union = (bi | bj).sum().item()
    return bool(union and inter / union >= match_iou)


def _intersecting_later(boxes: np.ndarray, block: int = 1024) -> list[np.ndarray]:
    """Per box i of (n, 4) (y0, x0, y1, x1) boxes, the ascending indices j > i of the boxes that intersect it
    (positive area; an empty box intersects none), compared ``block`` rows at a time."""
    n = len(boxes)
    later = []
    for a in range(0, n, block):
        b = boxes[a:a + block, None, :]
        hit = ((np.maximum(b[..., 0], boxes[:, 0]) < np.minimum(b[..., 2], boxes[:, 2]))
               & (np.maximum(b[..., 1], boxes[:, 1]) < np.minimum(b[..., 3], boxes[:, 3])))
        hit &= np.arange(n)[None, :] > np.arange(a, a + len(b))[:, None]
        later.extend(np.flatnonzero(row) for row in hit)
    return later


def fuse_flips(preds: list[dict[str, torch.Tensor]], mask_threshold: float, match_iou: float = 0.5
               ) -> dict[str, torch.Tensor]:
    """Fuse the predictions of one slice's flipped passes (masks already flipped back) into one set.

    Greedy by score over all passes: a detection gathers at most one detection of every other pass whose
    binarised mask overlaps it at IoU ≥ ``match_iou``. The fused score is the group's summed score over
    the number of passes (a particle seen in one pass of four keeps a quarter of its score); the fused
    mask probability is the mean over the passes that saw it, so the mask threshold keeps its meaning.
    Detections below :data:`TTA_MIN_SCORE` are left out.

    Parameters
    ----------
    preds : list of dict
        One per pass: ``scores`` (n,) and ``masks`` (n, 1, y, x) probabilities, in the slice's orientation.
    mask_threshold : float
        Probability at which masks are binarised for matching.
    match_iou : float
        Lowest mask IoU of two detections of one particle.

    Returns
    -------
    dict
        ``scores`` (m,) float32 and ``masks`` (m, 1, y, x) float32 of the fused detections, by
        decreasing best single-pass score.
    """
    n = len(preds)
    dets = [(float(sc), v, m) for v, p in enumerate(preds)
            for sc, m in zip(p["scores"].tolist(), p["masks"][:, 0]) if sc >= TTA_MIN_SCORE]
    dets.sort(key=lambda d: -d[0])
    binary = [d[2] >= mask_threshold for d in dets]
    # only pairs whose boxes intersect are compared (found vectorised), and on the joint box, so a slice
    # or tile with hundreds of particles stays cheap
    boxes = _mask_boxes(binary)
    later = _intersecting_later(np.asarray(boxes, np.int64).reshape(-1, 4))
    used = [False] * len(dets)
    scores, masks = [], []
    for i, (sc, v, m) in enumerate(dets):
        if used[i]:
            continue
        used[i] = True
        group = {v: (sc, m)}
        for j in later[i]:
            if used[j] or dets[j][1] in group:
                continue
            if _mask_iou_at_least(binary[i], binary[j], boxes[i], boxes[j], match_iou):
                group[dets[j][1]] = dets[j][0], dets[j][2]
                used[j] = True
        scores.append(sum(g[0] for g in group.values()) / n)
        # the mean of one mask is the mask itself: not copied twice
        masks.append(torch.stack([g[1] for g in group.values()]).mean(0) if len(group) > 1 else group[v][1])
    if not scores:
        h, w = preds[0]["masks"].shape[-2:]
        return {"scores": torch.zeros(0), "masks": torch.zeros((0, 1, h, w))}
    return {"scores": torch.tensor(scores), "masks": torch.stack(masks)[:, None]}


def _predict_uncapped(model: nn.Module, batch: list[torch.Tensor], tta: bool, mask_threshold: float,
                      max_detections: int | None, relevant: float) -> tuple[list[dict[str, torch.Tensor]], list]:
    """:func:`_predict_batch`, each image that fills the model's cap predicted again alone with the cap
    raised (:func:`~.caps.raised_caps`) until it does not or the cap is ``max_detections``.

    A pass fills the cap when it returns as many detections as the cap and the lowest of them scores at
    least ``relevant``: below that, what the cap cut cannot reach an output. With ``tta``, an image whose
    first (unflipped) pass fills the cap goes straight to the raised cap, without its other flips.

    Returns the predictions and, per image, ``(raw detections of its fullest pass, the cap it was last
    predicted with (None for a model without one), whether that still filled it)``.
    """
    cap = detection_cap(model)
    raised = raised_caps(cap, max_detections)

    def fills(scores, c):
        """Whether a pass's raw ``scores`` fill the cap ``c`` with detections that matter."""
        return c is not None and len(scores) >= c and float(scores.min()) >= relevant

    preds, raw = _predict_batch(model, batch, tta, mask_threshold, (lambda r: fills(r, cap)) if raised else None)
    state = [(max(len(r) for r in scores), cap, any(fills(r, cap) for r in scores)) for scores in raw]
    for i in range(len(batch)):
        for k, c in enumerate(raised):
            if not state[i][2]:
                break
            last = k == len(raised) - 1
            with detection_budget(model, c):
                (preds[i],), (scores,) = _predict_batch(model, [batch[i]], tta, mask_threshold,
                                                        None if last else (lambda r, c=c: fills(r, c)))
            state[i] = (max(len(r) for r in scores), c, any(fills(r, c) for r in scores))
    return preds, state


def _predict_batch(model: nn.Module, batch: list[torch.Tensor], tta: bool, mask_threshold: float,
                   redo=None) -> tuple[list[dict[str, torch.Tensor] | None], list[list[torch.Tensor]]]:
    """The model's predictions for a batch of (3, y, x) tensors; with ``tta``, fused over the four flips.
    Also, per image, the raw scores of each pass (to hold against the model's cap).

    With ``tta`` and ``redo`` (a test on the raw scores of a pass), an image whose unflipped pass passes the
    test will be predicted again: its other flips are skipped and its prediction is None.
    """
    if not tta:
        preds = model(batch)
        return preds, [[p["scores"]] for p in preds]
    first = model(batch)
    go = [i for i, p in enumerate(first) if redo is None or not redo(p["scores"])]
    rest = [model([torch.flip(batch[i], f) for i in go]) if go else [] for f in TTA_FLIPS[1:]]
    out, raw = [None] * len(batch), [[p["scores"]] for p in first]
    for j, i in enumerate(go):
        passes = [first[i]] + [r[j] for r in rest]
        preds = [{"scores": p["scores"], "masks": torch.flip(p["masks"], f) if f else p["masks"]}
                 for f, p in zip(TTA_FLIPS, passes)]
        out[i] = fuse_flips(preds, mask_threshold)
        raw[i] = [p["scores"] for p in passes]
    return out, raw


@contextlib.contextmanager
def native_scale(model: nn.Module, h: int, w: int):
    """Let the model's transform take (h, w) images without resizing, restoring the tile size after.

    The model is trained at native scale on tiles (min_size = max_size = tile); whole slices must not be
    resized either, and validation inside training must not leave the transform at the slice size.

    Parameters
    ----------
    model : MaskRCNN
        Any model with a ``transform`` holding ``min_size`` and ``max_size``.
    h, w : int
        Image height and width, px.
    """
    saved = (model.transform.min_size, model.transform.max_size)
    model.transform.min_size, model.transform.max_size = (min(h, w),), max(h, w)
    try:
        yield
    finally:
        model.transform.min_size, model.transform.max_size = saved


@torch.inference_mode()
def predict(model: nn.Module, images: np.ndarray, device: torch.device, batch_size: int, score_threshold: float,
            mask_threshold: float, progress: bool = False, min_visible_fraction: float = 0.5, tta: bool = False,
            scale: tuple[float, float] = (1.0, 1.0), tile_px: int | None = None, overlap_px: int = MIN_OVERLAP_PX,
            first_z: int = 0, max_detections: int | None = None) -> tuple[np.ndarray, list[dict]]:
    """Instance labels of slices, in float32; the model's train / eval mode is restored.

    The model sees each slice resized by ``scale`` (at native scale when 1) and its mask probabilities are
    resized back to the slice before painting (:mod:`.scale`), so labels are on the slice's grid. A slice
    the model would see larger than ``tile_px`` is predicted in overlapping tiles (:mod:`.tiles`). A slice
    or tile that fills the model's detection cap is predicted again with it raised, up to ``max_detections``
    (:mod:`.caps`); one that still fills it is logged as a warning: particles beyond the cap are lost.

    Parameters
    ----------
    model : MaskRCNN
    images : numpy.ndarray
        (n, y, x) slices, or (n, 3, y, x) slices with their neighbours z-1, z, z+1.
    device : torch.device
        Where ``model`` is.
    batch_size : int
        Slices (or tiles of one slice) per forward pass.
    score_threshold, mask_threshold, min_visible_fraction : float
        Painting (:func:`predictions_to_labels`).
    progress : bool
        Show a progress bar.
    tta : bool
        Fuse the four flips of each slice or tile (:func:`fuse_flips`; four times the compute).
    scale : tuple of float
        (fy, fx) resize factor of the slices for the model (:func:`~.scale.scale_factor`).
    tile_px : int, optional
        Largest tile side the model sees, px (:func:`~.tiles.tile_windows`); None: whole slices, any size.
    overlap_px : int
        Least overlap of neighbouring tiles as the model sees them, px (:func:`~.tiles.tile_overlap`).
    first_z : int
        z of ``images[0]`` in its volume, for the warnings.
    max_detections : int, optional
        The most detections per slice or tile the cap may be raised to; None: never raised.

    Returns
    -------
    labels : numpy.ndarray
        (n, y, x) uint32 instance labels per slice.
    rows : list of dict
        :func:`predictions_to_labels` rows with the slice ``index`` (0..n-1) first.
    """
    was_training = model.training
    model.eval()
    tiles = tile_windows(images.shape[-2:], scale, tile_px, overlap_px)
    floor, relevant = _cap_scores(score_threshold, tta)
    paint = (score_threshold, mask_threshold, min_visible_fraction, max_detections, relevant)
    with score_floor(model, floor):
        if tiles is None:
            out, rows = _predict_whole(model, images, device, batch_size, paint, progress, tta, scale, first_z)
        else:
            out, rows = _predict_tiled(model, images, device, batch_size, paint, progress, tta, scale, first_z,
                                       tiles)
    model.train(was_training)
    return out, rows


def _cap_scores(score_threshold: float, tta: bool) -> tuple[float, float]:
    """The score floor (:func:`~.caps.score_floor`) and the least score of a detection that the cap must not
    cut (:func:`_predict_uncapped`'s ``relevant``) of a prediction kept from ``score_threshold``.

    Detections below ``score_threshold`` (below :data:`TTA_MIN_SCORE` with TTA) take no place under the cap.
    With TTA a detection cut from one flip moves its fused score (the mean over the flips) by its own score
    / 4; cuts below ``score_threshold / 4`` are let be: the low-score detections that fill the cap in every
    flip of a crowded tile would otherwise have it predicted again, at four passes each time.
    """
    if tta:
        return TTA_MIN_SCORE, score_threshold / len(TTA_FLIPS)
    return score_threshold, score_threshold


def _predict_whole(model: nn.Module, images: np.ndarray, device: torch.device, batch_size: int, paint: tuple,
                   progress: bool, tta: bool, scale: tuple[float, float], first_z: int) -> tuple[np.ndarray, list]:
    """:func:`predict` on whole slices; ``paint`` = (score_threshold, mask_threshold, min_visible_fraction,
    max_detections, relevant): the painting, the cap's limit and its relevant score (:func:`_cap_scores`)."""
    from tqdm import tqdm

    score_threshold, mask_threshold, min_visible_fraction, max_detections, relevant = paint
    own_cap = detection_cap(model)
    h, w = images.shape[-2:]
    out = np.zeros((len(images), h, w), np.uint32)
    rows = []
    starts = range(0, len(images), batch_size)
    hs, ws = scaled_shape((h, w), scale)
    with native_scale(model, hs, ws):
        for b in tqdm(starts, desc="infer", unit="batch", disable=not progress):
            batch = resize_images([to_tensor(im).to(device) for im in images[b:b + batch_size]], (hs, ws))
            preds, state = _predict_uncapped(model, batch, tta, mask_threshold, max_detections, relevant)
            for i, pred in enumerate(preds):
                n, cap, filled = state[i]
                if cap != own_cap:
                    log.info("slice z=%d: predicted again with the detection cap raised to %d (%d raw detections)",
                             first_z + b + i, cap, n)
                if filled:
                    log.warning("slice z=%d: %d raw detections, the cap (model.box_detections_per_img, raised "
                                "up to infer.max_detections) %d: particles beyond it are lost; predict in tiles "
                                "(infer.tile_px) or raise infer.max_detections", first_z + b + i, n, cap)
                out[b + i], r = predictions_to_labels(restore_prediction(pred, (h, w)), (h, w), score_threshold,
                                                      mask_threshold, min_visible_fraction)
                rows.extend({"index": b + i, **row} for row in r)
    return out, rows


def _predict_tiled(model: nn.Module, images: np.ndarray, device: torch.device, batch_size: int, paint: tuple,
                   progress: bool, tta: bool, scale: tuple[float, float], first_z: int, tiles: list[Tile]
                   ) -> tuple[np.ndarray, list]:
    """:func:`predict` slice by slice in ``tiles`` (of one size), ``batch_size`` tiles per forward pass."""
    from tqdm import tqdm

    score_threshold, mask_threshold, min_visible_fraction, max_detections, relevant = paint
    own_cap = detection_cap(model)
    h, w = images.shape[-2:]
    th, tw = tiles[0].y1 - tiles[0].y0, tiles[0].x1 - tiles[0].x0
    ths, tws = scaled_shape((th, tw), scale)
    out = np.zeros((len(images), h, w), np.uint32)
    rows = []
    with native_scale(model, ths, tws):
        for i in tqdm(range(len(images)), desc="infer", unit="slice", disable=not progress):
            x = to_tensor(images[i]).to(device)
            crops, capped, tile_caps = [], [], []
            for a in range(0, len(tiles), batch_size):
                part = tiles[a:a + batch_size]
                batch = resize_images([x[:, t.y0:t.y1, t.x0:t.x1] for t in part], (ths, tws))
                preds, state = _predict_uncapped(model, batch, tta, mask_threshold, max_detections, relevant)
                for t, pred, (_, cap, filled) in zip(part, preds, state):
                    tile_caps.append(cap)
                    if filled:
                        capped.append(cap)
                    crops += _tile_crops(pred, t, score_threshold, mask_threshold)
                del batch, preds, pred  # these tiles' masks go before the next forward pass makes new ones
            raised = sum(c != own_cap for c in tile_caps)
            if raised:
                log.info("slice z=%d: %d of %d tiles predicted again with the detection cap raised (up to %d)",
                         first_z + i, raised, len(tiles), max(tile_caps))
            if capped:
                log.warning("slice z=%d: %d of %d tiles (%d x %d px) reach the cap of %d raw detections "
                            "(model.box_detections_per_img, raised up to infer.max_detections): particles beyond "
                            "it are lost; use smaller tiles (infer.tile_px) or raise infer.max_detections",
                            first_z + i, len(capped), len(tiles), th, tw, max(capped))
            out[i], r = paint_crops(crops, (h, w), min_visible_fraction)
            rows.extend({"index": i, **row} for row in r)
    return out, rows


def _tile_crops(pred: dict[str, torch.Tensor], tile: Tile, score_threshold: float, mask_threshold: float) -> list:
    """The detections of one tile scoring at least ``score_threshold`` whose centre is in its core, as
    :class:`~.tiles.Crop` on the slice (masks mapped back to the tile's window first)."""
    scores = pred["scores"].detach().cpu().numpy()
    keep = torch.from_numpy(np.nonzero(scores >= score_threshold)[0])
    kept = restore_prediction({"scores": pred["scores"][keep], "masks": pred["masks"][keep]},
                              (tile.y1 - tile.y0, tile.x1 - tile.x0))
    return core_crops(kept["scores"].detach().cpu().numpy(), kept["masks"][:, 0].detach().cpu().numpy(), tile,
                      mask_threshold)


def load_model(weights_path, meta_path, device) -> tuple[nn.Module, dict]:
    """Rebuild the model from its JSON metadata and load its weights safely.

    Parameters
    ----------
    weights_path, meta_path : str or os.PathLike
        The state dict (``torch.save``) and the JSON metadata holding the ``model`` settings.
    device : torch.device or str
        Where to put the model.

    Returns
    -------
    model : MaskRCNN
        In training mode (callers that predict switch it).
    meta : dict
        The metadata.

    Raises
    ------
    detachment.io.InputError
        When the metadata is missing or invalid (:func:`~.reuse.check_model_meta`, naming the field), the
        weights are not a safe state dict of tensors, or they do not fit the architecture the metadata
        describes (naming the first tensor that does not).
    """
    meta = check_model_meta(meta_path)
    settings = ModelSettings(**meta["model"])
    model = build_model(settings)
    state = load_checkpoint(weights_path)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise io.InputError(f"{weights_path}: expected a state dict of tensors")
    _check_state(model, state, weights_path, meta_path, settings)
    model.load_state_dict(state)
    return model.to(device), meta


def _check_state(model: nn.Module, state: dict, weights_path, meta_path, settings: ModelSettings) -> None:
    """InputError naming the first missing, unexpected or differently shaped tensor of ``state``."""
    own = model.state_dict()
    missing, extra = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    shapes = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if not (missing or extra or shapes):
        return
    if shapes:
        k = shapes[0]
        what = f"tensor '{k}' has shape {tuple(state[k].shape)}, the architecture needs {tuple(own[k].shape)}"
    else:
        what = f"tensor '{(missing or extra)[0]}' is {'missing' if missing else 'not part of the architecture'}"
    raise io.InputError(f"{weights_path}: weights do not fit the architecture in {meta_path} "
                        f"(model.backbone {settings.backbone}, model.fpn_channels {settings.fpn_channels}): {what}")
