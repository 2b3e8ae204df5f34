"""Validation across the phantom family: per-sample metrics against the truth, in one long table.

Rows are ``preset, sample, split, metric, value``; ``split`` is ``in_sample`` for a cell whose slices
were labelled for training (its whole volume is scored) and ``out_of_sample`` for an unseen cell (no
slice labelled, trained or tuned on). Detachment is scored against the truth measured on the planted
geometry (:mod:`detachment.truth`), not against the pipeline's own estimator.

Main entry points: :func:`sample_metrics`, :func:`long_table`, :func:`effect_rows`, :func:`headline`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import ndimage

from .annotations import labelled_slices, relabel_slice
from .metrics import image_metrics, particle_scores
from .phases import AL, CBD, NMC_HIGH, NMC_LOW, VOID
from .validation import effect_size

COLUMNS = ("preset", "sample", "split", "metric", "value")
SPLITS = ("out_of_sample", "in_sample")
#: The headline metrics, in the order tables and figures show them.
METRICS = ("phase_accuracy", "phase_accuracy_every_code", "phase_accuracy_pure_voxels", "phase_accuracy_blurred_truth",
           "cnn_precision",
           "cnn_sensitivity", "recovery_3d", "split_merge_3d", "detachment_mae", "detachment_bias",
           "effect_found_over_planted")


def phase_accuracy(phases: np.ndarray, truth_phases: np.ndarray, merge_nmc: bool = False,
                   where: np.ndarray | None = None) -> float:
    """Fraction of voxels whose phase code equals the truth's.

    Parameters
    ----------
    phases, truth_phases : numpy.ndarray
        (z, y, x) uint8 phase codes (:mod:`detachment.phases`) of the pipeline and of the truth.
    merge_nmc : bool, default False
        Count NMC low and high density as one phase (for a map that declares them not resolved).
    where : numpy.ndarray, optional
        (z, y, x) bool: count these voxels only (NaN when none).

    Returns
    -------
    float
        Fraction, 0-1.

    Raises
    ------
    ValueError
        When the shapes differ.
    """
    if phases.shape != truth_phases.shape:
        raise ValueError(f"phase map shape {phases.shape} differs from the truth's {truth_phases.shape}")
    if merge_nmc:
        merge = np.array([VOID, CBD, NMC_LOW, NMC_LOW, AL], np.uint8)
        phases, truth_phases = merge[phases], merge[truth_phases]
    same = phases == truth_phases
    if where is None:
        return float(np.mean(same))
    return float(np.mean(same[where])) if where.any() else float("nan")


def blurred_truth_accuracy(truth_phases: np.ndarray, sigma, merge_nmc: bool = False) -> float:
    """Phase accuracy of the truth read back through its own point-spread function: a reference.

    Each voxel is given the phase with the largest share of its blurred neighbourhood,
    ``argmax_c (G_σ * [truth == c])`` (``scipy.ndimage.gaussian_filter``, borders repeated as the phantom
    blurs them): what a reader would get that knew every phase's grey level, saw no noise and decided each
    voxel on the blurred data alone. Phases thinner than the blur (a one-voxel pore in CBD, a coat) lose
    their voxels to their neighbours here. A reader that models the blur (``threshold.psf_refine``) can
    recover some of them, so this measures how much of the truth the blur hides, not a bound.

    Parameters
    ----------
    truth_phases : numpy.ndarray
        (z, y, x) uint8 truth phase codes.
    sigma : float or (3,) sequence of float
        The planted point-spread σ, voxels, one or per axis (z, y, x) (0: no blur, accuracy 1).
    merge_nmc : bool, default False
        Count NMC low and high density as one phase.

    Returns
    -------
    float
        Fraction, 0-1.
    """
    truth = np.asarray(truth_phases)
    if merge_nmc:
        truth = np.array([VOID, CBD, NMC_LOW, NMC_LOW, AL], np.uint8)[truth]
    sigma = np.broadcast_to(np.asarray(sigma, float), (3,))
    if not sigma.max() > 0:
        return 1.0
    best = np.full(truth.shape, -1.0, np.float32)
    read = np.zeros(truth.shape, np.uint8)
    for code in np.unique(truth):
        share = ndimage.gaussian_filter((truth == code).astype(np.float32), tuple(sigma), mode="nearest")
        wins = share > best
        read[wins], best[wins] = code, share[wins]
    return float(np.mean(read == truth))


def matched_errors(science_eval: pd.DataFrame, measured: pd.DataFrame, truth_table: pd.DataFrame, column: str
                   ) -> tuple[float, float]:
    """MAE and bias of the pipeline particles' ``column`` against their matched true particles'.

    Parameters
    ----------
    science_eval : pandas.DataFrame
        ``science_eval.csv``: rows with ``source`` ``"pipeline"`` pair ``label`` (pipeline) with
        ``truth_label``; ``border_truth`` rows are left out.
    measured, truth_table : pandas.DataFrame
        The pipeline's ``particles.csv`` and ``truth_particles.csv``, each with ``label`` and ``column``.
    column : str
        The column compared; pairs where either value is NaN are left out.

    Returns
    -------
    tuple of float
        (MAE, bias) in the column's units; NaN where no pair has both values.
    """
    pairs = science_eval[(science_eval.source == "pipeline") & ~science_eval.border_truth.astype(bool)]
    both = pairs[["label", "truth_label"]].merge(measured[["label", column]], on="label").merge(
        truth_table[["label", column]].rename(columns={"label": "truth_label"}), on="truth_label",
        suffixes=("", "_true"))
    e = (both[column] - both[f"{column}_true"]).dropna()
    return (np.nan, np.nan) if e.empty else (float(e.abs().mean()), float(e.mean()))


def nmc_high_fraction_errors(science_eval: pd.DataFrame, measured: pd.DataFrame, truth_table: pd.DataFrame
                             ) -> dict[str, float]:
    """MAE and bias of the pipeline particles' ``nmc_high_fraction`` against their matched true particles'
    (:func:`matched_errors`; the pipeline's is NaN where the phase map declares NMC high not resolved).

    Returns
    -------
    dict
        ``nmc_high_fraction_mae``, ``nmc_high_fraction_bias`` (share of the solid, 0-1; NaN where no
        particle has a measured value).
    """
    mae, bias = matched_errors(science_eval, measured, truth_table, "nmc_high_fraction")
    return {"nmc_high_fraction_mae": mae, "nmc_high_fraction_bias": bias}


def collector_distance_errors(science_eval: pd.DataFrame, measured: pd.DataFrame, truth_table: pd.DataFrame
                              ) -> dict[str, float]:
    """MAE and bias (µm) of the pipeline particles' ``distance_to_collector_um`` against their matched true
    particles' (:func:`matched_errors`): where the collector's top was found, flat or tilted, and each
    particle's lowest voxel above it.

    Returns
    -------
    dict
        ``collector_distance_mae_um``, ``collector_distance_bias_um``.
    """
    mae, bias = matched_errors(science_eval, measured, truth_table, "distance_to_collector_um")
    return {"collector_distance_mae_um": mae, "collector_distance_bias_um": bias}


def slice_detection_scores(truth_labels: np.ndarray, cnn_labels: np.ndarray, min_area: int,
                           iou_threshold: float = 0.5) -> dict[str, float]:
    """Mean per-slice instance precision and sensitivity of the CNN's slices against the truth.

    Only slices holding a truth instance of at least ``min_area`` px are scored, so detections in slices
    without truth do not count.

    Parameters
    ----------
    truth_labels : numpy.ndarray
        (z, y, x) integer truth instances; relabelled per slice (connected pieces of at least
        ``min_area`` px, as the annotations are built).
    cnn_labels : numpy.ndarray
        (z, y, x) integer per-slice CNN instances (``cnn/slices.h5`` ``/labels``).
    min_area : int
        Smallest truth instance counted, px.
    iou_threshold : float, default 0.5
        IoU of a match, in (0, 1].

    Returns
    -------
    dict
        ``cnn_precision``, ``cnn_sensitivity`` (means over the scored slices, 0-1; NaN when none) and
        ``n_slices`` (number of scored slices).
    """
    zs = labelled_slices(truth_labels, min_area)
    rows = [image_metrics(relabel_slice(truth_labels[z], min_area), cnn_labels[z], iou_threshold) for z in zs]
    if not rows:
        return {"cnn_precision": np.nan, "cnn_sensitivity": np.nan, "n_slices": 0}
    return {"cnn_precision": float(np.mean([r["precision"] for r in rows])),
            "cnn_sensitivity": float(np.mean([r["sensitivity"] for r in rows])), "n_slices": len(rows)}


def detachment_errors(science_eval: pd.DataFrame, source: str = "pipeline", column: str = "detachment_error"
                      ) -> dict[str, float]:
    """MAE and mean (bias) of measured − true detachment over the matched particles of one source.

    Parameters
    ----------
    science_eval : pandas.DataFrame
        Rows of :func:`detachment.validation.compare_particles` (``science_eval.csv``), with columns
        ``source`` and ``detachment_error``.
    source : str, default "pipeline"
        ``"pipeline"`` (the pipeline's particles) or ``"true"`` (the truth's own envelopes).
    column : str, default "detachment_error"
        The error column: ``detachment_error`` (against the truth) or ``detachment_error_voxel_truth``
        (against the voxelised truth; a table without it gives NaN).

    Returns
    -------
    dict
        ``mae`` and ``bias`` (detachment fraction; NaN without rows) and ``n`` (particles used).
    """
    if column not in science_eval:
        return {"mae": np.nan, "bias": np.nan, "n": 0}
    e = science_eval.loc[science_eval.source == source, column].dropna()
    if e.empty:
        return {"mae": np.nan, "bias": np.nan, "n": 0}
    return {"mae": float(e.abs().mean()), "bias": float(e.mean()), "n": int(e.size)}


def sample_metrics(truth_labels, truth_phases, phases, cnn_slices, particles, science_eval: pd.DataFrame,
                   min_area: int, iou_threshold: float = 0.5, nmc_merged: bool = False,
                   purity: np.ndarray | None = None, blur_sigma=float("nan")) -> dict[str, float]:
    """Every per-sample metric of one phantom cell.

    Parameters
    ----------
    truth_labels, truth_phases, phases, cnn_slices, particles : numpy.ndarray
        (z, y, x): truth instances (0 = background), truth phase codes (uint8), the pipeline's phase codes,
        per-slice CNN instances (ids per slice) and linked 3D particles.
    science_eval : pandas.DataFrame
        Per matched particle, measured vs true detachment (``science_eval.csv``).
    min_area : int
        Smallest truth instance counted in a slice, px (:func:`slice_detection_scores`).
    iou_threshold : float, default 0.5
        IoU of a match, per slice and for ``recovery_3d``.
    nmc_merged : bool, default False
        Whether the phase map declares NMC high density not resolved (its attribute ``unresolved``).
    purity : numpy.ndarray, optional
        (z, y, x) share of each voxel's sub-voxels in its truth phase (truth ``/phase_purity`` of a phantom
        drawn on sub-voxels); None: every voxel holds one phase.
    blur_sigma : float or (3,) sequence of float, optional
        The phantom's planted point-spread σ (voxels; one, or per axis z, y, x) for
        ``phase_accuracy_blurred_truth``; NaN: NaN.

    Returns
    -------
    dict of str to float
        ``phase_accuracy`` (NMC low and high counted as one where ``nmc_merged``: the map declared them not
        resolved), ``phase_accuracy_every_code`` (every code must match), ``phase_accuracy_pure_voxels``
        (``phase_accuracy`` on the voxels that hold one phase only) with ``pure_voxel_share``, ``phase_accuracy_contact_layer``
        (``phase_accuracy`` on :func:`contact_layer`), ``phase_accuracy_blurred_truth``
        (:func:`blurred_truth_accuracy`, NMC merged as in ``phase_accuracy``), ``cnn_precision``, ``cnn_sensitivity``,
        ``recovery_3d`` (true particles matched one-to-one at 3D IoU ≥ ``iou_threshold``),
        ``split_merge_3d`` (split + merge rate), ``detachment_mae`` / ``detachment_bias`` (pipeline particles as matched in ``science_eval``), the
        same on the truth's own particles (``*_true_envelopes``: their envelopes refined on the phase map as
        the CNN's are; phases and contact reading without segmentation errors), both MAEs against the voxelised truth (``detachment_mae_voxel_truth``,
        ``detachment_mae_voxel_truth_true_envelopes``: the face count on the planted phases), and
        ``n_particles_truth`` / ``n_particles_matched``. The workflow adds
        ``phase_map_plausible`` (1 when every check of :mod:`detachment.plausibility` passed),
        ``contact_reading_plausible`` (:func:`contact_reading_plausible`) and the
        ``nmc_high_fraction_*`` errors (:func:`nmc_high_fraction_errors`).
    """
    out = _phase_metrics(phases, truth_phases, nmc_merged, purity, blur_sigma)
    out.update({k: v for k, v in slice_detection_scores(truth_labels, cnn_slices, min_area, iou_threshold).items()
                if k != "n_slices"})
    ps = particle_scores(truth_labels, particles, iou_threshold)
    out["recovery_3d"] = ps["recovered"]
    out["split_merge_3d"] = ps["split_rate"] + ps["merge_rate"]
    pipe, true = detachment_errors(science_eval, "pipeline"), detachment_errors(science_eval, "true")
    out.update({"detachment_mae": pipe["mae"], "detachment_bias": pipe["bias"],
                "detachment_mae_true_envelopes": true["mae"], "detachment_bias_true_envelopes": true["bias"],
                "n_particles_truth": float(ps["n_true"]), "n_particles_matched": float(pipe["n"])})
    for source, suffix in (("pipeline", ""), ("true", "_true_envelopes")):
        out["detachment_mae_voxel_truth" + suffix] = detachment_errors(science_eval, source,
                                                                        "detachment_error_voxel_truth")["mae"]
    return out


def contact_layer(truth_phases: np.ndarray) -> np.ndarray:
    """(z, y, x) bool: the voxels outside the truth's NMC that share a face with it (the layer a particle's
    contacts are read on)."""
    nmc = (truth_phases == NMC_LOW) | (truth_phases == NMC_HIGH)
    return ndimage.binary_dilation(nmc, ndimage.generate_binary_structure(3, 1)) & ~nmc


def _phase_metrics(phases, truth_phases, nmc_merged: bool, purity, blur_sigma) -> dict[str, float]:
    """The phase accuracies of :func:`sample_metrics` (NMC merged where declared, every code, on pure voxels,
    on the contact layer, of the blurred truth) and the pure share."""
    pure = None if purity is None else np.asarray(purity) >= 1.0
    return {"phase_accuracy": phase_accuracy(phases, truth_phases, merge_nmc=nmc_merged),
            "phase_accuracy_every_code": phase_accuracy(phases, truth_phases),
            "phase_accuracy_pure_voxels": phase_accuracy(phases, truth_phases, nmc_merged, pure),
            "pure_voxel_share": 1.0 if pure is None else float(pure.mean()),
            "phase_accuracy_contact_layer": phase_accuracy(phases, truth_phases, nmc_merged,
                                                           contact_layer(truth_phases)),
            "phase_accuracy_blurred_truth": (blurred_truth_accuracy(truth_phases, blur_sigma, nmc_merged)
                                             if np.isfinite(blur_sigma).all() else float("nan"))}


def contact_reading_plausible(contact_level_path) -> float:
    """1.0 when a sample's contact reading was not ambiguous, else 0.0.

    Parameters
    ----------
    contact_level_path : str or os.PathLike
        The sample's ``contact_level.csv``; its ``ambiguous`` column
        (:func:`detachment.plausibility.contacts_ambiguous`), absent in files written before it existed.

    Returns
    -------
    float
        0.0 where ``ambiguous`` is true, 1.0 where false, NaN where the column is absent.
    """
    t = pd.read_csv(contact_level_path)
    if "ambiguous" not in t.columns:
        return float("nan")
    return 0.0 if bool(t.ambiguous.iloc[0]) else 1.0


def contact_separation(contact_level_path) -> float:
    """A sample's gap / CBD separation, Ashman's D (``contact_level.csv``'s ``separation``; NaN where nothing
    was fitted or the column is absent): below :data:`detachment.plausibility.MIN_CONTACT_SEPARATION` the
    reading stops, below :data:`detachment.plausibility.WEAK_CONTACT_SEPARATION` it warns."""
    t = pd.read_csv(contact_level_path)
    return float(t.separation.iloc[0]) if "separation" in t.columns else float("nan")


def self_consistency_metrics(paths) -> dict[str, float]:
    """``contact_reading_self_consistent`` (1.0 or 0.0) and ``self_consistency_shift`` (the particles' mean move,
    detachment fraction) from a sample's ``self_consistency.csv``
    (:class:`detachment.self_consistency.SelfConsistency`); both NaN where the check was not run.

    Parameters
    ----------
    paths : list of str
        The sample's ``self_consistency.csv``, or nothing (config ``science.self_consistency: skip``).
    """
    if not paths:
        return {"contact_reading_self_consistent": float("nan"), "self_consistency_shift": float("nan")}
    t = pd.read_csv(paths[0])
    return {"contact_reading_self_consistent": float(bool(t.consistent.iloc[0])),
            "self_consistency_shift": float(t["shift"].iloc[0])}


def long_table(preset: str, sample: str, split: str, metrics: dict[str, float]) -> pd.DataFrame:
    """``metrics`` as rows of the long layout (:data:`COLUMNS`).

    Parameters
    ----------
    preset : str
        Phantom preset of the sample.
    sample : str
        Sample name.
    split : str
        ``"in_sample"`` or ``"out_of_sample"``.
    metrics : dict of str to float
        Metric name to value (:func:`sample_metrics`).

    Returns
    -------
    pandas.DataFrame
        One row per metric, columns :data:`COLUMNS`.

    Raises
    ------
    ValueError
        When ``split`` is not one of :data:`SPLITS`.
    """
    if split not in SPLITS:
        raise ValueError(f"split {split!r} is not one of {SPLITS}")
    return pd.DataFrame([{"preset": preset, "sample": sample, "split": split, "metric": k, "value": float(v)}
                         for k, v in metrics.items()], columns=list(COLUMNS))


def effect_rows(samples: pd.DataFrame, truth_tables: dict[str, pd.DataFrame],
                measured: dict[str, pd.DataFrame], exclude_border: bool = True) -> pd.DataFrame:
    """Found over planted 1C − C/10 difference of mean detachment, per (preset, split).

    Parameters
    ----------
    samples : pandas.DataFrame
        One row per sample with columns ``sample``, ``preset``, ``split``, ``c_rate`` (``"1C"`` and
        ``"C/10"`` are compared).
    truth_tables : dict of str to pandas.DataFrame
        Per sample, the truth table (its ``detachment`` is the planted geometry's).
    measured : dict of str to pandas.DataFrame
        Per sample, the pipeline's particle table.
    exclude_border : bool, default True
        Leave particles cut by the volume border out, as the statistics do.

    Returns
    -------
    pandas.DataFrame
        Long rows (:data:`COLUMNS`; ``sample`` = the samples joined by ``+``) for
        ``effect_found_over_planted``, ``effect_planted`` and ``effect_found`` (detachment fraction);
        none for a group lacking either C-rate.
    """
    rows = []
    for (preset, split), g in samples.groupby(["preset", "split"], sort=False):
        names = list(g["sample"])
        rates = dict(zip(g["sample"], g["c_rate"]))
        e = effect_size({s: truth_tables[s] for s in names}, {s: measured[s] for s in names}, rates,
                        exclude_border=exclude_border)
        if not e:
            continue
        for metric, key in (("effect_found_over_planted", "found_over_planted"),
                            ("effect_planted", "planted_difference"), ("effect_found", "found_difference")):
            rows.append({"preset": preset, "sample": "+".join(names), "split": split, "metric": metric,
                         "value": float(e[key])})
    return pd.DataFrame(rows, columns=list(COLUMNS))


def headline(table: pd.DataFrame, metrics=METRICS) -> pd.DataFrame:
    """Wide summary: per (preset, split), the mean of each headline metric over the samples.

    Parameters
    ----------
    table : pandas.DataFrame
        Long table (:data:`COLUMNS`).
    metrics : sequence of str, default :data:`METRICS`
        Metrics to show, in this order.

    Returns
    -------
    pandas.DataFrame
        Index (preset, split), one column per metric present in ``table``.
    """
    t = table[table.metric.isin(metrics)]
    wide = t.pivot_table(index=["preset", "split"], columns="metric", values="value", aggfunc="mean")
    return wide.reindex(columns=[m for m in metrics if m in wide.columns])
