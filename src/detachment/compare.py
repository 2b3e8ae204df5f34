"""CNN vs watershed on the same test slices: per-image metrics, summary with paired tests (Supp. Fig. 9b)."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from scipy import stats

from .metrics import FIGURE_METRICS, image_metrics

log = logging.getLogger(__name__)

SUMMARY_METRICS = FIGURE_METRICS + ("precision_pixel", "sensitivity_pixel", "jaccard_pixel", "dice_pixel",
                                    "mcc_pixel", "jaccard_instance", "dice_instance")


def per_image_table(truth: np.ndarray, predictions: dict[str, np.ndarray], samples, zs,
                    iou_threshold: float = 0.5) -> pd.DataFrame:
    """One row per (method, test image) with every metric of :func:`detachment.metrics.image_metrics`."""
    rows = []
    for method, pred in predictions.items():
        for i, (t, p) in enumerate(zip(truth, pred)):
            rows.append({"method": method, "sample": samples[i], "z": int(zs[i]), "image": i,
                         **image_metrics(t, p, iou_threshold)})
    return pd.DataFrame(rows)


def paired_wilcoxon(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value of paired samples; 1.0 when all differences are zero."""
    d = np.asarray(a, float) - np.asarray(b, float)
    if len(d) == 0 or np.allclose(d, 0):
        return 1.0
    return float(stats.wilcoxon(a, b, zero_method="wilcox").pvalue)


def summary_table(per_image: pd.DataFrame, reference: str = "cnn") -> pd.DataFrame:
    """One row per (method, metric): mean, std (ddof=1), n, and the paired Wilcoxon p-value against
    ``reference`` (for the reference itself: against the first other method, the paper's watershed).
    ``difference`` = the reference's mean minus this method's (for the reference: minus the first
    other method's)."""
    methods = list(dict.fromkeys(per_image.method))
    others = [m for m in methods if m != reference]
    rows = []
    for method in methods:
        against = others[0] if method == reference and others else reference
        a = per_image[per_image.method == method].sort_values("image")
        b = per_image[per_image.method == against].sort_values("image")
        for metric in SUMMARY_METRICS:
            x = a[metric].to_numpy(float)
            y = b[metric].to_numpy(float)
            p = paired_wilcoxon(x, y) if against != method and len(x) == len(y) else np.nan
            ref_mean = x.mean() if method == reference else y.mean()
            other_mean = y.mean() if method == reference else x.mean()
            # no column naming the other method: DESIGN's readers find a method's rows by its name
            rows.append({"method": method, "metric": metric, "mean": x.mean(),
                         "std": x.std(ddof=1) if len(x) > 1 else 0.0, "n": len(x), "p_value": p,
                         "difference": ref_mean - other_mean})
    return pd.DataFrame(rows)
