"""Matching and six-metric definitions against analytic cases and scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score, jaccard_score, matthews_corrcoef, precision_score, recall_score

from detachment.metrics import ap_curve, image_metrics, instance_scores, match, overlap


def disk(shape, cy, cx, r):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2


def square_labels(shape, boxes):
    lab = np.zeros(shape, np.int32)
    for i, (y, x, s) in enumerate(boxes, 1):
        lab[y:y + s, x:x + s] = i
    return lab


def test_shifted_squares_have_analytic_iou_and_exact_counts():
    # 10x10 squares shifted by d px along x: IoU = (10 - d) / (10 + d)
    shifts = [0, 2, 4, 6]
    truth = square_labels((40, 200), [(5, 10 + 40 * k, 10) for k in range(4)])
    pred = square_labels((40, 200), [(5, 10 + 40 * k + d, 10) for k, d in enumerate(shifts)])
    ov = overlap(truth, pred)
    expected = sorted((10 - d) / (10 + d) for d in shifts)
    np.testing.assert_allclose(sorted(ov.iou()), expected)
    # IoU 1, 0.667, 0.429, 0.25: at threshold 0.5 two match
    s = instance_scores(truth, pred, 0.5)
    assert (s.tp, s.fp, s.fn) == (2, 2, 2)
    assert instance_scores(truth, pred, 0.4).tp == 3
    assert instance_scores(truth, pred, 0.2).tp == 4


def test_shifted_disks_match_one_to_one_and_extra_prediction_is_fp():
    t = np.zeros((64, 64), np.int32)
    p = np.zeros((64, 64), np.int32)
    t[disk(t.shape, 20, 20, 8)] = 1
    t[disk(t.shape, 44, 44, 8)] = 2
    p[disk(p.shape, 21, 20, 8)] = 7
    p[disk(p.shape, 44, 45, 8)] = 3
    p[disk(p.shape, 10, 52, 4)] = 9
    r, c, ious = match(overlap(t, p), 0.5)
    assert len(r) == 2 and (ious > 0.8).all()
    m = image_metrics(t, p)
    assert (m["tp"], m["fp"], m["fn"]) == (2, 1, 0)
    assert m["precision"] == pytest.approx(2 / 3) and m["sensitivity"] == 1.0


def test_pixel_metrics_equal_scikit_learn():
    rng = np.random.default_rng(0)
    t = np.zeros((50, 50), np.int32)
    p = np.zeros((50, 50), np.int32)
    for k in range(6):
        cy, cx = rng.integers(8, 42, 2)
        t[disk(t.shape, cy, cx, 6)] = k + 1
        p[disk(p.shape, cy + rng.integers(-3, 4), cx + rng.integers(-3, 4), 6)] = k + 1
    m = image_metrics(t, p)
    yt, yp = (t > 0).ravel(), (p > 0).ravel()
    assert m["precision_pixel"] == pytest.approx(precision_score(yt, yp))
    assert m["sensitivity_pixel"] == pytest.approx(recall_score(yt, yp))
    assert m["jaccard_pixel"] == pytest.approx(jaccard_score(yt, yp))
    assert m["dice_pixel"] == pytest.approx(f1_score(yt, yp))
    assert m["mcc_pixel"] == pytest.approx(matthews_corrcoef(yt, yp))


def test_matched_pixel_metrics_penalise_a_merge_that_pixel_metrics_miss():
    t = np.zeros((30, 60), np.int32)
    t[5:25, 5:35] = 1  # 600 px
    t[5:25, 37:55] = 2  # 360 px
    p = np.zeros_like(t)
    p[5:25, 5:55] = 1  # one prediction covering both: IoU 0.6 with the first
    m = image_metrics(t, p)
    assert m["jaccard_pixel"] > 0.9
    assert m["tp"] == 1 and m["fn"] == 1
    # matched pixels 600, false positives 400, false negatives 360
    assert m["jaccard"] == pytest.approx(600 / 1360)
    assert m["dice"] < m["dice_pixel"]


def test_perfect_prediction_scores_one_everywhere():
    t = square_labels((30, 30), [(2, 2, 8), (15, 15, 10)])
    m = image_metrics(t, t.copy())
    for k in ("precision", "sensitivity", "f", "jaccard", "dice", "mcc", "mcc_pixel", "jaccard_instance"):
        assert m[k] == pytest.approx(1.0), k


@pytest.mark.parametrize("truth_empty,pred_empty", [(True, True), (True, False), (False, True)])
def test_empty_images_follow_the_documented_convention(truth_empty, pred_empty):
    full = square_labels((20, 20), [(3, 3, 6)])
    t = np.zeros((20, 20), np.int32) if truth_empty else full
    p = np.zeros((20, 20), np.int32) if pred_empty else full
    m = image_metrics(t, p)
    assert all(np.isfinite(v) for v in m.values())
    expected = {(True, True): (1.0, 1.0), (True, False): (0.0, 1.0), (False, True): (0.0, 0.0)}
    assert (m["precision"], m["sensitivity"]) == expected[(truth_empty, pred_empty)]
    assert instance_scores(t, p).precision == expected[(truth_empty, pred_empty)][0]
    if not truth_empty:  # scikit-learn's pixel precision of an empty prediction is 0 (zero_division=0)
        from sklearn.metrics import precision_score

        ref = precision_score((t > 0).ravel(), (p > 0).ravel(), zero_division=0)
        assert m["precision_pixel"] == ref


@pytest.mark.parametrize("size", [1024, 2048])
def test_pixel_mcc_is_exact_on_paper_sized_images_against_scikit_learn(size):
    from sklearn.metrics import matthews_corrcoef

    rng = np.random.default_rng(size)
    t = np.zeros((size, size), np.int32)
    p = np.zeros_like(t)
    for k in range(1, 150):
        y, x = rng.integers(0, size - 60, 2)
        t[y:y + 50, x:x + 50] = k
        p[y + 3:y + 53, x + 2:x + 52] = k
    m = image_metrics(t, p)
    assert m["mcc_pixel"] == pytest.approx(matthews_corrcoef((t > 0).ravel(), (p > 0).ravel()), abs=1e-12)
    assert 0 < m["mcc"] <= m["mcc_pixel"]


def test_overlap_works_in_3d_and_refuses_shape_mismatch():
    a = np.zeros((4, 10, 10), np.int32)
    a[1:3, 2:6, 2:6] = 5
    b = np.roll(a, 1, axis=0)
    ov = overlap(a, b)
    assert ov.counts.tolist() == [16] and ov.iou()[0] == pytest.approx(16 / 48)
    with pytest.raises(ValueError, match="differ in shape"):
        overlap(a, b[:3])


def test_ap_curve_falls_with_threshold():
    t = square_labels((40, 200), [(5, 10 + 40 * k, 10) for k in range(4)])
    p = square_labels((40, 200), [(5, 10 + 40 * k + d, 10) for k, d in enumerate([0, 1, 2, 3])])
    curve = ap_curve(t, p)
    values = list(curve.values())
    assert values[0] == 1.0 and values == sorted(values, reverse=True) and values[-1] < 0.5
