"""The science outputs against a phantom's truth: detachment MAE, crack surface, planted effect.

Two sources of particles are checked against ``truth_particles.csv``: ``true``, the truth's own 3D
labels measured with the pipeline's phase map (isolating thresholding and the surface estimator from
segmentation), and ``pipeline``, the pipeline's 3D particles matched one-to-one to true ones at 3D
IoU ≥ 0.5. Crack surface per volume is compared on one definition for both: crack voxel faces × 2/3
(the staircase factor of :mod:`detachment.particles`) over the envelope volume, µm⁻¹.

Main entry points: :func:`matched_particles`, :func:`compare_particles`, :func:`summarize`,
:func:`effect_size`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from . import metrics
from .particles import STAIRCASE


def links_from_labels(labels: np.ndarray) -> pd.DataFrame:
    """Bounding boxes of every label, in the ``links.csv`` layout.

    Parameters
    ----------
    labels : numpy.ndarray
        (z, y, x) integer 3D labels, 0 = background.

    Returns
    -------
    pandas.DataFrame
        One row per label present: ``label``, ``z_min``, ``z_max`` (inclusive), ``y_min``, ``y_max``,
        ``x_min``, ``x_max`` (``y_max``/``x_max`` exclusive), in voxels, and ``touches_border`` (the box
        reaches a y or x face of the volume; the z faces are not counted, as in the truth table).
    """
    from scipy import ndimage

    rows = []
    for lab, sl in enumerate(ndimage.find_objects(labels), start=1):
        if sl is None:
            continue
        border = any(s.start == 0 or s.stop == n for s, n in zip(sl[1:], labels.shape[1:]))
        rows.append({"label": lab, "z_min": sl[0].start, "z_max": sl[0].stop - 1, "y_min": sl[1].start,
                     "y_max": sl[1].stop, "x_min": sl[2].start, "x_max": sl[2].stop, "touches_border": border})
    return pd.DataFrame(rows, columns=["label", "z_min", "z_max", "y_min", "y_max", "x_min", "x_max",
                                       "touches_border"])


def matched_particles(truth: np.ndarray, pred: np.ndarray, threshold: float = 0.5) -> pd.DataFrame:
    """One-to-one matches of 3D labels at IoU ≥ ``threshold`` (:func:`detachment.metrics.match`).

    Parameters
    ----------
    truth, pred : numpy.ndarray
        (z, y, x) integer 3D labels of equal shape, 0 = background.
    threshold : float, default 0.5
        Smallest 3D IoU of a match, in (0, 1].

    Returns
    -------
    pandas.DataFrame
        Columns ``truth_label``, ``label`` (in ``pred``) and ``iou``, one row per match.
    """
    ov = metrics.overlap(truth, pred)
    r, c, iou = metrics.match(ov, threshold)
    return pd.DataFrame({"truth_label": ov.a_ids[r].astype(int), "label": ov.b_ids[c].astype(int), "iou": iou})


def compare_particles(truth_table: pd.DataFrame, measured: pd.DataFrame, pairs: pd.DataFrame | None,
                      source: str) -> pd.DataFrame:
    """Per matched particle: truth and measured detachment and crack surface per volume, and errors.

    Parameters
    ----------
    truth_table : pandas.DataFrame
        ``truth_particles.csv``: ``label``, ``detachment``, ``crack_area_um2`` (crack voxel-face area,
        µm²), ``volume_um3``, ``touches_border``, and optionally ``detachment_voxel_faces`` (detachment
        counted on the faces of the truth's voxelised phase map).
    measured : pandas.DataFrame
        A particle table (``particles.csv`` layout): ``label``, ``detachment``, ``detachment_std``,
        ``crack_surface_per_volume_per_um``.
    pairs : pandas.DataFrame or None
        ``truth_label`` to measured ``label`` (and ``iou``; :func:`matched_particles`); ``None`` means
        the measured labels are the truth's own.
    source : str
        Written in the ``source`` column (``"true"`` or ``"pipeline"``).

    Returns
    -------
    pandas.DataFrame
        One row per pair present in both tables: ``source``, ``truth_label``, ``label``, ``iou``,
        ``detachment_truth``, ``crack_surface_truth`` (µm⁻¹), ``border_truth``, ``detachment``,
        ``detachment_std``, ``crack_surface_per_volume_per_um`` (µm⁻¹), ``detachment_error``
        (measured − truth, detachment fraction), ``crack_surface_rel_error`` (relative; NaN where the
        truth has no crack surface), ``detachment_voxel_truth`` and ``detachment_error_voxel_truth``
        (measured − it; NaN without ``detachment_voxel_faces``): against the face count on the planted
        phases, which weights oblique surface as the pipeline's face count does.
    """
    t = truth_table.assign(
        crack_surface_truth=truth_table.crack_area_um2 * STAIRCASE / truth_table.volume_um3)
    t = t.reindex(columns=["label", "detachment", "crack_surface_truth", "touches_border", "detachment_voxel_faces"])
    t = t.rename(columns={"label": "truth_label", "detachment": "detachment_truth", "touches_border": "border_truth",
                          "detachment_voxel_faces": "detachment_voxel_truth"})
    if pairs is None:
        pairs = pd.DataFrame({"truth_label": measured.label.astype(int), "label": measured.label.astype(int),
                              "iou": 1.0})
    # reindex: a sample where the pipeline found no particle has a table without the measured columns
    m = measured.reindex(columns=["label", "detachment", "detachment_std", "crack_surface_per_volume_per_um"])
    m = m.astype({"label": "int64"})
    out = pairs.merge(t, on="truth_label").merge(m, on="label")
    out.insert(0, "source", source)
    out["detachment_error"] = out.detachment - out.detachment_truth
    out["crack_surface_rel_error"] = (out.crack_surface_per_volume_per_um - out.crack_surface_truth) / \
        out.crack_surface_truth.where(out.crack_surface_truth > 0)
    out["detachment_error_voxel_truth"] = out.detachment - out.detachment_voxel_truth
    return out


def summarize(per_particle: pd.DataFrame, n_truth: dict[str, int]) -> pd.DataFrame:
    """Errors per (sample, source), and per source over all samples (sample ``all``).

    Parameters
    ----------
    per_particle : pandas.DataFrame
        :func:`compare_particles` rows of every sample, with a ``sample`` column.
    n_truth : dict of str to int
        Per sample, its number of true particles.

    Returns
    -------
    pandas.DataFrame
        One row per (sample, source): ``n_matched``, ``n_truth``, ``detachment_mae``,
        ``detachment_bias`` (detachment fraction), ``detachment_mae_interior`` (particles not touching
        the border in the truth), ``crack_surface_rel_error_of_mean`` (relative error of the mean crack
        surface per volume, what a damage profile reports) and ``crack_surface_median_abs_rel_error``
        (per particle).
    """
    rows = []
    pooled = per_particle.assign(sample="all")  # every sample's particles together
    groups = [*per_particle.groupby(["sample", "source"], sort=False), *pooled.groupby(["sample", "source"], sort=False)]
    for (sample, source), g in groups:
        interior = g[~g.border_truth]
        ct = g.crack_surface_truth.mean()
        rows.append({
            "sample": sample, "source": source, "n_matched": len(g),
            "n_truth": sum(n_truth.values()) if sample == "all" else n_truth.get(sample, np.nan),
            "detachment_mae": float(g.detachment_error.abs().mean()),
            "detachment_bias": float(g.detachment_error.mean()),
            "detachment_mae_interior": float(interior.detachment_error.abs().mean()) if len(interior) else np.nan,
            "crack_surface_rel_error_of_mean": float((g.crack_surface_per_volume_per_um.mean() - ct) / ct)
            if ct > 0 else np.nan,
            "crack_surface_median_abs_rel_error": float(g.crack_surface_rel_error.abs().median()),
        })
    return pd.DataFrame(rows)


def effect_size(truth_tables: dict[str, pd.DataFrame], measured: dict[str, pd.DataFrame],
                rates: dict[str, str], high: str = "1C", low: str = "C/10", exclude_border: bool = True) -> dict:
    """Planted vs found difference of mean detachment between the ``high`` and ``low`` C-rate groups.

    Planted: the truth tables' particles; found: the measured tables' particles.

    Parameters
    ----------
    truth_tables : dict of str to pandas.DataFrame
        Per sample, the truth table (``detachment``, ``touches_border``).
    measured : dict of str to pandas.DataFrame
        Per sample, a measured particle table (``detachment``, ``touches_border``).
    rates : dict of str to str
        Per sample, its C-rate; samples of other rates are ignored.
    high, low : str, default "1C", "C/10"
        The C-rates compared (high minus low).
    exclude_border : bool, default True
        Leave out particles flagged ``touches_border``.

    Returns
    -------
    dict
        ``planted_difference`` and ``found_difference`` (detachment fraction), ``found_over_planted``
        (NaN when nothing was planted) and ``mann_whitney_p`` (two-sided, found groups); empty when a
        group has no particle.
    """
    from scipy.stats import mannwhitneyu

    def groups(tables):
        """Per C-rate (``high``, ``low``), the detachment values of the tables' particles pooled."""
        out = {high: [], low: []}
        for s, t in tables.items():
            if rates.get(s) in out:
                keep = ~t.touches_border.astype(bool) if exclude_border and "touches_border" in t else slice(None)
                out[rates[s]].append(t.loc[keep, "detachment"].dropna().to_numpy())
        return {k: np.concatenate(v) if v else np.zeros(0) for k, v in out.items()}

    gt, gm = groups(truth_tables), groups(measured)
    if min(len(gt[high]), len(gt[low]), len(gm[high]), len(gm[low])) == 0:
        return {}
    planted = float(gt[high].mean() - gt[low].mean())
    found = float(gm[high].mean() - gm[low].mean())
    p = float(mannwhitneyu(gm[high], gm[low], alternative="two-sided").pvalue)
    return {"planted_difference": planted, "found_difference": found,
            "found_over_planted": found / planted if planted else np.nan, "mann_whitney_p": p}


def true_particle_tables(per_particle: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Per sample, the truth's own particles as measured by the pipeline, as particle tables.

    Parameters
    ----------
    per_particle : pandas.DataFrame
        :func:`compare_particles` rows with a ``sample`` column; the ``source`` = ``"true"`` rows are
        used.

    Returns
    -------
    dict of str to pandas.DataFrame
        Per sample, ``label``, ``detachment`` and ``touches_border`` (the truth's), the layout
        :func:`effect_size` reads.
    """
    t = per_particle[per_particle.source == "true"]
    return {s: pd.DataFrame({"label": g.label.to_numpy(), "detachment": g.detachment.to_numpy(),
                             "touches_border": g.border_truth.to_numpy(bool)})
            for s, g in t.groupby("sample", sort=False)}
