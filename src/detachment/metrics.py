"""Overlap of two label images and instance matching (one kernel for metrics, linking and tuning).

Overlap is counted sparsely from the (truth, prediction) label pairs that occur. Matching is one-to-one
by :func:`scipy.optimize.linear_sum_assignment`, first maximising the number of pairs with
IoU ≥ threshold, then their summed IoU (after StarDist's ``matching.py``; Supp. Note 1). Empty images
give no NaN: no truth and no prediction score 1; truth without prediction, precision and sensitivity 0;
prediction without truth, precision 0 and sensitivity 1 (as StarDist and scikit-learn).

Main entry points: :func:`overlap`, :func:`match`, :func:`image_metrics`, :func:`particle_scores`,
:func:`ap_curve`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment


@dataclass
class Overlap:
    """Sparse overlap table of two label images ``a`` (truth) and ``b`` (prediction).

    Attributes
    ----------
    a_ids, b_ids : numpy.ndarray
        (n_a,) and (n_b,) sorted non-zero labels present in ``a`` and ``b``.
    a_sizes, b_sizes : numpy.ndarray
        (n_a,) and (n_b,) int64 sizes of those labels, in pixels (voxels in 3D).
    pairs : numpy.ndarray
        (k, 2) int64 indices into ``a_ids`` and ``b_ids`` of the label pairs that share at least one
        element.
    counts : numpy.ndarray
        (k,) int64 number of elements each pair shares (background excluded).
    """

    a_ids: np.ndarray
    b_ids: np.ndarray
    a_sizes: np.ndarray
    b_sizes: np.ndarray
    pairs: np.ndarray
    counts: np.ndarray

    def iou(self) -> np.ndarray:
        """IoU of each pair in ``pairs``.

        Returns
        -------
        numpy.ndarray
            (k,) float, |a ∩ b| / |a ∪ b| in [0, 1].
        """
        ia, ib = self.pairs[:, 0], self.pairs[:, 1]
        union = self.a_sizes[ia] + self.b_sizes[ib] - self.counts
        return self.counts / np.maximum(union, 1)

    def iou_matrix(self) -> np.ndarray:
        """Dense IoU over the labels present (small per image).

        Returns
        -------
        numpy.ndarray
            (n_a, n_b) float IoU, 0 for pairs that do not overlap.
        """
        m = np.zeros((len(self.a_ids), len(self.b_ids)))
        m[self.pairs[:, 0], self.pairs[:, 1]] = self.iou()
        return m


def overlap(a: np.ndarray, b: np.ndarray) -> Overlap:
    """Sparse overlap between two label images of equal shape.

    Parameters
    ----------
    a, b : numpy.ndarray
        Integer label images, 2D (y, x) or 3D (z, y, x), of equal shape; 0 (and negative values) =
        background.

    Returns
    -------
    Overlap
        Labels, sizes and shared counts of the overlapping pairs.

    Raises
    ------
    ValueError
        When the shapes differ.
    """
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
    """One-to-one matches with IoU ≥ ``threshold``.

    The assignment maximises the number of pairs at or above the threshold first and their summed IoU
    second (StarDist's cost).

    Parameters
    ----------
    ov : Overlap
        Overlap of truth ``a`` and prediction ``b``.
    threshold : float, default 0.5
        Smallest IoU of a match, in (0, 1].

    Returns
    -------
    rows : numpy.ndarray
        (m,) int indices into ``ov.a_ids`` of the matched labels.
    cols : numpy.ndarray
        (m,) int indices into ``ov.b_ids``.
    iou : numpy.ndarray
        (m,) float IoU of each match.

    Raises
    ------
    ValueError
        When ``threshold`` is not in (0, 1].
    """
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
    """Instance-level counts and scores of one image at one IoU threshold.

    Attributes
    ----------
    tp, fp, fn : int
        Matched truth instances, unmatched predictions and unmatched truth instances.
    mean_matched_iou : float
        Mean IoU of the matches (0 when nothing matched).
    """

    tp: int
    fp: int
    fn: int
    mean_matched_iou: float

    @property
    def precision(self) -> float:
        """TP / (TP + FP); with no prediction: 1 on an image without truth, 0 where truth was missed."""
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else (0.0 if self.fn else 1.0)

    @property
    def sensitivity(self) -> float:
        """TP / (TP + FN); 1 on an image without truth."""
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0

    @property
    def f1(self) -> float:
        """F = 2 TP / (2 TP + FP + FN); 1 when there is neither truth nor prediction."""
        d = 2 * self.tp + self.fp + self.fn
        return 2 * self.tp / d if d else 1.0


def instance_scores(truth: np.ndarray, pred: np.ndarray, threshold: float = 0.5) -> InstanceScores:
    """TP / FP / FN between truth and predicted instances at an IoU threshold.

    Parameters
    ----------
    truth, pred : numpy.ndarray
        Integer label images of equal shape (2D or 3D), 0 = background.
    threshold : float, default 0.5
        Smallest IoU of a match, in (0, 1].

    Returns
    -------
    InstanceScores
        Counts, mean matched IoU, precision, sensitivity and F.
    """
    ov = overlap(truth, pred)
    r, _, ious = match(ov, threshold)
    tp = len(r)
    return InstanceScores(tp, len(ov.b_ids) - tp, len(ov.a_ids) - tp, float(ious.mean()) if tp else 0.0)


def _ratio(num: float, den: float, empty: float = 1.0) -> float:
    return float(num / den) if den else empty


def _precision(tp: float, fp: float, fn: float) -> float:
    """TP / (TP + FP); an empty prediction scores 0 where there was truth to find (as StarDist's
    ``matching`` and scikit-learn), 1 on an empty image."""
    return _ratio(tp, tp + fp, empty=0.0 if fn else 1.0)


def _mcc(tp: float, fp: float, fn: float, tn: float) -> float:
    """Matthews correlation; 1 when prediction equals truth with a single class present, else 0 on a zero
    denominator (scikit-learn returns 0 there; the perfect single-class case is our convention).

    In floating point, factor by factor: the product of the four integer sums leaves int64 for images
    above ~300² pixels."""
    tp, fp, fn, tn = (float(v) for v in (tp, fp, fn, tn))
    den = np.sqrt(tp + fp) * np.sqrt(tp + fn) * np.sqrt(tn + fp) * np.sqrt(tn + fn)
    if den == 0:
        return 1.0 if fp == 0 and fn == 0 else 0.0
    return float((tp * tn - fp * fn) / den)


def pixel_confusion(truth_fg: np.ndarray, pred_fg: np.ndarray) -> tuple[int, int, int, int]:
    """Pixel confusion counts of two foreground masks.

    Parameters
    ----------
    truth_fg, pred_fg : numpy.ndarray
        Foreground masks of equal shape (converted to bool).

    Returns
    -------
    tuple of int
        ``(TP, FP, FN, TN)`` in pixels (voxels in 3D).
    """
    t = np.asarray(truth_fg, bool)
    p = np.asarray(pred_fg, bool)
    tp = int(np.count_nonzero(t & p))
    fp = int(np.count_nonzero(~t & p))
    fn = int(np.count_nonzero(t & ~p))
    return tp, fp, fn, t.size - tp - fp - fn


def image_metrics(truth: np.ndarray, pred: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """All metrics of one image (Supp. Fig. 9b), as a flat dict.

    Parameters
    ----------
    truth, pred : numpy.ndarray
        Integer label images of equal shape ((y, x) slices; 3D works too), 0 = background.
    threshold : float, default 0.5
        Smallest IoU of an instance match, in (0, 1].

    Returns
    -------
    dict of str to float
        Instance level (IoU-matched at ``threshold``): ``tp``, ``fp``, ``fn`` (counts), ``precision``,
        ``sensitivity``, ``f``; matched-pixel ``jaccard``, ``dice``, ``mcc`` (the figure's; merges and splits
        penalised); plain foreground-vs-background ``precision_pixel``, ``sensitivity_pixel``,
        ``jaccard_pixel``, ``dice_pixel``, ``mcc_pixel`` (scikit-learn's on the binarised masks);
        ``jaccard_instance``, ``dice_instance`` (IoU and Dice averaged over matched pairs, 0 when none).
        Scores lie in [0, 1] (MCC in [-1, 1]), no NaN. Definitions and empty images: docs/methods.md,
        Instance metrics.
    """
    truth = np.asarray(truth)
    pred = np.asarray(pred)
    ov = overlap(truth, pred)
    r, c, ious = match(ov, threshold)
    tp, fp, fn = len(r), len(ov.b_ids) - len(r), len(ov.a_ids) - len(r)
    out = {"tp": tp, "fp": fp, "fn": fn, "precision": _precision(tp, fp, fn), "sensitivity": _ratio(tp, tp + fn),
           "f": _ratio(2 * tp, 2 * tp + fp + fn)}
    # matched-pixel confusion from the sparse overlap table
    matched_overlap = 0
    if len(r):
        lookup = {(int(a), int(b)): int(n) for (a, b), n in zip(ov.pairs, ov.counts)}
        matched_overlap = sum(lookup.get((int(a), int(b)), 0) for a, b in zip(r, c))
    n_truth, n_pred = int(ov.a_sizes.sum()), int(ov.b_sizes.sum())
    mtp = matched_overlap
    mfp = n_pred - mtp
    mfn = n_truth - mtp
    both_bg = int(np.count_nonzero((truth == 0) & (pred == 0)))
    out["jaccard"] = _ratio(mtp, mtp + mfp + mfn)
    out["dice"] = _ratio(2 * mtp, 2 * mtp + mfp + mfn)
    # pixels in both foregrounds but unmatched are counted once as FP and once as FN; TN = background in both
    out["mcc"] = _mcc(mtp, mfp, mfn, both_bg)
    ptp, pfp, pfn, ptn = pixel_confusion(truth > 0, pred > 0)
    out["precision_pixel"] = _precision(ptp, pfp, pfn)
    out["sensitivity_pixel"] = _ratio(ptp, ptp + pfn)
    out["jaccard_pixel"] = _ratio(ptp, ptp + pfp + pfn)
    out["dice_pixel"] = _ratio(2 * ptp, 2 * ptp + pfp + pfn)
    out["mcc_pixel"] = _mcc(ptp, pfp, pfn, ptn)
    if len(r):
        sizes_a, sizes_b = ov.a_sizes[r], ov.b_sizes[c]
        inter = ious * (sizes_a + sizes_b) / (1 + ious)
        out["jaccard_instance"] = float(ious.mean())
        out["dice_instance"] = float(np.mean(2 * inter / (sizes_a + sizes_b)))
    else:
        out["jaccard_instance"] = out["dice_instance"] = 0.0
    return out


AP_THRESHOLDS = tuple(round(0.5 + 0.05 * k, 2) for k in range(10))


def ap_curve(truth: np.ndarray, pred: np.ndarray, thresholds=AP_THRESHOLDS) -> dict[float, float]:
    """Matching score TP / (TP + FP + FN) at a series of IoU thresholds (the AP-style curve).

    One overlap table serves every threshold.

    Parameters
    ----------
    truth, pred : numpy.ndarray
        Integer label images of equal shape, 0 = background.
    thresholds : iterable of float, default :data:`AP_THRESHOLDS`
        IoU thresholds in (0, 1]; the default is 0.5, 0.55, ..., 0.95.

    Returns
    -------
    dict of float to float
        Threshold (rounded to 2 decimals) to score in [0, 1] (1 when both images are empty).
    """
    ov = overlap(truth, pred)
    out = {}
    for t in thresholds:
        r, _, _ = match(ov, float(t))
        tp = len(r)
        out[round(float(t), 2)] = _ratio(tp, len(ov.a_ids) + len(ov.b_ids) - tp)
    return out


FIGURE_METRICS = ("precision", "sensitivity", "jaccard", "dice", "f", "mcc")


def particle_scores(truth: np.ndarray, pred: np.ndarray, threshold: float = 0.5, spread: float = 0.2
                    ) -> dict[str, float]:
    """3D particle recovery against truth, from one sparse overlap.

    Parameters
    ----------
    truth, pred : numpy.ndarray
        (z, y, x) integer label volumes of equal shape, 0 = background.
    threshold : float, default 0.5
        Smallest 3D IoU of a one-to-one match, in (0, 1].
    spread : float, default 0.2
        Fraction (0-1) of a particle's voxels that another particle must hold to count in a split or
        merge.

    Returns
    -------
    dict of str to float
        ``n_true``, ``n_pred``: particles in each volume. ``recovered``: fraction of true particles
        matched one-to-one at IoU ≥ ``threshold`` (1 without true particles). ``split_rate``: fraction
        of true particles with more than ``spread`` of their voxels in each of two or more predicted
        particles. ``merge_rate``: number of predicted particles holding more than ``spread`` of their
        voxels from each of two or more true particles, over the number of true particles.
        ``mean_iou``: mean IoU of the matches (0 when none).
    """
    ov = overlap(truth, pred)
    r, _, ious = match(ov, threshold)
    n_true, n_pred = len(ov.a_ids), len(ov.b_ids)
    ia, ib = ov.pairs[:, 0], ov.pairs[:, 1]
    frac_t = ov.counts / ov.a_sizes[ia] if len(ia) else np.zeros(0)
    frac_p = ov.counts / ov.b_sizes[ib] if len(ib) else np.zeros(0)
    splits = int((np.bincount(ia[frac_t > spread], minlength=n_true) > 1).sum()) if n_true else 0
    merges = int((np.bincount(ib[frac_p > spread], minlength=n_pred) > 1).sum()) if n_pred else 0
    return {"n_true": n_true, "n_pred": n_pred, "recovered": _ratio(len(r), n_true),
            "split_rate": _ratio(splits, n_true, 0.0), "merge_rate": _ratio(merges, n_true, 0.0),
            "mean_iou": float(ious.mean()) if len(ious) else 0.0}
