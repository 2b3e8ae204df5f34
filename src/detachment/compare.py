"""CNN vs watershed on the same test slices: per-image metrics, summary with paired tests (Supp. Fig. 9b)."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from scipy import stats

from . import io
from .metrics import FIGURE_METRICS, ap_curve, image_metrics
from .watershed import WatershedParams, segment

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


def cnn_labels_on_split(slices_paths: dict, samples, zs, shape) -> np.ndarray:
    """The CNN's per-slice instances (``cnn/slices.h5`` ``/labels``) at the split's slices.

    Parameters
    ----------
    slices_paths : dict of str to path
        Each sample's per-slice CNN output.
    samples, zs : sequences of length n
        Sample and z slice of each test slice.
    shape : tuple (n, y, x)
        Shape of the test split's images.

    Returns
    -------
    (n, y, x) uint32
        Instance labels, 0 = background.
    """
    cnn = np.zeros(shape, np.uint32)
    for i, (sample, z) in enumerate(zip(samples, zs)):
        cnn[i] = io.read_region(slices_paths[sample], "labels", int(z))
    return cnn


def method_predictions(images: np.ndarray, cnn: np.ndarray, tuned: dict) -> dict[str, np.ndarray]:
    """Every method's instances on the test slices: the CNN, then each tuned watershed.

    Parameters
    ----------
    images : (n, y, x) float
        Test slices.
    cnn : (n, y, x) int
        The CNN's instances on them.
    tuned : dict
        The watershed tuning result (``per_marker``: marker kind to :class:`WatershedParams` fields);
        marker kind ``intensity`` is named ``watershed``, others ``watershed_<kind>``.

    Returns
    -------
    dict of str to (n, y, x) int
        Ordered: ``cnn``, ``watershed``, then the other watersheds by name.
    """
    predictions = {"cnn": cnn}
    for markers, params in tuned["per_marker"].items():
        name = "watershed" if markers == "intensity" else f"watershed_{markers}"
        p = WatershedParams(**params)
        predictions[name] = np.stack([segment(im, p) for im in images])
    return {k: predictions[k] for k in sorted(predictions, key=lambda k: (k != "cnn", k != "watershed", k))}


def ap_table(truth: np.ndarray, predictions: dict[str, np.ndarray]) -> pd.DataFrame:
    """Average precision at each IoU threshold, per method and test image (:func:`metrics.ap_curve`).

    Returns
    -------
    pandas.DataFrame
        Columns ``method``, ``image``, ``iou_threshold``, ``score``.
    """
    return pd.DataFrame([{"method": m, "image": i, "iou_threshold": t, "score": v}
                         for m, pred in predictions.items() for i, (t_img, p_img) in enumerate(zip(truth, pred))
                         for t, v in ap_curve(t_img, p_img).items()])
