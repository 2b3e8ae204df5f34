"""The model's per-image detection cap at inference, and raising it for crowded slices or tiles.

torchvision's Mask R-CNN keeps, per image, the ``roi_heads.detections_per_img`` best-scoring detections
(``model.box_detections_per_img``) among those scoring above ``roi_heads.score_thresh``, drawn from the
RPN's ``post_nms_top_n`` best proposals. On a crowded slice the cap cuts real particles. Two things keep it
from doing so: detections that cannot reach any output (below the lowest score kept) are not let in to
take places under the cap (:func:`score_floor`), and an image that still fills the cap is predicted again
with the cap and the proposals raised (:func:`detection_budget`, :func:`raised_caps`), up to
``infer.max_detections``. Raising changes nothing for an image under the cap; it costs time only on the
crowded ones.
"""

from __future__ import annotations

import contextlib
import math

import numpy as np
from torch import nn


def detection_cap(model: nn.Module) -> int | None:
    """The most detections the model returns per image (``model.box_detections_per_img``; torchvision's
    ``roi_heads.detections_per_img``), None for a model without one.

    Parameters
    ----------
    model : MaskRCNN
        Or a stand-in; one without ``roi_heads.detections_per_img`` has no cap.

    Returns
    -------
    int or None
    """
    cap = getattr(getattr(model, "roi_heads", None), "detections_per_img", None)
    return None if cap is None else int(cap)


@contextlib.contextmanager
def score_floor(model: nn.Module, lowest_kept: float):
    """Let through the ROI heads only detections scoring at least ``lowest_kept`` (never fewer than the
    model's own ``score_thresh`` lets through), restoring it after.

    Detections below the lowest score any output keeps would only take places under the cap. torchvision
    keeps scores strictly above ``score_thresh``; the floor is set one float32 step below ``lowest_kept``
    so a detection scoring exactly ``lowest_kept`` is kept. Removing low-scoring boxes before the NMS
    changes nothing for the boxes above them (the NMS suppresses a box only for a higher-scoring one).

    Parameters
    ----------
    model : MaskRCNN
        Or a stand-in without ``roi_heads.score_thresh`` (left alone).
    lowest_kept : float
        Score (0-1).
    """
    heads = getattr(model, "roi_heads", None)
    saved = getattr(heads, "score_thresh", None)
    if saved is None:
        yield
        return
    heads.score_thresh = max(float(saved), float(np.nextafter(np.float32(lowest_kept), np.float32(0))))
    try:
        yield
    finally:
        heads.score_thresh = saved


@contextlib.contextmanager
def detection_budget(model: nn.Module, cap: int):
    """Let the model return up to ``cap`` detections per image, restoring its settings after.

    The RPN's proposals kept before and after its NMS at inference grow by the same factor as the cap
    (never shrink), so the ROI heads have as many candidates per detection as the model was built with.
    The RPN keeps them in ``_pre_nms_top_n`` / ``_post_nms_top_n`` (torchvision's own attributes, read by
    its ``pre_nms_top_n()`` / ``post_nms_top_n()``).

    Parameters
    ----------
    model : MaskRCNN
        With ``roi_heads.detections_per_img`` and ``rpn``.
    cap : int
        Detections per image, at least 1.
    """
    heads, rpn = model.roi_heads, model.rpn
    saved = heads.detections_per_img, dict(rpn._pre_nms_top_n), dict(rpn._post_nms_top_n)
    factor = max(1.0, cap / saved[0])
    heads.detections_per_img = int(cap)
    rpn._pre_nms_top_n = {**saved[1], "testing": math.ceil(saved[1]["testing"] * factor)}
    rpn._post_nms_top_n = {**saved[2], "testing": math.ceil(saved[2]["testing"] * factor)}
    try:
        yield
    finally:
        heads.detections_per_img, rpn._pre_nms_top_n, rpn._post_nms_top_n = saved


def raised_caps(cap: int | None, max_detections: int | None) -> list[int]:
    """The caps an image that fills ``cap`` is predicted again with: doubling, the last ``max_detections``.

    Parameters
    ----------
    cap : int or None
        The model's cap (:func:`detection_cap`); None: nothing to raise.
    max_detections : int or None
        The most detections per image to allow (``infer.max_detections``); None or at most ``cap``: none.

    Returns
    -------
    list of int
        Increasing caps, each at most twice the one before, ending at ``max_detections``.
    """
    if cap is None or max_detections is None or max_detections <= cap:
        return []
    out, c = [], cap
    while c < max_detections:
        c = min(2 * c, max_detections)
        out.append(c)
    return out
