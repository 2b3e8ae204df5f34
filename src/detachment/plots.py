"""Figures in the manner of the paper's (matplotlib, Agg backend, no screen needed).

Each function takes arrays or tables and returns a :class:`matplotlib.figure.Figure` (saved and
closed by :func:`detachment.io.save_figure`). Main entry points: :func:`phase_figure` (Supp. Fig. 1),
:func:`fig4`, :func:`fig8`, :func:`fig9b`, :func:`second_map_figure` (Supp. Fig. 7),
:func:`validation_figure`, :func:`robustness_figure`.
"""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402

from .phases import PHASE_NAMES  # noqa: E402
from .plausibility import (  # noqa: E402
    MAX_CHECKED_EDGE_WIDTH,
    MIN_CONTACT_SEPARATION,
    WEAK_CONTACT_SEPARATION,
    edges_wide,
    weakly_separated,
)
from .z_blur import SQUARE  # noqa: E402

PHASE_COLOURS = {"void": "#1b1b3a", "cbd": "#e0a030", "nmc_low": "#2e8b57", "nmc_high": "#c0392b", "al": "#9aa7b0"}
PHASE_CMAP = ListedColormap([PHASE_COLOURS[PHASE_NAMES[c]] for c in sorted(PHASE_NAMES)])


@dataclass
class SideSection:
    """A (z, x) section of the phase map through row ``y``, for the phase figure.

    Attributes
    ----------
    phases : numpy.ndarray
        (z, x) uint8 phase codes of the row, z = 0 at the collector.
    y : int
        The row, voxels.
    collector_top : numpy.ndarray or None
        (x,) height of the collector's top along the row, voxels (the flat slab's, or a tilted collector's
        plane: :meth:`detachment.threshold.ThresholdResult.collector_heights`); None where none was found.
    voxel_size_um : tuple of float
        (z, y, x) voxel edge lengths, µm.
    """

    phases: np.ndarray
    y: int
    collector_top: np.ndarray | None
    voxel_size_um: tuple[float, float, float]


def section_panel(ax, section: SideSection, letter: str = "") -> None:
    """The section's phase codes (z up from the collector) with the collector's top drawn over them."""
    vz, vy, vx = section.voxel_size_um
    nz, nx = section.phases.shape
    ax.imshow(section.phases, cmap=PHASE_CMAP, vmin=-0.5, vmax=len(PHASE_NAMES) - 0.5, interpolation="nearest",
              origin="lower", extent=[0, nx * vx, 0, nz * vz])
    if section.collector_top is not None:
        ax.plot((np.arange(nx) + 0.5) * vx, np.asarray(section.collector_top, float) * vz, color="w", lw=1.2,
                ls="--", label="collector top as found")
        ax.legend(loc="upper right", fontsize=7, framealpha=0.8)
    ax.set_title(f"{letter} section at y = {section.y * vy:.1f} µm".strip())
    ax.set_xlabel("x (µm)")
    ax.set_ylabel("z (µm, from the collector)")


def phase_title(sample: str, z: int, method: str, unresolved=(), nmc_split: str = "histogram", layer=None,
                blur_sigma: float | None = None, blur_se: float | None = None,
                collector_tilt_deg: float | None = None, edge_undershoot: float | None = None,
                blur_z_ratio: float | None = None, blur_z_reading: str = SQUARE, z_factor: float | None = None,
                halo: tuple[float, float] | None = None) -> str:
    """Title of the phase figure: sample, slice, method and the phases the model could not separate.

    Parameters
    ----------
    sample : str
        Sample name.
    z : int
        The slice shown.
    method : str
        The phase model's method.
    unresolved : sequence of str, default ()
        Phases not separated from a neighbour (:attr:`detachment.threshold.ThresholdResult.unresolved`).
    nmc_split : str, default "histogram"
        How NMC high was told from low (:attr:`detachment.threshold.ThresholdResult.nmc_split`).
    layer : detachment.phase_fit.ElectrolyteLayer, optional
        The electrolyte layer at the far face; named where one was found.
    blur_sigma : float, optional
        The point-spread σ measured on the particles' flat edges (``phase_qc.csv`` ``blur_sigma_vox``),
        voxels: on a second line, in capitals where it is wider than the blur check's bound.
    blur_se : float, optional
        Its standard error, voxels (``±`` after it where finite).
    collector_tilt_deg : float, optional
        Where the collector was found tilted (:attr:`detachment.collector_surface.CollectorPlane.tilted`),
        its tilt, degrees; named in the title.
    edge_undershoot : float, optional
        ``phase_qc.csv``'s ``edge_undershoot`` (:mod:`detachment.edge_halo`): named on the last line where it is
        beyond the check's bound.
    blur_z_ratio : float, optional
        ``phase_qc.csv``'s ``blur_z_ratio`` (:mod:`detachment.z_blur`): named on the last line where it is beyond
        the check's bound.
    blur_z_reading : str, default "square"
        The edges it was read on (:attr:`detachment.z_blur.ZBlur.reading`), whose bounds apply.
    z_factor : float, optional
        The forward model's σ along z over its σ within the slices
        (:attr:`detachment.threshold.ThresholdResult.refine_z_factor`): where finite and not 1, the point spread
        along z (``blur_sigma`` times it) is named in place of ``blur_z_ratio``, in capitals beyond its check's
        bound.
    halo : tuple of float, optional
        ``(amplitude, reach in voxels)`` of the edge halo taken out before the phases were read
        (:func:`detachment.halo_removal.recorded`); named in the title.

    Returns
    -------
    str
        E.g. ``"cell: slice z=12, informed; NOT RESOLVED: nmc_high (merged into a neighbour)"``.
    """
    title = f"{sample}: slice z={z}, {method}" + _model_notes(unresolved, nmc_split, layer, collector_tilt_deg, halo)
    return title + _check_lines(blur_sigma, blur_se, edge_undershoot, blur_z_ratio, blur_z_reading, z_factor)


def _model_notes(unresolved, nmc_split, layer, collector_tilt_deg, halo) -> str:
    """The phase title's notes on how the map was read (see :func:`phase_title`), each after ``"; "``."""
    notes = ""
    if nmc_split == "domain means":
        notes += "; NMC low / high split on domain means (their panel), not on this histogram"
    if layer is not None and layer.found:
        notes += f"; electrolyte measured on {layer.thickness} slices at the far face"
    if unresolved:
        notes += f"; NOT RESOLVED: {', '.join(unresolved)} (merged into a neighbour)"
    if collector_tilt_deg is not None:
        notes += f"; collector tilted {collector_tilt_deg:.1f}°, Al confined below its plane"
    if halo is not None:
        notes += f"; edge halo {halo[0]:.2f} over {halo[1]:.1f} voxels taken out (grey levels shown without it)"
    return notes


def _check_lines(blur_sigma, blur_se, edge_undershoot, blur_z_ratio, blur_z_reading=SQUARE, z_factor=None) -> str:
    """The phase title's lines on the blur (always, where measured), on the halo (beyond its check's bound) and on
    the z blur (the forward model's, where it followed one apart from the slices'; else the steps' ratio, beyond
    its bounds), each starting with a newline."""
    from .plausibility import BLUR_Z_BOUNDS, BLUR_Z_FACTOR_BOUND, BLUR_Z_SIGMA_BOUND, MAX_BOUNDS

    lines = ""
    bound = MAX_BOUNDS["blur_sigma_vox"][0]
    if blur_sigma is not None and np.isfinite(blur_sigma):
        value = f"{blur_sigma:.2f}" + (f" ± {blur_se:.2f}" if blur_se is not None and np.isfinite(blur_se) else "")
        lines += (f"\npoint spread σ {value} voxel on the particles' flat edges" if blur_sigma <= bound else
                  f"\nPOINT SPREAD σ {value} VOXEL, WIDER THAN {bound}: gaps of a few voxels are not resolved")
    halo_bound = MAX_BOUNDS["edge_undershoot"][0]
    if edge_undershoot is not None and np.isfinite(edge_undershoot) and edge_undershoot > halo_bound:
        lines += (f"\nEDGES OVERSHOOT: the electrolyte beside the particles reads {edge_undershoot:.2f} of the NMC "
                  f"contrast below the open electrolyte (> {halo_bound}; a halo, fringes or a sharpening filter)")
    if z_factor is not None and np.isfinite(z_factor) and z_factor != 1:
        if blur_sigma is None or not np.isfinite(blur_sigma):
            return lines + f"\npoint spread along z {z_factor:.2f} times the slices' (the forward model's fit)"
        along = blur_sigma * z_factor
        if along <= BLUR_Z_SIGMA_BOUND and z_factor <= BLUR_Z_FACTOR_BOUND:
            return lines + f"\npoint spread along z σ {along:.2f} voxel ({z_factor:.2f} times the slices', the forward " \
                           "model's fit)"
        return lines + (f"\nPOINT SPREAD ALONG Z σ {along:.2f} VOXEL ({z_factor:.2f} times the slices'), WIDER THAN "
                        f"{BLUR_Z_SIGMA_BOUND} OR {BLUR_Z_FACTOR_BOUND} TIMES: gaps of a few voxels under and over the "
                        "particles are not resolved")
    z_min, z_bound = BLUR_Z_BOUNDS[blur_z_reading]
    if blur_z_ratio is not None and np.isfinite(blur_z_ratio) and blur_z_ratio > z_bound:
        lines += f"\nBLURRIER ALONG Z: steps {blur_z_ratio:.2f} times as wide as within the slices (> {z_bound})"
    if blur_z_ratio is not None and np.isfinite(blur_z_ratio) and blur_z_ratio < z_min:
        lines += f"\nSHARPER ALONG Z: steps {blur_z_ratio:.2f} times as wide as within the slices (< {z_min})"
    return lines


def phase_figure(image: np.ndarray, phase_slice: np.ndarray, hist_counts, hist_edges, thresholds, names,
                 fwhm_table=None, voxel_size_um: float = 1.0, title: str = "", domain_split=None, edges=None,
                 section: SideSection | None = None):
    """Supp. Fig. 1 style: grey slice, histogram with thresholds (log counts), phase map.

    Parameters
    ----------
    image, phase_slice : numpy.ndarray
        (y, x) grey-level slice and its uint8 phase codes (:mod:`detachment.phases`).
    hist_counts, hist_edges : numpy.ndarray
        The volume's histogram: (n_bins,) voxel counts and (n_bins + 1,) bin edges (grey levels).
    thresholds : sequence of float
        (k - 1,) ascending grey-level thresholds between the phase model's classes.
    names : sequence of str
        The k class names in order of grey level (keys of :data:`PHASE_COLOURS`).
    fwhm_table : pandas.DataFrame, optional
        Columns ``phase`` and ``fwhm`` (grey levels); the FWHM is written under each class name.
    voxel_size_um : float, default 1.0
        In-plane voxel size, µm (used for both y and x).
    title : str, default ""
        Figure title.
    domain_split : detachment.phase_fit.DomainSplit, optional
        The NMC split tried on domain-averaged grey levels: a fourth panel shows its histogram, the
        components it resolved and the threshold.
    edges : detachment.blur.EdgeProfiles, optional
        The particles' edge profiles the blur was measured on: a last panel draws the mean profiles and
        their fitted steps (:func:`edge_profile_panel`).
    section : SideSection, optional
        A (z, x) section of the map with the collector's top: a panel after the phase map
        (:func:`section_panel`).

    Returns
    -------
    matplotlib.figure.Figure
        Three panels, one more with each of ``section``, ``domain_split`` and ``edges``, in that order.
    """
    extra = [(draw, what) for draw, what in ((section_panel, section), (_domain_split_panel, domain_split),
                                             (edge_profile_panel, edges)) if what is not None]
    n = 3 + len(extra)
    fig, ax = plt.subplots(1, n, figsize=(5 * n, 4.6), gridspec_kw={"width_ratios": [1, 1.25, 1] + [1.1] * len(extra)})
    ext = [0, image.shape[1] * voxel_size_um, image.shape[0] * voxel_size_um, 0]
    ax[0].imshow(image, cmap="gray", extent=ext)
    ax[0].set_title("(a) reconstruction slice")
    ax[0].set_xlabel("x (µm)")
    ax[0].set_ylabel("y (µm)")
    _histogram_panel(ax[1], hist_counts, hist_edges, thresholds, names, fwhm_table)
    ax[2].imshow(phase_slice, cmap=PHASE_CMAP, vmin=-0.5, vmax=len(PHASE_NAMES) - 0.5, interpolation="nearest",
                 extent=ext)
    handles = [plt.Rectangle((0, 0), 1, 1, color=PHASE_COLOURS[n]) for n in PHASE_NAMES.values()]
    ax[2].legend(handles, list(PHASE_NAMES.values()), loc="upper right", fontsize=7, framealpha=0.8)
    ax[2].set_title("(c) phase map")
    ax[2].set_xlabel("x (µm)")
    for k, (draw, what) in enumerate(extra, start=3):
        draw(ax[k], what, f"({'abcdef'[k]})")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def _histogram_panel(ax, hist_counts, hist_edges, thresholds, names, fwhm_table) -> None:
    """The histogram (log counts) with each class's range, name and FWHM, and the thresholds."""
    centers = 0.5 * (hist_edges[1:] + hist_edges[:-1])
    ax.fill_between(centers, hist_counts, step="mid", color="0.6")
    ax.set_yscale("log")
    bounds = np.concatenate([[hist_edges[0]], thresholds, [hist_edges[-1]]])
    for k, name in enumerate(names):
        ax.axvspan(bounds[k], bounds[k + 1], color=PHASE_COLOURS[name], alpha=0.18)
        label = name
        if fwhm_table is not None:
            row = fwhm_table[fwhm_table.phase == name]
            if len(row):
                label += f"\nFWHM {row.fwhm.iloc[0]:.3f}"
        ax.text(0.5 * (bounds[k] + bounds[k + 1]), 0.97, label, transform=ax.get_xaxis_transform(),
                ha="center", va="top", fontsize=8)
    for t in thresholds:
        ax.axvline(t, color="k", lw=0.8, ls="--")
    ax.set_xlabel("grey level (normalised electron density)")
    ax.set_ylabel("voxels")
    ax.set_title("(b) histogram and thresholds")


def edge_profile_panel(ax, edges, letter: str = "") -> None:
    """The mean grey-level profiles across the particles' edges and the fitted blurred steps: the flat
    edges with one phase beyond (the point spread, ``phase_qc.csv`` ``blur_sigma_vox``) and every edge
    along the grid (the map's ``edge_width_vox``).

    Parameters
    ----------
    ax : matplotlib.axes.Axes
    edges : detachment.blur.EdgeProfiles
    letter : str, default ""
        Panel label put before the title, e.g. ``"(e)"``.
    """
    from .blur import PROFILE_X

    fine = np.linspace(PROFILE_X[0], PROFILE_X[-1], 121)
    styles = {"flat": ("o", "C3", "flat edges, one phase beyond"), "every": ("x", "0.45", "every edge along the grid")}
    for name, (mean, count, fit) in edges.mean_profiles().items():
        marker, colour, words = styles[name]
        if not count:
            continue
        label = f"{words} ({count}): " + (f"σ {fit.sigma:.2f}" if fit is not None else "too few to fit")
        ax.plot(PROFILE_X, mean, marker, color=colour, ls="none", label=label)
        if fit is not None:
            ax.plot(fine, fit(fine), "-", color=colour, lw=1)
    ax.axvline(0, color="k", lw=0.8, ls="--")
    ax.legend(fontsize=7)
    ax.set_xlabel("voxels from the map's edge (NMC left)")
    ax.set_ylabel("mean grey level")
    ax.set_title(f"{letter} point spread on the particles' edges".strip())


def _domain_split_panel(ax, split, letter: str = "(d)") -> None:
    """Histogram of the NMC voxels' domain means with the resolved components and the split."""
    h = split.histogram
    x = h.centers
    ax.fill_between(x, h.counts, step="mid", color="0.6")
    width = float(h.edges[1] - h.edges[0])
    mix = split.mixture
    for mu, sd, w, name in zip(mix.means, mix.sigmas, mix.weights, ("nmc_low", "nmc_high")):
        ax.plot(x, w * width * np.exp(-0.5 * ((x - mu) / sd) ** 2) / (sd * np.sqrt(2 * np.pi)),
                color=PHASE_COLOURS[name], lw=1.5, label=name if split.resolved else "one NMC class")
    if split.resolved:
        ax.axvline(split.threshold, color="k", lw=0.8, ls="--")
    ax.legend(fontsize=7)
    ax.set_xlabel("NMC domain mean grey level")
    ax.set_ylabel("interior NMC voxels")
    ax.set_title(f"{letter} NMC " + ("split on domain means" if split.resolved else "NOT resolved on domain means"))


def loss_curve_figure(log_table):
    """Training and validation loss per epoch, and validation precision / sensitivity / F1.

    Parameters
    ----------
    log_table : pandas.DataFrame
        One row per epoch: ``epoch``, ``train_loss``, ``val_loss``, optional loss components
        ``train_loss_*``, and ``val_precision``, ``val_sensitivity``, ``val_f1`` (IoU ≥ 0.5).

    Returns
    -------
    matplotlib.figure.Figure
        Two panels: losses (log scale) and validation scores.
    """
    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    ax[0].plot(log_table.epoch, log_table.train_loss, "o-", label="train")
    ax[0].plot(log_table.epoch, log_table.val_loss, "s-", label="validation")
    parts = [c for c in log_table.columns if c.startswith("train_loss_")]
    for c in parts:
        ax[0].plot(log_table.epoch, log_table[c], ":", lw=1, label=c.removeprefix("train_"))
    ax[0].set_xlabel("epoch")
    ax[0].set_ylabel("loss")
    ax[0].set_yscale("log")
    ax[0].legend(fontsize=7)
    for c, m in (("val_precision", "o-"), ("val_sensitivity", "s-"), ("val_f1", "^-")):
        ax[1].plot(log_table.epoch, log_table[c], m, label=c.removeprefix("val_"))
    ax[1].set_ylim(0, 1.02)
    ax[1].set_xlabel("epoch")
    ax[1].set_ylabel("validation score (IoU ≥ 0.5)")
    ax[1].legend()
    fig.tight_layout()
    return fig


def activation_figure(images, activations, titles):
    """Supp. Fig. 9a style: input slices above their activation maps.

    Parameters
    ----------
    images : sequence of numpy.ndarray
        (y, x) grey-level slices.
    activations : sequence of numpy.ndarray
        (y, x) activation of each slice (L2 norm of the finest FPN level,
        :func:`detachment.maskrcnn.activation_map`).
    titles : sequence of str
        Caption of each column.

    Returns
    -------
    matplotlib.figure.Figure
        Two rows, one column per slice.
    """
    n = len(images)
    fig, ax = plt.subplots(2, n, figsize=(4 * n, 8), squeeze=False)
    for i in range(n):
        ax[0, i].imshow(images[i], cmap="gray")
        ax[0, i].set_title(titles[i], fontsize=9)
        ax[1, i].imshow(activations[i], cmap="inferno")
        for a in ax[:, i]:
            a.set_xticks([])
            a.set_yticks([])
    ax[0, 0].set_ylabel("input")
    ax[1, 0].set_ylabel("activation (FPN P2 norm)")
    fig.tight_layout()
    return fig


METHOD_COLOURS = {"cnn": "#1f77b4", "watershed": "#ff7f0e", "watershed_distance": "#2ca02c"}


def fig9b(summary, metrics=("precision", "sensitivity", "jaccard", "dice", "f", "mcc")):
    """Grouped bars (mean ± std over test images) per metric and method, as Supp. Fig. 9b.

    The p-values written above the bars are those of the first method's rows (the reference).

    Parameters
    ----------
    summary : pandas.DataFrame
        One row per (method, metric): ``method``, ``metric``, ``mean``, ``std``, ``p_value``
        (:func:`detachment.compare.summary_table`).
    metrics : sequence of str, default ("precision", "sensitivity", "jaccard", "dice", "f", "mcc")
        Metrics shown; the tick labels name these six in this order.

    Returns
    -------
    matplotlib.figure.Figure
        One bar group per metric.
    """
    methods = list(dict.fromkeys(summary.method))
    fig, ax = plt.subplots(figsize=(9, 4.2))
    width = 0.8 / len(methods)
    x = np.arange(len(metrics))
    for k, method in enumerate(methods):
        rows = summary[summary.method == method].set_index("metric").loc[list(metrics)]
        ax.bar(x + (k - (len(methods) - 1) / 2) * width, rows["mean"], width, yerr=rows["std"], capsize=3,
               label=method, color=METHOD_COLOURS.get(method))
    ref = summary[(summary.method == methods[0])].set_index("metric")
    for i, m in enumerate(metrics):
        p = ref.loc[m, "p_value"]
        if np.isfinite(p):
            ax.text(i, 1.04, f"p={p:.1g}", ha="center", fontsize=7)
    ax.set_xticks(x)
    ax.set_xticklabels(["Precision", "Sensitivity", "Jaccard", "Dice", "F measure", "MCC"][: len(metrics)])
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("mean over test images (± std)")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def outline_figure(images, panels: dict, titles):
    """Rows = test slices; columns = truth and each method's instance outlines over the grey image.

    Parameters
    ----------
    images : numpy.ndarray
        (n, y, x) grey-level slices.
    panels : dict of str to numpy.ndarray
        Column name (``"truth"``, a method) to its (n, y, x) instance labels.
    titles : sequence of str
        Caption of each row.

    Returns
    -------
    matplotlib.figure.Figure
        n rows, one column per panel.
    """
    from skimage.segmentation import find_boundaries

    names = list(panels)
    fig, ax = plt.subplots(len(images), len(names), figsize=(3.6 * len(names), 3.6 * len(images)), squeeze=False)
    for i, img in enumerate(images):
        for j, name in enumerate(names):
            lab = panels[name][i]
            ax[i, j].imshow(img, cmap="gray")
            b = find_boundaries(lab, mode="inner")
            over = np.zeros(img.shape + (4,))
            over[b] = matplotlib.colors.to_rgba(METHOD_COLOURS.get(name, "#d62728"))
            ax[i, j].imshow(over)
            ax[i, j].set_xticks([])
            ax[i, j].set_yticks([])
            if i == 0:
                ax[i, j].set_title(name)
        ax[i, 0].set_ylabel(titles[i], fontsize=8)
    fig.tight_layout()
    return fig


def linking_figure(table):
    """Recovered fraction and split + merge rate per (input, method), one bar group per sample.

    Parameters
    ----------
    table : pandas.DataFrame
        Linking evaluation rows: ``sample``, ``input``, ``method``, ``recovered``, ``split_rate``,
        ``merge_rate`` (fractions, 0-1); every (input, method) case present for every sample.

    Returns
    -------
    matplotlib.figure.Figure
        Two panels: recovered at 3D IoU ≥ 0.5, and split + merge rate.
    """
    table = table.assign(case=table["input"] + "\n" + table["method"], error=table.split_rate + table.merge_rate)
    cases = list(dict.fromkeys(table.case))
    samples = list(dict.fromkeys(table["sample"]))
    fig, ax = plt.subplots(1, 2, figsize=(12, 4))
    width = 0.8 / len(samples)
    x = np.arange(len(cases))
    for k, s in enumerate(samples):
        rows = table[table["sample"] == s].set_index("case").loc[cases]
        ax[0].bar(x + (k - (len(samples) - 1) / 2) * width, rows.recovered, width, label=s)
        ax[1].bar(x + (k - (len(samples) - 1) / 2) * width, rows.error, width, label=s)
    ax[0].set_ylabel("recovered at 3D IoU ≥ 0.5")
    ax[0].set_ylim(0, 1.05)
    ax[1].set_ylabel("split + merge rate")
    for a in ax:
        a.set_xticks(x)
        a.set_xticklabels(cases, fontsize=7)
        a.legend(fontsize=7)
    fig.tight_layout()
    return fig


def damage_figure(image, labels_slice, damage_by_label: dict, profile, voxel_size_um: float, title=""):
    """Supp. Fig. 2 style: a slice with particles coloured by crack surface per volume, and the depth profile.

    Parameters
    ----------
    image : numpy.ndarray
        (y, x) grey-level slice.
    labels_slice : numpy.ndarray
        (y, x) 3D particle labels in the same slice.
    damage_by_label : dict of int to float
        Particle label to its crack surface per volume, µm⁻¹.
    profile : pandas.DataFrame
        Depth profile (:func:`detachment.damage.depth_profile`): ``height_low_um``, ``height_high_um``,
        ``crack_surface_per_volume_mean``, ``crack_surface_per_volume_sem`` (µm⁻¹).
    voxel_size_um : float
        In-plane voxel size, µm (used for both y and x).
    title : str, default ""
        Title of the slice panel.

    Returns
    -------
    matplotlib.figure.Figure
        Two panels.
    """
    fig, ax = plt.subplots(1, 2, figsize=(12, 4.8), gridspec_kw={"width_ratios": [1.2, 1]})
    ext = [0, image.shape[1] * voxel_size_um, image.shape[0] * voxel_size_um, 0]
    ax[0].imshow(image, cmap="gray", extent=ext)
    colour = np.full(labels_slice.shape, np.nan)
    for lab, v in damage_by_label.items():
        colour[labels_slice == lab] = v
    im = ax[0].imshow(colour, cmap="plasma", alpha=0.75, extent=ext)
    fig.colorbar(im, ax=ax[0], label="crack surface per volume (µm⁻¹)")
    ax[0].set_xlabel("x (µm)")
    ax[0].set_title(title)
    mid = 0.5 * (profile.height_low_um + profile.height_high_um)
    ax[1].errorbar(profile.crack_surface_per_volume_mean, mid, xerr=profile.crack_surface_per_volume_sem, fmt="o-")
    ax[1].set_xlabel("crack surface per volume (µm⁻¹), mean ± SEM")
    ax[1].set_ylabel("particle height above collector (µm)")
    fig.tight_layout()
    return fig


def diffusion_figure(image, field, envelope, paths, voxel_size_um: float, title=""):
    """Supp. Fig. 3 style: a particle slice colour-coded by diffusion length, with optimal paths.

    Parameters
    ----------
    image : numpy.ndarray
        (y, x) grey-level slice of the particle's crop.
    field : numpy.ndarray
        (y, x) electron diffusion length, µm; NaN outside the solid and inf where isolated (both left
        blank).
    envelope : numpy.ndarray
        (y, x) bool envelope of the particle, drawn as a contour.
    paths : sequence of numpy.ndarray
        Optimal paths, each (k, 2) float (y, x) voxel coordinates in the crop
        (e.g. :func:`detachment.diffusion.descent_path` streamlines).
    voxel_size_um : float
        In-plane voxel size, µm (used for both y and x).
    title : str, default ""
        Figure title.

    Returns
    -------
    matplotlib.figure.Figure
        One panel.
    """
    fig, ax = plt.subplots(figsize=(6, 5.5))
    ext = [0, image.shape[1] * voxel_size_um, image.shape[0] * voxel_size_um, 0]
    ax.imshow(image, cmap="gray", extent=ext)
    shown = np.where(np.isfinite(field), field, np.nan)
    im = ax.imshow(shown, cmap="viridis", extent=ext)
    fig.colorbar(im, ax=ax, label="electron diffusion length (µm)")
    ys = (np.arange(image.shape[0]) + 0.5) * voxel_size_um
    xs = (np.arange(image.shape[1]) + 0.5) * voxel_size_um
    ax.contour(xs, ys, envelope.astype(float), levels=[0.5], colors="w", linewidths=0.8)
    for p in paths:
        ax.plot((p[:, 1] + 0.5) * voxel_size_um, (p[:, 0] + 0.5) * voxel_size_um, "w-", lw=0.8)
    ax.set_title(title)
    ax.set_xlabel("x (µm)")
    fig.tight_layout()
    return fig


def fig4(particles, by_rate, by_size_table):
    """Main-text Fig. 4 panels: detachment by C-rate, vs particle size, and vs volume for all particles.

    Parameters
    ----------
    particles : pandas.DataFrame
        The particles used: ``c_rate``, ``detachment``, ``detachment_std`` (fractions, 0-1),
        ``volume_um3``; optionally ``detachment_ambiguous`` (0-1), drawn as a second, grey bar.
    by_rate : pandas.DataFrame
        Per C-rate (:func:`detachment.stats.by_group`): ``c_rate``, ``mean``, ``ci95_low``,
        ``ci95_high`` (bootstrap 95 % CI) and a ``mannwhitney_p_vs_*`` column; the title shows the
        particle-level Mann–Whitney p of the second C-rate against the first.
    by_size_table : pandas.DataFrame
        Per diameter bin (:func:`detachment.stats.by_size`): ``diameter_low_um``, ``diameter_high_um``,
        ``mean``, ``sem``, ``measurement_std_mean``.

    Returns
    -------
    matplotlib.figure.Figure
        Three panels.
    """
    fig, ax = plt.subplots(1, 3, figsize=(16, 4.5))
    rates = list(by_rate.c_rate)
    for i, r in enumerate(rates):
        v = particles.loc[particles.c_rate == r, "detachment"]
        ax[0].scatter(np.full(len(v), i) + np.random.default_rng(i).uniform(-0.15, 0.15, len(v)), v, s=8,
                      alpha=0.5)
    ax[0].errorbar(range(len(rates)), by_rate["mean"],
                   yerr=[by_rate["mean"] - by_rate.ci95_low, by_rate.ci95_high - by_rate["mean"]],
                   fmt="ks", capsize=6, label="mean, 95 % bootstrap CI")
    pcol = [c for c in by_rate.columns if c.startswith("mannwhitney")]
    if len(rates) > 1 and pcol:
        ax[0].set_title(f"Mann–Whitney p = {by_rate[pcol[0]].iloc[1]:.2g}")
    ax[0].set_xticks(range(len(rates)))
    ax[0].set_xticklabels(rates)
    ax[0].set_ylabel("detachment fraction")
    ax[0].legend(fontsize=8)
    mid = 0.5 * (by_size_table.diameter_low_um + by_size_table.diameter_high_um)
    ax[1].errorbar(mid, by_size_table["mean"], yerr=by_size_table["sem"], fmt="o-", capsize=4, label="mean ± SEM")
    ax[1].errorbar(mid, by_size_table["mean"], yerr=by_size_table.measurement_std_mean, fmt="none", ecolor="r",
                   capsize=8, label="mean per-particle face-count error (detachment_std)")
    ax[1].set_xlabel("equivalent diameter (µm)")
    ax[1].set_ylabel("detachment fraction")
    ax[1].legend(fontsize=8)
    for r in rates:
        sub = particles[particles.c_rate == r]
        ax[2].errorbar(sub.volume_um3, sub.detachment, yerr=sub.detachment_std, fmt="o", ms=3, alpha=0.6, label=r)
        amb = sub["detachment_ambiguous"].to_numpy(float) if "detachment_ambiguous" in sub else np.full(len(sub), np.nan)
        if np.isfinite(amb).any():  # the reading's bound, far wider than the face count's error where it matters
            ax[2].errorbar(sub.volume_um3, sub.detachment, yerr=np.nan_to_num(amb), fmt="none", ecolor="0.6", alpha=0.4,
                           label=f"{r}: ± share of faces the grey levels leave undecided")
    ax[2].set_xscale("log")
    ax[2].set_xlabel("particle volume (µm³)")
    ax[2].set_ylabel("detachment fraction")
    ax[2].legend(fontsize=8)
    fig.tight_layout()
    return fig


def fig8(particles, r_p, histograms: dict, fwhm_tables: dict):
    """Supp. Fig. 8 style: electron density vs detachment, and the phases' grey-level histograms with FWHMs.

    Parameters
    ----------
    particles : pandas.DataFrame
        The particles used: ``c_rate``, ``detachment`` (fraction), ``electron_density_mean`` (grey
        level).
    r_p : tuple of float
        Pearson r and its p-value between detachment and electron density, shown in the title.
    histograms : dict of str to pandas.DataFrame
        Per sample, its histogram table: ``bin_low``, ``bin_high`` (grey levels), ``count``.
    fwhm_tables : dict of str to pandas.DataFrame
        Per sample, its FWHM table: ``phase``, ``centre``, ``fwhm`` (grey levels).

    Returns
    -------
    matplotlib.figure.Figure
        Two panels.
    """
    fig, ax = plt.subplots(1, 2, figsize=(12, 4.5))
    for r in dict.fromkeys(particles.c_rate):
        sub = particles[particles.c_rate == r]
        ax[0].scatter(sub.detachment, sub.electron_density_mean, s=10, alpha=0.7, label=r)
    ax[0].set_xlabel("detachment fraction")
    ax[0].set_ylabel("mean electron density (grey level)")
    ax[0].set_title(f"Pearson r = {r_p[0]:.2f} (p = {r_p[1]:.2g})")
    ax[0].legend(fontsize=8)
    for sample, h in histograms.items():
        centres = 0.5 * (h.bin_low + h.bin_high)
        ax[1].plot(centres, h["count"], lw=1, label=sample)
        ft = fwhm_tables[sample]
        for row in ft.itertuples():
            if np.isfinite(row.fwhm):
                ax[1].annotate(f"{row.phase}\n{row.fwhm:.3f}", (row.centre, h["count"].max() * 0.3), fontsize=7,
                               ha="center")
    ax[1].set_yscale("log")
    ax[1].set_xlabel("grey level")
    ax[1].set_ylabel("voxels")
    ax[1].set_title("phase histograms, FWHM per phase")
    ax[1].legend(fontsize=8)
    fig.tight_layout()
    return fig


def empty_figure(message: str):
    """A placeholder figure that says why there is nothing to show (e.g. no particle found).

    Parameters
    ----------
    message : str
        The text shown.

    Returns
    -------
    matplotlib.figure.Figure
        The placeholder.
    """
    fig, ax = plt.subplots(figsize=(6, 2))
    ax.axis("off")
    ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True)
    return fig


def validation_figure(per_particle, effect: dict | None = None, effect_true: dict | None = None):
    """Measured vs true per-particle detachment and crack surface per volume, for each particle source.

    Parameters
    ----------
    per_particle : pandas.DataFrame
        :func:`detachment.validation.compare_particles` rows: ``source``, ``detachment_truth``,
        ``detachment``, ``detachment_error`` (fractions), ``crack_surface_truth``,
        ``crack_surface_per_volume_per_um`` (µm⁻¹).
    effect : dict, optional
        :func:`detachment.validation.effect_size` on the pipeline's particles (``planted_difference``,
        ``found_difference``, ``mann_whitney_p``), shown in the title.
    effect_true : dict, optional
        The same on the truth's own particles (its ``found_difference`` is shown).

    Returns
    -------
    matplotlib.figure.Figure
        Two panels with the identity line dashed.
    """
    fig, ax = plt.subplots(1, 2, figsize=(11, 4.8))
    colours = {"true": "#2e86c1", "pipeline": "#c0392b"}
    for source, g in per_particle.groupby("source", sort=False):
        mae = g.detachment_error.abs().mean()
        ax[0].scatter(g.detachment_truth, g.detachment, s=10, alpha=0.6, color=colours.get(source),
                      label=f"{source} particles (n={len(g)}, MAE {mae:.3f})")
        ax[1].scatter(g.crack_surface_truth, g.crack_surface_per_volume_per_um, s=10, alpha=0.6,
                      color=colours.get(source), label=f"{source} particles")
    for a, name in zip(ax, ("detachment fraction", "crack surface per volume (µm⁻¹)")):
        lo, hi = a.get_xlim()
        a.plot([lo, hi], [lo, hi], color="0.3", lw=0.8, ls="--")
        a.set_xlabel(f"truth: {name}")
        a.set_ylabel(f"measured: {name}")
        a.legend(fontsize=8)
    title = "science outputs vs phantom truth"
    if effect:
        title += (f"; 1C − C/10 detachment: planted {effect['planted_difference']:.3f}, found "
                  f"{effect['found_difference']:.3f} (p = {effect['mann_whitney_p']:.1e})")
        if effect_true:
            title += f", {effect_true['found_difference']:.3f} on true particles"
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def second_map_figure(panels: list[dict]):
    """Supp. Fig. 7 style, one row per sample: grey slice, second map, and their per-particle relation.

    The columns are the electron density (grey) slice, the co-registered second map on the same slice
    (NaN = no measurement, shown black), and per-particle mean electron density vs mean second map with
    the particle- and voxel-level Pearson r.

    Parameters
    ----------
    panels : list of dict
        One per sample: ``sample``, ``z`` (slice index), ``density`` and ``second_map`` ((y, x)
        arrays), ``voxel_size_um`` (in-plane, µm), ``quantity`` (axis label), ``particles``
        (per-particle table, the particles used), ``rows`` ({level: correlation row} of
        :func:`detachment.second_map.correlations`) and optionally ``planted`` (phantom r or None).

    Returns
    -------
    matplotlib.figure.Figure
        One row of three panels per sample.
    """
    n = len(panels)
    fig, ax = plt.subplots(n, 3, figsize=(15, 4.4 * n), squeeze=False,
                           gridspec_kw={"width_ratios": [1, 1.2, 1.1]})
    for i, p in enumerate(panels):
        vs = p["voxel_size_um"]
        img, vmap = p["density"], p["second_map"]
        ext = [0, img.shape[1] * vs, img.shape[0] * vs, 0]
        ax[i, 0].imshow(img, cmap="gray", extent=ext)
        ax[i, 0].set_title(f"{p['sample']}: electron density, z = {p['z']}", fontsize=10)
        cmap = matplotlib.colormaps["viridis"].with_extremes(bad="black")
        finite = vmap[np.isfinite(vmap)]
        lim = np.quantile(finite, [0.01, 0.99]) if finite.size else (None, None)
        im = ax[i, 1].imshow(np.ma.masked_invalid(vmap), cmap=cmap, extent=ext, vmin=lim[0], vmax=lim[1])
        fig.colorbar(im, ax=ax[i, 1], fraction=0.046, pad=0.02, label=p["quantity"])
        ax[i, 1].set_title(f"{p['quantity']} (co-registered), z = {p['z']}", fontsize=10)
        for a in ax[i, :2]:
            a.set_xlabel("x (µm)")
            a.set_ylabel("y (µm)")
        t = p["particles"]
        ax[i, 2].scatter(t.electron_density_mean, t.second_map_mean, s=12, alpha=0.75)
        if len(t) >= 2 and t.electron_density_mean.std() > 0:
            k, b = np.polyfit(t.electron_density_mean, t.second_map_mean, 1)
            xs = np.linspace(t.electron_density_mean.min(), t.electron_density_mean.max(), 2)
            ax[i, 2].plot(xs, k * xs + b, color="0.3", lw=1, ls="--")
        rp, rv = p["rows"].get("particle", {}), p["rows"].get("voxel", {})
        text = (f"particles: r = {rp.get('pearson_r', np.nan):.2f} "
                f"[{rp.get('ci95_low', np.nan):.2f}, {rp.get('ci95_high', np.nan):.2f}], "
                f"p = {rp.get('p_value', np.nan):.1g}, n = {rp.get('n', 0)}\n"
                f"voxels: r = {rv.get('pearson_r', np.nan):.2f} "
                f"[{rv.get('ci95_low', np.nan):.2f}, {rv.get('ci95_high', np.nan):.2f}]")
        if p.get("planted") is not None:
            text += f"; planted r = {p['planted']:.2f}"
        ax[i, 2].set_title(text, fontsize=9)
        ax[i, 2].set_xlabel("particle mean electron density (grey level)")
        ax[i, 2].set_ylabel(f"particle mean {p['quantity']}")
    fig.tight_layout()
    return fig


def _electrolyte_noise_curve(ax, fit, x) -> None:
    """The gap component as it would be with the open electrolyte's spread (dashed), labelled with the
    gap faces' width ratio and its bound; nothing where the spread was not measured."""
    from .plausibility import MAX_GAP_WIDTH_RATIO

    sd, ratio = getattr(fit, "electrolyte_sigma", np.nan), getattr(fit, "gap_width_ratio", np.nan)
    if not (np.isfinite(sd) and np.isfinite(ratio)):
        return
    ax.plot(x, fit.gap_weight * np.exp(-0.5 * ((x - fit.gap_mean) / sd) ** 2) / (sd * np.sqrt(2 * np.pi)),
            color=PHASE_COLOURS["void"], ls="--",
            label=f"open electrolyte's spread ± {sd:.3f}: gap {ratio:.2f}× as wide (bound {MAX_GAP_WIDTH_RATIO:g})")


def contact_level_figure(values, fit, midpoint: float | None = None, title: str = "", through_layer: bool = False,
                         failed: list[str] | None = None, on_ambiguous: str = "stop", edge_width: float = np.nan):
    """Grey levels just outside the particles, the fitted gap and CBD Gaussians (the gap's dashed as the open
    electrolyte's spread would make it), the levels, and the band where the fit cannot place a face (gap
    probability 0.1-0.9, shaded, with the share of faces in it).

    Parameters
    ----------
    values : array_like
        Face-neighbour grey levels (:func:`detachment.contact_level.face_neighbour_levels`), a density histogram.
    fit : detachment.contact_level.ContactLevel
        The contact level; its components are drawn (dotted where too close for a level).
    midpoint : float, optional
        The phase model's void/CBD midpoint, grey level.
    title : str, default ""
        Figure title.
    through_layer : bool, default False
        Whether the contacts are read through a thin CBD layer (:func:`~detachment.contact_level.reads_through_layer`).
    failed : list of str, optional
        The sample's contact checks that fail (:func:`detachment.plausibility.ambiguity_checks_failed`): the
        title's last line gives the verdict, in red where any fails, and says whether the run stops there or
        goes on (``on_ambiguous``: ``"stop"`` or ``"warn"``, config ``science.on_ambiguous_contacts``); in orange
        where all pass with a warning (:func:`_warnings`). None: no verdict drawn.
    edge_width : float, default NaN
        σ of a step along the grid, voxels (the phase map's ``edge_width_vox``), for the verdict.

    Returns
    -------
    matplotlib.figure.Figure
        One panel.
    """
    fig, ax = plt.subplots(figsize=(7, 4))
    values = np.asarray(values, float)
    if values.size:
        ax.hist(values, bins=120, density=True, color="0.7", label=f"face neighbours (n={values.size})")
    if fit.has_components and values.size:
        # components too close for a level are drawn dotted: they still say how undecided the faces are
        x = np.linspace(np.nanmin(values), np.nanmax(values), 400)
        for name, mu, sd, w in (("gap", fit.gap_mean, fit.gap_sigma, fit.gap_weight),
                                ("CBD", fit.cbd_mean, fit.cbd_sigma, fit.cbd_weight)):
            ax.plot(x, w * np.exp(-0.5 * ((x - mu) / sd) ** 2) / (sd * np.sqrt(2 * np.pi)),
                    color=PHASE_COLOURS["void" if name == "gap" else "cbd"], ls="-" if fit.fitted else ":",
                    label=f"{name} {mu:.3f} ± {sd:.3f}" + ("" if fit.fitted else " (too close for a level)"))
        _electrolyte_noise_curve(ax, fit, x)
        _ambiguous_band(ax, values, fit)
    if np.isfinite(fit.level):
        how = "deconvolved reading" if getattr(fit, "reading", "level") == "deconvolved" else \
            ("fitted" if fit.fitted else "fallback")
        ax.axvline(fit.level, color="k", label=f"contact level {fit.level:.3f} ({how})")
    if midpoint is not None:
        ax.axvline(midpoint, color="k", ls=":", label=f"void/CBD midpoint {midpoint:.3f}")
    weight, spill = getattr(fit, "sharpen", 0.0), getattr(fit, "spill_sigma", 0.0)
    ax.set_xlabel("grey level across a surface face (background voxels)"
                  + (f", less the particles' spill (σ = {spill:.2f} vox)" if spill > 0 else "")
                  + (f", sharpened (w = {weight:.2f} vox²)" if weight > 0 else ""))
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    _verdict_title(ax, fit, title, through_layer, failed, on_ambiguous, edge_width)
    return fig


def _verdict_title(ax, fit, title: str, through_layer: bool, failed: list[str] | None, on_ambiguous: str,
                   edge_width: float = np.nan) -> None:
    """The contact figure's title with its verdict: red where a check fails, orange where all pass with a
    warning (:func:`_warnings`), black otherwise."""
    separation = getattr(fit, "separation", np.nan)
    warned = bool(failed is not None and not failed and _warnings(separation, edge_width))
    ax.set_title(_reading_title(fit, title, through_layer)
                 + _verdict_line(failed, on_ambiguous, separation, edge_width),
                 color="firebrick" if failed else ("darkorange" if warned else "black"))


def _warnings(separation: float, edge_width: float) -> list[str]:
    """Why a contact reading whose checks pass goes on with a warning: gap and CBD only weakly separated
    (:func:`detachment.plausibility.weakly_separated`), edges wider than the reading is checked on
    (:func:`detachment.plausibility.edges_wide`); empty where neither."""
    out = []
    if weakly_separated(separation):
        out.append(f"gap and CBD are weakly separated (D {separation:.2f} < {WEAK_CONTACT_SEPARATION})")
    if edges_wide(edge_width):
        out.append(f"edges are {edge_width:.2f} vox wide (> {MAX_CHECKED_EDGE_WIDTH}, beyond the checked range)")
    return out


def _ambiguous_band(ax, values, fit) -> None:
    """Shade the grey levels whose gap probability under ``fit`` is 0.1-0.9, labelled with their share of faces."""
    from .contact_level import AMBIGUOUS_POSTERIOR, gap_posterior

    grid = np.linspace(np.nanmin(values), np.nanmax(values), 400)
    post = gap_posterior(grid, fit)
    lo, hi = AMBIGUOUS_POSTERIOR
    share = getattr(fit, "ambiguous_faces", np.nan)
    ax.fill_between(grid, 0, 1, where=(post > lo) & (post < hi), transform=ax.get_xaxis_transform(),
                    color="#f5b041", alpha=0.3, label=f"ambiguous: P(gap) {lo:g}–{hi:g}, {share:.1%} of faces")


def _verdict_line(failed: list[str] | None, on_ambiguous: str, separation: float = np.nan,
                  edge_width: float = np.nan) -> str:
    """The contact figure's last title line: which checks fail and what the run does about it, or, where all
    pass, why it warns (:func:`_warnings`)."""
    if failed is None:
        return ""
    if not failed and (why := _warnings(separation, edge_width)):
        return "\ncontact checks pass, but " + " and\n".join(why) + ":\ndetachment is reported with a warning"
    if not failed:
        return "\ncontact checks pass: detachment is reported"
    then = ("the run stops here" if on_ambiguous == "stop"
            else "detachment reported anyway (science.on_ambiguous_contacts: warn)")
    import textwrap

    return "\n" + "\n".join(textwrap.wrap(f"NOT READABLE, {then}: " + "; ".join(failed), 100))


def _reading_title(fit, title: str, through_layer: bool) -> str:
    """``title`` and, below it, the shares of electrolyte faces of the readings compared, whether the
    contacts are read through a thin CBD layer (with the share of faces read as electrolyte so), and the gap / CBD
    components' separation where it is below the bound the reading needs."""
    if getattr(fit, "reading", "level") == "map":
        title = (f"{title}\ncontacts read on the phase map: electrolyte faces {fit.gap_share_map:.2f} "
                 f"(the level reads {fit.gap_share:.2f})")
    elif np.isfinite(getattr(fit, "spread", np.nan)):
        title = f"{title}\nelectrolyte faces: level {fit.gap_share:.2f}, deconvolved {fit.gap_share_deconvolved:.2f}"
    if through_layer:
        share = getattr(fit, "gap_share_through_layer", np.nan)
        title = (f"{title}\nmixed voxels across the faces (partial volume or blur):\na thin CBD layer with "
                 f"electrolyte beyond reads as the surface around it"
                 + (f" (electrolyte on {share:.1%} of faces)" if np.isfinite(share) else ""))
    separation = getattr(fit, "separation", np.nan)
    if np.isfinite(separation) and separation < MIN_CONTACT_SEPARATION:
        title = (f"{title}\ngap and CBD overlap: Ashman's D {separation:.2f} < {MIN_CONTACT_SEPARATION} "
                 f"(the faces cannot be read one voxel each)")
    return title


#: Goals drawn on the robustness figure: metric -> goal value, or a (low, high) band.
ROBUSTNESS_GOALS = {"phase_accuracy": 0.97, "phase_accuracy_pure_voxels": 0.97,
                    "phase_accuracy_blurred_truth": 0.97,
                    "cnn_precision": 0.9,
                    "cnn_sensitivity": 0.85, "recovery_3d": 0.95,
                    "split_merge_3d": 0.03, "detachment_mae": 0.03, "detachment_bias": (-0.02, 0.02),
                    "effect_found_over_planted": (0.85, 1.15)}


def stopped_samples(table) -> set[str]:
    """Samples of a robustness table (:mod:`detachment.robustness`) whose run a check would have stopped under
    the default settings (``phase_map_plausible``, ``contact_reading_plausible`` or
    ``contact_reading_self_consistent`` 0; ``science.self_consistency`` stops by default), and the pairs
    ``"a+b"`` holding one."""
    checks = table[table.metric.isin(["phase_map_plausible", "contact_reading_plausible",
                                      "contact_reading_self_consistent"])]
    stopped = set(checks["sample"][checks["value"] == 0])
    pairs = {s for s in table["sample"].unique() if "+" in s and set(s.split("+")) & stopped}
    return stopped | pairs


def warned_samples(table) -> set[str]:
    """Samples of a robustness table whose run goes on with a warning on its contact reading (gap and CBD only
    weakly separated: ``contact_separation``, :func:`detachment.plausibility.weakly_separated`; or edges wider
    than the reading is checked on: ``contact_edge_width``, :func:`detachment.plausibility.edges_wide`), and the
    pairs ``"a+b"`` holding one; those a check stops (:func:`stopped_samples`) left out."""
    sep, wide = table[table.metric == "contact_separation"], table[table.metric == "contact_edge_width"]
    warned = (set(sep["sample"][[weakly_separated(v) for v in sep["value"]]])
              | set(wide["sample"][[edges_wide(v) for v in wide["value"]]]))
    pairs = {s for s in table["sample"].unique() if "+" in s and set(s.split("+")) & warned}
    return (warned | pairs) - stopped_samples(table)


def robustness_figure(table, metrics=None):
    """Each headline metric against the phantom preset: filled = out-of-sample cells, open = in-sample,
    crosses = out-of-sample cells whose run a check stops (:func:`stopped_samples`; measured with the
    checks set to warn), orange = out-of-sample cells whose run goes on with a warning (:func:`warned_samples`).

    Dashed lines mark the goals (:data:`ROBUSTNESS_GOALS`).

    Parameters
    ----------
    table : pandas.DataFrame
        Long table of :mod:`detachment.robustness` (``preset``, ``sample``, ``split``, ``metric``,
        ``value``).
    metrics : sequence of str, optional
        Metrics shown, one panel each (default :data:`detachment.robustness.METRICS`).

    Returns
    -------
    matplotlib.figure.Figure
        Four panels per row.
    """
    from .robustness import METRICS

    metrics = list(metrics or METRICS)
    presets = list(dict.fromkeys(table.preset))
    x_of = {p: i for i, p in enumerate(presets)}
    ncol = 4
    nrow = int(np.ceil(len(metrics) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.4 * ncol, 2.9 * nrow), squeeze=False)
    stopped, warned = stopped_samples(table), warned_samples(table)
    for ax, metric in zip(axes.ravel(), metrics):
        t = table[table.metric == metric]
        out, stops, warns = t.split == "out_of_sample", t["sample"].isin(stopped), t["sample"].isin(warned)
        for rows, label, style in (
                (out & ~stops & ~warns, "out of sample", {"color": "#c0392b"}),
                (out & warns, "out of sample, run warns", {"color": "darkorange"}),
                (out & stops, "out of sample, run stops", {"color": "#c0392b", "marker": "x"}),
                (t.split == "in_sample", "in sample", {"facecolors": "none", "edgecolors": "#2e86c1"})):
            s = t[rows]
            if len(s):
                jitter = 0.12 if label == "in sample" else -0.12
                ax.scatter([x_of[p] + jitter for p in s.preset], s.value, s=22, label=label, **style)
        goal = ROBUSTNESS_GOALS.get(metric)
        for g in (goal if isinstance(goal, tuple) else (goal,)):
            if g is not None:
                ax.axhline(g, color="0.4", lw=0.8, ls="--")
        ax.set_title(metric, fontsize=9)
        ax.set_xticks(range(len(presets)))
        ax.set_xticklabels(presets, rotation=60, ha="right", fontsize=7)
        ax.tick_params(axis="y", labelsize=7)
    for ax in axes.ravel()[len(metrics):]:
        ax.axis("off")
    axes.ravel()[0].legend(fontsize=7)
    fig.suptitle("validation across the phantom family (dashed: goals)", fontsize=10)
    fig.tight_layout()
    return fig
