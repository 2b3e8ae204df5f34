"""CNN vs watershed on the same test slices: per-image metrics, summary with paired tests (Supp. Fig. 9b).

Main entry points: :func:`cnn_labels_on_split`, :func:`method_predictions`, :func:`per_image_table`,
:func:`summary_table`, :func:`ap_table`.
"""

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
    """One row per (method, test image) with every metric of :func:`detachment.metrics.image_metrics`.

    Parameters
    ----------
    truth : numpy.ndarray
        (n, y, x) integer annotated instances of the test slices, 0 = background.
    predictions : dict of str to numpy.ndarray
        Method name to its (n, y, x) integer instances on the same slices.
    samples, zs : sequence of length n
        Sample and z slice of each test slice.
    iou_threshold : float, default 0.5
        Smallest IoU of an instance match, in (0, 1].

    Returns
    -------
    pandas.DataFrame
        Columns ``method``, ``sample``, ``z``, ``image`` (index in the split), then the metrics.
    """
    rows = []
    for method, pred in predictions.items():
        for i, (t, p) in enumerate(zip(truth, pred)):
            rows.append({"method": method, "sample": samples[i], "z": int(zs[i]), "image": i,
                         **image_metrics(t, p, iou_threshold)})
    return pd.DataFrame(rows)


def paired_wilcoxon(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value of paired samples; 1.0 when all differences are zero.

    Parameters
    ----------
    a, b : array_like
        Paired values of equal length (e.g. one metric of two methods on the same images).

    Returns
    -------
    float
        The p-value (zero differences dropped, ``zero_method="wilcox"``); 1.0 for no pairs or all
        differences zero.
    """
    d = np.asarray(a, float) - np.asarray(b, float)
    if len(d) == 0 or np.allclose(d, 0):
        return 1.0
    return float(stats.wilcoxon(a, b, zero_method="wilcox").pvalue)


def summary_table(per_image: pd.DataFrame, reference: str = "cnn") -> pd.DataFrame:
    """One row per (method, metric): mean, std (ddof=1), n, and the paired Wilcoxon p-value against
    ``reference`` (for the reference itself: against the first other method, the paper's watershed).
    ``difference`` = the reference's mean minus this method's (for the reference: minus the first
    other method's).

    Parameters
    ----------
    per_image : pandas.DataFrame
        :func:`per_image_table` output; images are paired by ``image``.
    reference : str, default "cnn"
        Method the others are tested against.

    Returns
    -------
    pandas.DataFrame
        Columns ``method``, ``metric`` (each of :data:`SUMMARY_METRICS`), ``mean``, ``std`` (0 for one
        image), ``n``, ``p_value`` (NaN without a method to pair with) and ``difference``.
    """
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
    slices_paths : dict of str to str or os.PathLike
        Sample name to its per-slice CNN output (``cnn/slices.h5``).
    samples, zs : sequence of length n
        Sample and z slice of each test slice.
    shape : tuple of int
        (n, y, x) shape of the test split's images.

    Returns
    -------
    numpy.ndarray
        (n, y, x) uint32 instance labels, 0 = background.
    """
    cnn = np.zeros(shape, np.uint32)
    for i, (sample, z) in enumerate(zip(samples, zs)):
        cnn[i] = io.read_region(slices_paths[sample], "labels", int(z))
    return cnn


def method_predictions(images: np.ndarray, cnn: np.ndarray, tuned: dict) -> dict[str, np.ndarray]:
    """Every method's instances on the test slices: the CNN, then each tuned watershed.

    Parameters
    ----------
    images : numpy.ndarray
        (n, y, x) float grey levels of the test slices.
    cnn : numpy.ndarray
        (n, y, x) integer CNN instances on them, 0 = background.
    tuned : dict
        The watershed tuning result (``per_marker``: marker kind to :class:`WatershedParams` fields);
        marker kind ``intensity`` is named ``watershed``, others ``watershed_<kind>``.

    Returns
    -------
    dict of str to numpy.ndarray
        Method name to (n, y, x) integer instances, ordered: ``cnn``, ``watershed``, then the other
        watersheds by name.
    """
    predictions = {"cnn": cnn}
    for markers, params in tuned["per_marker"].items():
        name = "watershed" if markers == "intensity" else f"watershed_{markers}"
        p = WatershedParams(**params)
        predictions[name] = np.stack([segment(im, p) for im in images])
    return {k: predictions[k] for k in sorted(predictions, key=lambda k: (k != "cnn", k != "watershed", k))}


def ap_table(truth: np.ndarray, predictions: dict[str, np.ndarray]) -> pd.DataFrame:
    """Average precision at each IoU threshold, per method and test image (:func:`metrics.ap_curve`).

    Parameters
    ----------
    truth : numpy.ndarray
        (n, y, x) integer annotated instances of the test slices, 0 = background.
    predictions : dict of str to numpy.ndarray
        Method name to its (n, y, x) integer instances on the same slices.

    Returns
    -------
    pandas.DataFrame
        Columns ``method``, ``image``, ``iou_threshold`` (0.5, 0.55, ..., 0.95) and ``score``, the
        matching score TP / (TP + FP + FN) in [0, 1].
    """
    return pd.DataFrame([{"method": m, "image": i, "iou_threshold": t, "score": v}
                         for m, pred in predictions.items() for i, (t_img, p_img) in enumerate(zip(truth, pred))
                         for t, v in ap_curve(t_img, p_img).items()])
