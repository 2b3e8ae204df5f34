"""Plausibility checks of a phase map: stop a wrong labelling instead of passing it downstream.

A histogram that resolves fewer peaks than there are phases (a wide point-spread function, NMC's
broad peak, little of a phase) makes the histogram model label the phases shifted by one class,
silently: e.g. CBD read as Al and the Al collector read as NMC. The collector's geometry gives this
away: the Al collector is a slab at z = 0 (the collector side), so the first slice must be mostly Al
and nearly all Al voxels must lie in the slab.

Entry points: :func:`phase_counts`, :func:`check_phase_map`, :func:`enforce`, :func:`enforce_contacts`,
:func:`warn_weak_separation`, :func:`warn_wide_edges`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from . import io
from .phases import AL, NMC_HIGH, NMC_LOW, VOID
from .z_blur import EVERY, SQUARE

log = logging.getLogger(__name__)

#: Largest ``edge_undershoot`` (:attr:`detachment.edge_halo.EdgeHalo.undershoot`): chosen on the tuning cells
#: between the strongest halo under which one-voxel gaps and coats still read within the goals and the mildest
#: under which they do not; the presets without a halo read far below it (docs/results.md).
EDGE_UNDERSHOOT_BOUND = 0.05
#: Largest ``ring_ratio`` (:attr:`detachment.rings.Rings.ratio`): chosen on the tuning cells between the
#: strongest ring artefacts under which the contacts still read within the goals and the mildest under which
#: they do not; the presets without rings read far below it (docs/results.md).
RING_RATIO_BOUND = 0.09
#: Largest ``blur_z_ratio`` (:attr:`detachment.z_blur.ZBlur.ratio`): chosen on the tuning cells below every
#: ratio of one-voxel gaps and coats under the least z blur at which one of them read outside the goals (1.15
#: times the slices'), above those of the cells that read them well under 1.05 times and 0.07 above the
#: isotropic presets' highest (docs/results.md).
BLUR_Z_RATIO_BOUND = 1.16
#: Least ``blur_z_ratio``: a z sharper than the slices, chosen on the tuning cells between the highest ratio that
#: read outside the goals and the isotropic presets' lowest (docs/results.md).
BLUR_Z_RATIO_MIN = 0.93
#: The same bounds for the ratio over every edge, read where too few edges are crossed nearly square
#: (:data:`detachment.z_blur.EVERY`): chosen on the tuning cells the same way for that reading (docs/results.md).
BLUR_Z_EVERY_BOUND, BLUR_Z_EVERY_MIN = 1.12, 0.93
#: Largest point-spread σ (voxels) on the particles' flat edges within the slices (``blur_sigma_vox``), chosen on
#: blurred phantoms (docs/results.md).
BLUR_SIGMA_BOUND = 0.65
#: Largest ``blur_z_sigma_vox``, the point spread along z where the forward model fitted or was given one apart
#: from the slices' (``threshold.psf_refine_z_factor``): that σ times the z factor. The same bound as within the
#: slices, for the same reason: gaps and coats of one to three voxels under and over the particles.
BLUR_Z_SIGMA_BOUND = BLUR_SIGMA_BOUND
#: Largest ``blur_z_factor``, the forward model's σ along z over its σ within the slices, where it fitted or was
#: given one apart from 1: chosen on the tuning cells between the factors under which one-voxel gaps and coats
#: still read within the goals and those under which they did not (docs/results.md). None below: a sharper z,
#: followed by the model, read within them on every tuning cell.
BLUR_Z_FACTOR_BOUND = 1.2
#: ``blur_z_ratio``'s (least, largest) per reading of :class:`detachment.z_blur.ZBlur`.
BLUR_Z_BOUNDS = {SQUARE: (BLUR_Z_RATIO_MIN, BLUR_Z_RATIO_BOUND), EVERY: (BLUR_Z_EVERY_MIN, BLUR_Z_EVERY_BOUND)}
#: Lower bounds of the checks (physical, not fitted; the z ratio's chosen on tuning cells):
#: check -> (lower bound, what is required).
BOUNDS = {
    "al_fraction_first_slice": (0.5, "the first slice (z = 0, the collector side) is mostly Al"),
    "al_in_collector_slab": (0.8, "at least this share of the Al voxels lies in the collector slab "
                                  "(the run of mostly-Al slices from z = 0)"),
    "void_fraction": (0.001, "electrolyte / pores make up at least this share of the volume"),
    "nmc_fraction": (0.001, "NMC (low + high density) makes up at least this share of the volume"),
    "cbd_resolved": (1.0, "the histogram separates CBD from the electrolyte (1 = resolved): the contacts "
                          "are read between these two"),
    "min_phase_fraction": (0.001, "every phase the model resolves makes up at least this share of the volume"),
    "min_interior_share": (0.05, "every phase the model resolves is a region, not a shell: at least this "
                                 "share of its voxels have all six neighbours in the same phase (a class "
                                 "fitted to the blurred edges between two phases is a shell)"),
    "blur_z_ratio_min": (BLUR_Z_RATIO_MIN, "a step along z is at least this many times as wide as within the "
                         "slices (blur_z_ratio): the forward model takes the point spread read within the slices as "
                         "isotropic, and under a sharper z it blurs the contacts under and over the particles more "
                         "than the data are, and reads gaps there as detached where they are coated. The bound: "
                         "docs/results.md"),
}
#: Upper bounds: check -> (upper bound, what is required).
MAX_BOUNDS = {
    "blur_sigma_vox": (BLUR_SIGMA_BOUND, "the point-spread function is narrow enough to see gaps of one to three voxels (σ "
                             "measured on the particles' flat edges, voxels; the bound: docs/results.md)"),
    "shading_ratio": (0.2, "the electrolyte's grey level wanders across the volume by at most this share of the "
                           "CBD - electrolyte contrast (98th less 2nd percentile of its level in blocks of 16 voxels, "
                           "detachment.shading; after flattening, where threshold.flatten_shading read the volume "
                           "again less it): beyond it one threshold for the whole volume reads electrolyte as CBD "
                           "where the reconstruction is bright, and gaps read attached. The bound: docs/results.md"),
    "edge_undershoot": (EDGE_UNDERSHOOT_BOUND, "the electrolyte one to four voxels from the particles reads at most "
                        "this share of the NMC - electrolyte contrast darker than the open electrolyte "
                        "(detachment.edge_halo): a blur only lifts it; a halo (phase contrast, fringes, a "
                        "sharpening filter) darkens it, and a CBD coat under the dark rim reads as a gap. Read "
                        "after the halo fitted is taken out, where threshold.remove_halo took it out. The "
                        "bound: docs/results.md"),
    "ring_ratio": (RING_RATIO_BOUND, "ring artefacts of the reconstruction (rings about z through the slices' "
                   "centre, the same in every slice) are at most this share of the CBD - electrolyte contrast (the "
                   "root mean square of the radial profile the volume's two halves along z share; detachment.rings): "
                   "beyond it a ring across a gap or a coat shifts its grey level by more than the contact "
                   "reading tells gap from CBD. The bound: docs/results.md"),
    "blur_z_ratio": (BLUR_Z_RATIO_BOUND, "a step along z is at most this many times as wide as within the slices "
                     "(the NMC / background edges the map's surface crosses nearly square, or every edge where "
                     "those are too few, under its own bounds; detachment.z_blur): the blur check and the forward "
                     "model read the point spread within the slices and take it as isotropic; a coarser z blurs "
                     "the contacts under and over the particles unseen. The bound: docs/results.md"),
    "blur_z_sigma_vox": (BLUR_Z_SIGMA_BOUND, "the point-spread function along z is narrow enough to see gaps of one "
                         "to three voxels under and over the particles (blur_sigma_vox times the z factor the forward "
                         "model fitted apart from the slices, threshold.psf_refine_z_factor; voxels): the same bound "
                         "as within the slices"),
    "blur_z_factor": (BLUR_Z_FACTOR_BOUND, "the point spread along z is at most this many times as wide as within "
                      "the slices (the forward model's fit, threshold.psf_refine_z_factor): beyond it one-voxel gaps "
                      "and coats under and over the particles read outside the goals even where the model follows "
                      "the z blur. The bound: docs/results.md"),
}
#: Largest ``gap_width_ratio`` of a contact reading (:attr:`detachment.contact_level.ContactLevel.gap_width_ratio`):
#: the gap faces' grey levels may spread this much wider than the open electrolyte's. Beyond it the voxels
#: across the faces hold part of the particle or of CBD (surfaces that cut voxels, or blur), which a one-voxel
#: reading takes for CBD: the contacts are then read through a thin CBD layer by the surface around it
#: (:attr:`detachment.contact_level.ContactLevel.partial_volume`), or, where the user turned that off
#: (``science.contact_partial_volume: never``), the reading stops. Chosen between the tuning cells that read
#: their contacts well and those that do not (docs/results.md).
MAX_GAP_WIDTH_RATIO = 1.35
#: Least Ashman's D of the gap and CBD Gaussians fitted to the face neighbours' grey levels
#: (:attr:`detachment.contact_level.ContactLevel.separation`) at which the contacts are read. Below it the
#: two classes overlap so far that a reading of one voxel per face misreads a sixth of the faces or more
#: (at D = 2, each class's tail beyond the midpoint), the map's reading included, and the fitted level, the
#: map's independent check, is not fitted: the reading stops (docs/results.md, random draws).
MIN_CONTACT_SEPARATION = 2.0
#: Ashman's D below which, at or above :data:`MIN_CONTACT_SEPARATION`, the contacts are read with a warning:
#: each class's tail beyond the midpoint still holds 7 % of its faces at D = 3, and on phantoms drawn at
#: random most draws that read detachment outside the goals while nothing stopped lay between the two
#: bounds, but about half of the draws there read well, as do the presets ``low_contrast`` and
#: ``partial_volume`` (docs/results.md, random draws): a bound at 3 would stop those, a warning does not.
WEAK_CONTACT_SEPARATION = 3.0
#: Widest step along the grid (σ, voxels; the phase map's ``edge_width_vox``,
#: :func:`detachment.contact_level.edge_width_from_map`) up to which the contact reading's corrections follow
#: the data and are checked on one-voxel coats: the sharpening's weight stops growing there
#: (:data:`detachment.contact_level.MAX_SHARPEN_SIGMA`). Wider edges are read with a warning: one-voxel coats and
#: gaps are then narrower than the blur, and the reading is extrapolated. Set from that cap, not fitted to any
#: phantom; tested on random draws (docs/results.md).
MAX_CHECKED_EDGE_WIDTH = 0.7


class ImplausiblePhaseMap(ValueError):
    """A phase map failed a plausibility check; the message names the sample, the check and the way out."""


@dataclass
class PhaseCounts:
    """Voxel counts per z slice and phase code of a phase map.

    Attributes
    ----------
    per_slice : numpy.ndarray
        (z, 5) int64 voxel counts; column = phase code 0..4 (void, CBD, NMC low, NMC high, Al;
        :mod:`detachment.phases`).
    """

    per_slice: np.ndarray


def phase_counts(phases_path, slab: int = 32) -> PhaseCounts:
    """Count each phase code in every z slice of ``phases.h5`` (``/phases``), streamed by slab.

    Parameters
    ----------
    phases_path : str or os.PathLike
        HDF5 file with the (z, y, x) uint8 phase map ``/phases``.
    slab : int, default 32
        Slices read at a time.

    Returns
    -------
    PhaseCounts
        Per-slice counts of codes 0..4 (other values are not counted).
    """
    import h5py

    with h5py.File(phases_path, "r") as f:
        d = f["phases"]
        out = np.zeros((d.shape[0], 5), np.int64)
        for z0, z1 in io.slab_ranges(d.shape[0], slab):
            block = d[z0:z1].reshape(z1 - z0, -1)
            for c in range(5):
                out[z0:z1, c] = np.count_nonzero(block == c, axis=1)
    return PhaseCounts(out)


def check_phase_map(counts: PhaseCounts, fwhm: pd.DataFrame | None = None, blur_sigma_vox: float | None = None,
                    tilted_collector_top: int | None = None, shading_ratio: float | None = None,
                    edge_undershoot: float | None = None, blur_z_ratio: float | None = None,
                    blur_z_reading: str = SQUARE, blur_z_sigma_vox: float | None = None,
                    blur_z_factor: float | None = None, ring_ratio: float | None = None) -> pd.DataFrame:
    """Every check of :data:`BOUNDS` and :data:`MAX_BOUNDS` on a phase map's counts, table and blur. The collector
    slab is the run of slices from z = 0 in which Al makes up more than half the slice, or for a tilted collector
    the slices below ``tilted_collector_top``.

    Parameters
    ----------
    counts : PhaseCounts
        Per-slice phase counts (:func:`phase_counts`, or kept by the thresholding).
    fwhm : pandas.DataFrame, optional
        The thresholding's per-phase table (``phase_fwhm.csv``: ``phase``, ``resolved``,
        ``interior_voxels``, ``volume_fraction``); without it the checks of the phase model
        (``cbd_resolved``, ``min_phase_fraction``, ``min_interior_share``) are left out.
    blur_sigma_vox : float, optional
        The point-spread σ measured on the particles' flat edges (:mod:`detachment.blur`); without it, or
        NaN (too few edges), ``blur_sigma_vox`` is left out.
    tilted_collector_top : int, optional
        Where the thresholding found the collector tilted, the highest first slice above it over the
        columns (:attr:`detachment.threshold.ThresholdResult.tilted_collector_top`): a tilted slab holds Al
        above its mostly-Al slices.
    shading_ratio, edge_undershoot : float, optional
        :attr:`detachment.shading.Shading.ratio` and :attr:`detachment.edge_halo.EdgeHalo.undershoot`; each
        left out without it, or NaN (too little electrolyte, CBD not resolved, ...).
    blur_z_ratio : float, optional
        A step's width along z over its width within the slices (:attr:`detachment.z_blur.ZBlur.ratio`); without
        it, or NaN, left out.
    blur_z_reading : str, default "square"
        Which edges it was read on (:attr:`detachment.z_blur.ZBlur.reading`): its bounds, :data:`BLUR_Z_BOUNDS`.
    blur_z_sigma_vox, blur_z_factor : float, optional
        Where the forward model followed a z factor other than 1: ``blur_sigma_vox`` times it, and the factor.
        Given (finite), they are checked in place of ``blur_z_ratio``, which bounds a z blur it would not follow.
    ring_ratio : float, optional
        :attr:`detachment.rings.Rings.ratio`; left out without it, or NaN.

    Returns
    -------
    pandas.DataFrame
        One row per check: ``check``, ``value``, ``bound``, ``bound_type`` (``min``: value >= bound;
        ``max``: value <= bound), ``passed``, ``requirement``.
    """
    values = _count_checks(counts, tilted_collector_top)
    if fwhm is not None:
        values.update(_model_checks(fwhm, max(float(counts.per_slice.sum()), 1.0)))
    rows = [_row(k, v, "min") for k, v in values.items()]
    z_min, z_max = BLUR_Z_BOUNDS[blur_z_reading]
    z_checks = ((("blur_z_sigma_vox", blur_z_sigma_vox, "max", None), ("blur_z_factor", blur_z_factor, "max", None))
                if blur_z_sigma_vox is not None and np.isfinite(blur_z_sigma_vox) else
                (("blur_z_ratio", blur_z_ratio, "max", z_max), ("blur_z_ratio_min", blur_z_ratio, "min", z_min)))
    for name, value, kind, bound in (("blur_sigma_vox", blur_sigma_vox, "max", None),
                                     ("shading_ratio", shading_ratio, "max", None),
                                     ("edge_undershoot", edge_undershoot, "max", None), *z_checks,
                                     ("ring_ratio", ring_ratio, "max", None)):
        if value is not None and np.isfinite(value):
            rows.append(_row(name, float(value), kind, bound))
    return pd.DataFrame(rows)


def _row(name: str, value: float, kind: str, bound: float | None = None) -> dict:
    """One row of :func:`check_phase_map`: ``kind`` ``"min"`` (:data:`BOUNDS`) or ``"max"`` (:data:`MAX_BOUNDS`),
    under ``bound`` where given rather than the table's."""
    table_bound, requirement = (BOUNDS if kind == "min" else MAX_BOUNDS)[name]
    bound = table_bound if bound is None else bound
    passed = value >= bound if kind == "min" else value <= bound
    return {"check": name, "value": value, "bound": bound, "bound_type": kind, "passed": bool(passed),
            "requirement": requirement}


def _count_checks(counts: PhaseCounts, tilted_collector_top: int | None) -> dict:
    """Values of the checks read on the per-slice counts alone (the collector slab, the phases' shares)."""
    c = counts.per_slice.astype(float)
    al_frac = c[:, AL] / np.maximum(c.sum(1), 1)
    # the collector slab: the run of mostly-Al slices from z = 0 up, or below a tilted collector's top
    slab = np.cumprod(al_frac > 0.5).astype(bool)
    if tilted_collector_top is not None:
        slab = np.arange(len(al_frac)) < tilted_collector_top
    total = max(c.sum(), 1)
    return {
        "al_fraction_first_slice": float(al_frac[0]) if len(al_frac) else 0.0,
        "al_in_collector_slab": float(c[slab, AL].sum() / c[:, AL].sum()) if c[:, AL].sum() else 0.0,
        "void_fraction": float(c[:, VOID].sum() / total),
        "nmc_fraction": float((c[:, NMC_LOW].sum() + c[:, NMC_HIGH].sum()) / total),
    }


def _model_checks(fwhm: pd.DataFrame, total: float) -> dict:
    """Values of the phase-model checks from the per-phase table (a table without ``resolved``: all are)."""
    resolved = fwhm[fwhm["resolved"].astype(bool)] if "resolved" in fwhm else fwhm
    voxels = resolved.volume_fraction.to_numpy(float) * total
    return {
        "cbd_resolved": float("cbd" in set(resolved.phase)),
        "min_phase_fraction": float(resolved.volume_fraction.min()),
        "min_interior_share": float(np.min(resolved.interior_voxels.to_numpy(float) / np.maximum(voxels, 1))),
    }


def enforce(table: pd.DataFrame, sample: str, on_implausible: str = "stop", figure_hint: str = "") -> None:
    """Stop (raise :class:`ImplausiblePhaseMap`) or warn when a check failed.

    Parameters
    ----------
    table : pandas.DataFrame
        :func:`check_phase_map` output.
    sample : str
        Named in the message.
    on_implausible : str, default "stop"
        ``"stop"`` or ``"warn"`` (config ``threshold.on_implausible``).
    figure_hint : str, default ""
        Where the user can look at the histogram and the phase map.

    Raises
    ------
    ImplausiblePhaseMap
        When a check failed and ``on_implausible`` is ``"stop"``; the message names the sample, the
        failed checks and the ways out.
    ValueError
        When ``on_implausible`` is neither ``"stop"`` nor ``"warn"``.
    """
    if on_implausible not in ("stop", "warn"):
        raise ValueError(f"threshold.on_implausible: {on_implausible!r} is not 'stop' or 'warn'")
    failed = table[~table.passed]
    if failed.empty:
        return
    what = "; ".join(f"{r.check} = {r.value:.3f} {'>' if getattr(r, 'bound_type', 'min') == 'max' else '<'} "
                     f"{r.bound} ({r.requirement})" for r in failed.itertuples())
    advice = _advice(set(failed.check), figure_hint or "the phase figure")
    msg = (f"sample '{sample}': implausible phase map: {what}. {' '.join(advice)} Set threshold.on_implausible: "
           f"warn to go on with this map (every downstream number inherits it).")
    if on_implausible == "stop":
        raise ImplausiblePhaseMap(msg)
    log.warning(msg)


def _advice(failed: set, figure: str) -> list[str]:
    """What to do about each failed check of :func:`check_phase_map` (``figure``: where the user can look)."""
    advice = []
    if failed - {"blur_sigma_vox", "shading_ratio", "edge_undershoot", "blur_z_ratio", "blur_z_ratio_min",
                  "blur_z_sigma_vox", "blur_z_factor", "ring_ratio"}:
        advice.append(f"The histogram probably resolves fewer peaks than phases and the classes are shifted (e.g. "
                      f"CBD read as Al, the collector as NMC), or the volume holds no collector at z = 0. Look at "
                      f"{figure}; check the volume's orientation (the collector must be at z = 0 after import: the "
                      f"sample sheet's `collector_side`); set manual thresholds (the sample sheet's `thresholds` "
                      f"column, or threshold.thresholds); try another threshold.method (informed, gmm, multiotsu).")
    if "blur_sigma_vox" in failed:
        advice.append(f"The reconstruction is blurred wider than gaps and coats of one to three voxels beside the "
                      f"particles can be told apart in, and no threshold setting changes that (the last panel of "
                      f"{figure} shows the edge profile it was read on).")
    if "shading_ratio" in failed:
        advice.append("The grey levels drift across the volume (cupping, a region-of-interest scan's truncation, "
                      "flat-field or beam drift), and the phases are read with one threshold each for the whole "
                      "volume; flattening the volume by the electrolyte's own level (threshold.flatten_shading) "
                      "left this much or was off: correct the shading before import (flat-field the projections, "
                      "or subtract a smooth background fitted to the electrolyte's level).")
    if "edge_undershoot" in failed:
        advice.append("The particles' edges overshoot: the electrolyte beside them reads darker than the open "
                      "electrolyte, which no blur does. Phase-contrast halos (a Zernike ring), the fringes of a "
                      "propagation-based reconstruction whose phase retrieval assumed one delta/beta for phases "
                      "that differ in it, or a sharpening filter do; the contact reading and the forward model "
                      "assume a blur and would read coats under the dark rim as gaps. This is what is left "
                      "after the halo fitted as an unsharp mask was taken out (threshold.remove_halo; off, nothing "
                      "was): a halo of another shape or reach than that model's. Reconstruct again without the "
                      "edge enhancement (a phase retrieval fitted to the sample, no sharpening filter).")
    if "blur_z_ratio" in failed:
        advice.append("The reconstruction is blurrier along z than within its slices (a vertical drift during the "
                      "scan, slices interpolated or binned, a volume resampled from a coarser axis); the blur check "
                      "and the forward model read the point spread within the slices, so the contacts under and "
                      "over the particles would be read under the wrong blur. Reconstruct or resample to an "
                      "isotropic resolution (or correct the drift), or, where z is the coarser axis by design, "
                      "blur the slices to match it before import.")
    if failed & {"blur_z_sigma_vox", "blur_z_factor"}:
        advice.append("The reconstruction is blurred along z wider than gaps and coats under and over the particles "
                      "can be told apart in (a vertical drift during the scan, slices interpolated or binned); no "
                      "threshold setting changes that. Reconstruct or resample to a finer z resolution, or correct "
                      "the drift.")
    if "blur_z_ratio_min" in failed:
        advice.append("The reconstruction is sharper along z than within its slices (slices blurred or binned in "
                      "plane, a volume resampled from a coarser in-plane grid); the forward model takes the point "
                      "spread within the slices as isotropic and would blur the contacts under and over the "
                      "particles more than the data are. Resample to an isotropic resolution, or blur along z to "
                      "match the slices before import.")
    if "ring_ratio" in failed:
        advice.append("The reconstruction holds ring artefacts (detector pixels that answer too high or too low), "
                      "strong enough to shift the grey levels of gaps and coats they cross. Remove them in the "
                      "reconstruction (a ring or stripe filter on the sinograms, or flat fields taken closer to "
                      "the scan) and import the volume again.")
    return advice


def enforce_model(error: Exception, sample: str, on_implausible: str = "stop") -> None:
    """Stop (raise :class:`ImplausiblePhaseMap`) or warn when the informed phase model could not be fitted.

    Parameters
    ----------
    error : Exception
        The :class:`detachment.phase_fit.PhaseModelError` raised.
    sample : str
        Named in the message.
    on_implausible : str, default "stop"
        ``"stop"`` or ``"warn"`` (config ``threshold.on_implausible``); after a warning the caller
        goes on with another method.

    Raises
    ------
    ImplausiblePhaseMap
        With ``"stop"``: the message names the sample, what failed and the ways out.
    """
    msg = (f"sample '{sample}': the phase model does not fit this volume: {error}. Check the volume's "
           f"orientation (the collector must be at z = 0 after import: the sample sheet's `collector_side`); "
           f"set manual thresholds (the sample sheet's "
           f"`thresholds` column, or threshold.thresholds in the config); or try threshold.method: gmm "
           f"(one class per phase on the histogram alone).")
    if on_implausible == "stop":
        raise ImplausiblePhaseMap(msg) from error
    log.warning("%s Going on with threshold.method: gmm (threshold.on_implausible: warn).", msg)


class AmbiguousContacts(ValueError):
    """The contact reading of a sample cannot tell gap from CBD; the message names the sample and the way out."""


def contacts_ambiguous(spread: float, max_ambiguity: float | None, blur_sigma: float | None = None,
                       width_ratio: float | None = None, through_layer: bool = False,
                       through_share: float | None = None, separation: float | None = None) -> bool:
    """Whether a sample's contact reading is too uncertain for its detachment to be reported.

    Parameters
    ----------
    spread : float
        ``contact_level.csv``'s ``spread``: share (0-1, signed) of the background faces that the reading
        used reads as electrolyte minus the share an independent reading does (the fitted level's minus the
        deconvolved one's, :func:`detachment.contact_level.choose_reading`; the phase map's minus the
        level's, :func:`detachment.contact_level.read_on_map`); NaN where not computed.
    max_ambiguity : float or None
        Config ``science.contact_max_ambiguity``: the largest ``|spread|`` accepted; None accepts all (and
        checks nothing else).
    blur_sigma : float, optional
        Point-spread σ measured on the particles' edges (voxels, ``phase_qc.csv``); beyond the blur check's
        bound (:data:`MAX_BOUNDS`) the reading is outside the range it was validated on, whatever the
        spread. None or NaN: not checked.
    width_ratio : float, optional
        ``contact_level.csv``'s ``gap_width_ratio``: how much wider the gap faces' grey levels spread than
        the open electrolyte's; beyond :data:`MAX_GAP_WIDTH_RATIO` the faces hold mixtures a one-voxel
        reading misreads. None or NaN: not checked.
    through_layer : bool, default False
        Whether the contacts are read through a thin CBD layer
        (:func:`detachment.contact_level.reads_through_layer`): the reading that accounts for such mixtures,
        so ``width_ratio`` is then not checked.
    through_share : float, optional
        ``contact_level.csv``'s ``gap_share_through_layer``: the share of the background faces read as
        electrolyte only through the layer, which a coat one or two voxels thick would give as well; with
        ``through_layer``, beyond ``max_ambiguity`` the reading is ambiguous as a ``spread`` would be.
        None or NaN: not checked.
    separation : float, optional
        ``contact_level.csv``'s ``separation``: Ashman's D of the gap and CBD Gaussians fitted to the face
        neighbours' grey levels; below :data:`MIN_CONTACT_SEPARATION` the reading is ambiguous. None or NaN
        (no components fitted): not checked.

    Returns
    -------
    bool
        True when ``|spread|`` exceeds ``max_ambiguity``, σ the blur bound, the width ratio its bound (not
        read through the layer), the share read through the layer ``max_ambiguity`` or the separation is
        below its bound (a NaN spread is not ambiguous: nothing was compared).
    """
    if max_ambiguity is None:
        return False
    return (bool(np.isfinite(spread)) and abs(spread) > max_ambiguity or _too_blurred(blur_sigma)
            or not through_layer and _too_mixed(width_ratio)
            or through_layer and _too_thin(through_share, max_ambiguity) or _overlapping(separation))


def ambiguity_checks_failed(spread: float, max_ambiguity: float | None, blur_sigma: float | None = None,
                            width_ratio: float | None = None, through_layer: bool = False,
                            through_share: float | None = None, separation: float | None = None) -> list[str]:
    """Each check of :func:`contacts_ambiguous` that fails, in a few words with its value and bound (for the
    contact-level figure; :func:`enforce_contacts` says more). Empty exactly where :func:`contacts_ambiguous`
    is False; arguments as there."""
    if max_ambiguity is None:
        return []
    out = []
    if bool(np.isfinite(spread)) and abs(spread) > max_ambiguity:
        out.append(f"readings disagree on {abs(spread):.0%} of faces (> {max_ambiguity:.0%})")
    if _too_blurred(blur_sigma):
        out.append(f"point spread σ {blur_sigma:.2f} vox (> {MAX_BOUNDS['blur_sigma_vox'][0]})")
    if not through_layer and _too_mixed(width_ratio):
        out.append(f"gap faces {width_ratio:.2f}× as wide as open electrolyte (> {MAX_GAP_WIDTH_RATIO})")
    if through_layer and _too_thin(through_share, max_ambiguity):
        out.append(f"{through_share:.0%} of faces electrolyte only through a thin layer (> {max_ambiguity:.0%})")
    if _overlapping(separation):
        out.append(f"gap / CBD separation D {separation:.2f} (< {MIN_CONTACT_SEPARATION})")
    return out


def _too_thin(through_share: float | None, max_ambiguity: float) -> bool:
    return through_share is not None and bool(np.isfinite(through_share)) and through_share > max_ambiguity


def _overlapping(separation: float | None) -> bool:
    return separation is not None and bool(np.isfinite(separation)) and separation < MIN_CONTACT_SEPARATION


def _too_blurred(blur_sigma: float | None) -> bool:
    return blur_sigma is not None and bool(np.isfinite(blur_sigma)) and blur_sigma > MAX_BOUNDS["blur_sigma_vox"][0]


def _too_mixed(width_ratio: float | None) -> bool:
    return width_ratio is not None and bool(np.isfinite(width_ratio)) and width_ratio > MAX_GAP_WIDTH_RATIO


def enforce_contacts(spread: float, max_ambiguity: float | None, sample: str, on_ambiguous: str = "stop",
                     figure_hint: str = "", blur_sigma: float | None = None, reading: str = "level",
                     undecided: float | None = None, width_ratio: float | None = None,
                     through_layer: bool = False, through_share: float | None = None,
                     separation: float | None = None) -> None:
    """Stop (raise :class:`AmbiguousContacts`) or warn when a sample's contact reading is ambiguous.

    Parameters
    ----------
    spread, max_ambiguity, blur_sigma, width_ratio, through_layer, through_share, separation
        As :func:`contacts_ambiguous`.
    sample : str
        Named in the message.
    on_ambiguous : str, default "stop"
        ``"stop"`` or ``"warn"`` (config ``science.on_ambiguous_contacts``).
    figure_hint : str, default ""
        Where the user can look at the face-neighbour grey levels.
    reading : str, default "level"
        ``contact_level.csv``'s ``reading``: which two readings ``spread`` compares (named in the message).
    undecided : float, optional
        ``contact_level.csv``'s ``ambiguous_faces``: the share of faces the fitted gap / CBD mixture leaves
        undecided; named in the message with the per-particle column that carries it, when finite.

    Raises
    ------
    AmbiguousContacts
        When the reading is ambiguous and ``on_ambiguous`` is ``"stop"``; the message names the sample,
        every check that failed (the disagreement, the blur, the gap faces' width) with its bound, and the
        ways out.
    ValueError
        When ``on_ambiguous`` is neither ``"stop"`` nor ``"warn"``.
    """
    if on_ambiguous not in ("stop", "warn"):
        raise ValueError(f"science.on_ambiguous_contacts: {on_ambiguous!r} is not 'stop' or 'warn'")
    if not contacts_ambiguous(spread, max_ambiguity, blur_sigma, width_ratio, through_layer, through_share,
                              separation):
        return
    reasons = _ambiguity_reasons(spread, max_ambiguity, blur_sigma, None if through_layer else width_ratio,
                                 reading, through_share if through_layer else None, separation)
    why = "; and ".join(reasons)
    if undecided is not None and np.isfinite(undecided):
        why += (f"; the sample's gap / CBD mixture leaves {undecided:.0%} of the faces undecided (contact_level.csv "
                f"ambiguous_faces; per particle, particles.csv detachment_ambiguous)")
    # the blur or the overlap alone: no contact setting changes what the reconstruction cannot resolve
    data_only = len(reasons) == int(_too_blurred(blur_sigma)) + int(_overlapping(separation))
    settings = ("no contact setting changes that" if data_only else
                "set science.contact_level: midpoint or manual thresholds if you know the grey levels better")
    msg = (f"sample '{sample}': the contacts cannot be read: {why}. Look at "
           f"{figure_hint or 'the contact-level figure'}; {settings}; or set science.on_ambiguous_contacts: warn "
           f"to go on (detachment_by_cell.csv reports the spread as contact_reading_spread).")
    if on_ambiguous == "stop":
        raise AmbiguousContacts(msg)
    log.warning(msg)


def _ambiguity_reasons(spread, max_ambiguity, blur_sigma, width_ratio, reading: str,
                       through_share: float | None = None, separation: float | None = None) -> list[str]:
    """What :func:`enforce_contacts` says for each check of :func:`contacts_ambiguous` that failed."""
    out = []
    if bool(np.isfinite(spread)) and abs(spread) > max_ambiguity:
        pair = ("the phase map and the fitted contact level" if reading == "map"
                else "the fitted contact level and the deconvolved reading")
        out.append(f"{pair} disagree on {abs(spread):.0%} of the background faces (science.contact_max_ambiguity: "
                   f"{max_ambiguity:.0%}), so gap and CBD are not told apart in these grey levels (CBD too close to "
                   f"the electrolyte, or a point-spread function wider than the gaps) and every detachment number "
                   f"would carry an error of that order")
    if _too_blurred(blur_sigma):
        out.append(f"the point-spread σ measured on the particles' flat edges is {blur_sigma:.2f} voxels "
                   f"(phase_qc.csv blur_sigma_vox), wider than the {MAX_BOUNDS['blur_sigma_vox'][0]} voxels up to "
                   f"which the reading was validated: a one-voxel gap or coat beside a particle is misread there, so "
                   f"detachment can be off by a tenth or more even where the two readings agree")
    if _too_mixed(width_ratio):
        out.append(f"the grey levels across the faces read as electrolyte spread {width_ratio:.2f} times as wide as "
                   f"the open electrolyte's own (contact_level.csv gap_width_ratio; bound {MAX_GAP_WIDTH_RATIO}): "
                   f"the voxels across the faces hold part of the particle or of CBD (surfaces that cut voxels, "
                   f"i.e. partial volume, or blur), and a one-voxel reading takes a voxel half particle and half "
                   f"electrolyte for CBD, so detachment comes out too low, by a few hundredths to a tenth or more "
                   f"(science.contact_partial_volume: auto reads such a thin CBD layer as the surface around it reads)")
    if _too_thin(through_share, max_ambiguity):
        out.append(f"{through_share:.0%} of the background faces are read as electrolyte only through a thin CBD "
                   f"layer (contact_level.csv gap_share_through_layer; science.contact_max_ambiguity: "
                   f"{max_ambiguity:.0%}): a voxel the particle's surface cuts and a coat one voxel thick look the "
                   f"same, so detachment could be off by that much (science.contact_partial_volume: never reads "
                   f"them as CBD)")
    if _overlapping(separation):
        out.append(f"the grey levels beside the particles do not show gap and CBD as two classes: the two Gaussians "
                   f"fitted to them overlap (Ashman's D {separation:.2f}, contact_level.csv separation; at least "
                   f"{MIN_CONTACT_SEPARATION} needed), so a reading of one voxel per face, the phase map's included, "
                   f"misreads a sixth of the faces or more and detachment can be off by a tenth or more even where "
                   f"the readings agree (CBD too close to the electrolyte for the noise, or coats and gaps thinner "
                   f"than the blur; a sample with almost no detached or no coated surface shows one class too: the "
                   f"figure shows which)")
    return out


def weakly_separated(separation: float | None) -> bool:
    """Whether gap and CBD are read but only weakly told apart: Ashman's D (``contact_level.csv``
    ``separation``) at or above :data:`MIN_CONTACT_SEPARATION` and below :data:`WEAK_CONTACT_SEPARATION`.
    None or NaN (no components fitted): False."""
    return (separation is not None and bool(np.isfinite(separation))
            and MIN_CONTACT_SEPARATION <= separation < WEAK_CONTACT_SEPARATION)


def warn_weak_separation(separation: float | None, sample: str, figure: str = "") -> bool:
    """Log a warning naming ``sample`` where its gap and CBD grey levels are :func:`weakly_separated`.

    Parameters
    ----------
    separation : float, optional
        ``contact_level.csv``'s ``separation`` (Ashman's D of the gap and CBD Gaussians).
    sample : str
        Named in the message.
    figure : str, default ""
        The contact-level figure the user should look at.

    Returns
    -------
    bool
        Whether it warned (the reading goes on either way).
    """
    if not weakly_separated(separation):
        return False
    log.warning(f"sample '{sample}': gap and CBD beside the particles are only weakly separated (Ashman's D "
                f"{separation:.2f}, contact_level.csv separation; read from {MIN_CONTACT_SEPARATION}, clear from "
                f"{WEAK_CONTACT_SEPARATION}). At this overlap the per-face reading misreads several percent of the "
                f"faces, and on phantoms drawn at random about half the samples in this band that no check stopped "
                f"read detachment outside MAE 0.03 or |bias| 0.02 (coats of one or two voxels read as gaps, gaps "
                f"under two voxels as CBD), by a few hundredths (up to 0.08); each time by less than the particles' mean "
                f"detachment_ambiguous. Take this sample's mean detachment as uncertain by up to that mean "
                f"(detachment_by_cell.csv detachment_ambiguous_mean; per particle, particles.csv "
                f"detachment_ambiguous); {figure or 'the contact-level figure'} shows the overlap.")
    return True


def edges_wide(width_vox: float | None) -> bool:
    """Whether a step along the grid is wider (σ, voxels: the phase map's ``edge_width_vox``) than
    :data:`MAX_CHECKED_EDGE_WIDTH`, the widest the contact reading is checked on. None or NaN: False."""
    return width_vox is not None and bool(np.isfinite(width_vox)) and width_vox > MAX_CHECKED_EDGE_WIDTH


def warn_wide_edges(width_vox: float | None, sample: str, figure: str = "") -> bool:
    """Log a warning naming ``sample`` where its edges are :func:`edges_wide` (``width_vox``: σ of a step along
    the grid, voxels, ``contact_level.csv`` ``edge_width``), as :func:`warn_weak_separation` does for a weak
    separation (``figure``: the contact-level figure to look at). True where it warned; the reading goes on."""
    if not edges_wide(width_vox):
        return False
    log.warning(f"sample '{sample}': the particles' edges are {width_vox:.2f} voxels wide (σ of a step along the "
                f"grid, contact_level.csv edge_width), wider than the {MAX_CHECKED_EDGE_WIDTH} up to which the "
                f"contact reading's corrections follow the blur and are checked on one-voxel coats. Coats and gaps "
                f"one voxel thick are narrower than the blur here and may be misread: on phantoms with one-voxel "
                f"coats under such a blur detachment read off by several hundredths although every check passed. "
                f"Take this sample's mean detachment as uncertain by up to the particles' mean detachment_ambiguous "
                f"(detachment_by_cell.csv detachment_ambiguous_mean; per particle, particles.csv "
                f"detachment_ambiguous); {figure or 'the contact-level figure'} shows the grey levels read.")
    return True
