"""Mask geometry for fragment repair: IoU, boxes and convexity (solidity) of 2D boolean masks."""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.morphology import convex_hull_image


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two masks.

    Parameters
    ----------
    a, b : bool arrays of equal shape
        The masks.

    Returns
    -------
    float
        |a ∩ b| / |a ∪ b| (pixels); 0 when both are empty.
    """
    union = np.count_nonzero(a | b)
    return np.count_nonzero(a & b) / union if union else 0.0


def solidity(mask: np.ndarray) -> float:
    """Convexity of a mask, computed on its bounding box.

    Parameters
    ----------
    mask : (y, x) bool array
        Non-empty.

    Returns
    -------
    float
        Its area over the area of its convex hull (:func:`skimage.morphology.convex_hull_image`), in (0, 1].
    """
    sl = ndimage.find_objects(mask.astype(np.uint8))[0]
    crop = mask[sl]
    return float(crop.sum() / max(convex_hull_image(crop).sum(), 1))


def union_box(boxes) -> tuple[slice, slice]:
    """The smallest box holding some boxes.

    Parameters
    ----------
    boxes : iterable of (slice, slice)
        (y, x) boxes, stops exclusive; at least one.

    Returns
    -------
    (slice, slice)
    """
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


def labels_in(labels: np.ndarray, ids) -> np.ndarray:
    """``np.isin(labels, ids)`` for a few ids, without its sorting overhead on small crops.

    Parameters
    ----------
    labels : int array
        Label image (or crop).
    ids : sequence of int
        A few labels.

    Returns
    -------
    bool array, the shape of ``labels``
    """
    out = np.zeros(labels.shape, bool)
    for i in ids:
        out |= labels == i
    return out
