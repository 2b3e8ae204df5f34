"""Overlap of two label images and instance matching (one kernel for metrics, linking and tuning).

Definitions (Supp. Note 1, after stardist ``matching.py`` / cellpose ``metrics.py``):

* Overlap: for every pair (truth label i, predicted label j) that shares at
  least one pixel/voxel, the number of shared elements. Counted sparsely from
  the pairs that occur; never a dense loop over labels.
* IoU(i, j) = |i ∩ j| / |i ∪ j|.
* Matching: one-to-one by :func:`scipy.optimize.linear_sum_assignment` on a
  cost that first maximises the number of pairs with IoU ≥ threshold and then
  their summed IoU; a pair counts as a true positive when IoU ≥ threshold.
* Precision = TP / (TP + FP), Sensitivity (recall) = TP / (TP + FN),
  F = 2 TP / (2 TP + FP + FN).

Conventions for empty images: with no truth and no prediction, precision,
sensitivity and F are 1 (nothing to find, nothing wrongly found); with
predictions but no truth, precision = 0 and sensitivity = 1; with truth but no
prediction, precision = 1 and sensitivity = 0. No NaN is produced.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment


@dataclass
class Overlap:
    """Sparse overlap table of two label images.

    ``a_ids``/``b_ids``: the non-zero labels present; ``a_sizes``/``b_sizes``:
    their sizes; ``pairs``: (k, 2) indices into ``a_ids``, ``b_ids``;
    ``counts``: (k,) shared elements of each pair (background excluded).
    """

    a_ids: np.ndarray
    b_ids: np.ndarray
    a_sizes: np.ndarray
    b_sizes: np.ndarray
    pairs: np.ndarray
    counts: np.ndarray

    def iou(self) -> np.ndarray:
        """IoU of each pair in ``pairs``."""
        ia, ib = self.pairs[:, 0], self.pairs[:, 1]
        union = self.a_sizes[ia] + self.b_sizes[ib] - self.counts
        return self.counts / np.maximum(union, 1)

    def iou_matrix(self) -> np.ndarray:
        """Dense (n_a, n_b) IoU over the labels present only (small per image)."""
        m = np.zeros((len(self.a_ids), len(self.b_ids)))
        m[self.pairs[:, 0], self.pairs[:, 1]] = self.iou()
        return m


def overlap(a: np.ndarray, b: np.ndarray) -> Overlap:
    """Sparse overlap between label images ``a`` and ``b`` of equal shape (2D or 3D, 0 = background)."""
    a = np.asarray(a)
    b = np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"label images differ in shape: {a.shape} vs {b.shape}")
    a = a.ravel()
    b = b.ravel()
    a_ids, a_sizes = np.unique(a[a > 0], return_counts=True)
    b_ids, b_sizes = np.unique(b[b > 0], return_counts=True)
    both = (a > 0) & (b > 0)
    ia = np.searchsorted(a_ids, a[both])
    ib = np.searchsorted(b_ids, b[both])
    code = ia.astype(np.int64) * max(len(b_ids), 1) + ib
    uniq, counts = np.unique(code, return_counts=True)
    pairs = np.stack([uniq // max(len(b_ids), 1), uniq % max(len(b_ids), 1)], 1) if len(uniq) else \
        np.zeros((0, 2), np.int64)
    return Overlap(a_ids, b_ids, a_sizes, b_sizes, pairs, counts)


def match(ov: Overlap, threshold: float = 0.5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One-to-one matches with IoU ≥ ``threshold``: (index into a_ids, index into b_ids, IoU)."""
    if not 0 < threshold <= 1:
        raise ValueError(f"IoU threshold must lie in (0, 1], got {threshold}")
    if len(ov.a_ids) == 0 or len(ov.b_ids) == 0 or len(ov.counts) == 0:
        return np.zeros(0, int), np.zeros(0, int), np.zeros(0)
    iou = ov.iou_matrix()
    good = iou >= threshold
    # maximise the number of matches above threshold first, then the IoU (stardist's cost)
    cost = -(good + iou / (2 * good.size + 1))
    r, c = linear_sum_assignment(cost)
    keep = good[r, c]
    return r[keep], c[keep], iou[r[keep], c[keep]]


@dataclass
class InstanceScores:
    """Instance-level counts and scores of one image at one IoU threshold."""

    tp: int
    fp: int
    fn: int
    mean_matched_iou: float

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def sensitivity(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0

    @property
    def f1(self) -> float:
        d = 2 * self.tp + self.fp + self.fn
        return 2 * self.tp / d if d else 1.0


def instance_scores(truth: np.ndarray, pred: np.ndarray, threshold: float = 0.5) -> InstanceScores:
    """TP / FP / FN between truth and predicted instances at an IoU threshold."""
    ov = overlap(truth, pred)
    r, _, ious = match(ov, threshold)
    tp = len(r)
    return InstanceScores(tp, len(ov.b_ids) - tp, len(ov.a_ids) - tp, float(ious.mean()) if tp else 0.0)
