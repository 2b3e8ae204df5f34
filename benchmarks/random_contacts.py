"""Detachment on phantoms drawn at random across the family's ranges, read on the truth's own particles.

Usage: .venv/bin/python benchmarks/random_contacts.py [--first 9000] [--count 30] [--out table.csv]
       [--threshold KEY=VALUE ...] [--exact-envelopes] [--prior-sensitivity BETA] [--max-drift GREY]
       [--self-consistency] [--thin-features]

The phase map alone (``random_phantoms.py``) does not say whether the contacts transfer: they are read on
the voxels beside the particles, where blur, partial volume and one-voxel coats and gaps decide. Each seed
draws a phantom as ``random_phantoms.draw`` does (every grey level, width and geometry property at once,
in half the draws a point spread 0.7-1.4 times as wide along z as within the slices, and in half an edge
halo),
thresholds it, fits the contact level and reads every particle's detachment with the settings of
``config/config.yaml``, on the truth's particle labels taken as the segmentation's masks (so the CNN's
segmentation is left out: what is measured is the phase map and the contact reading), and scores them
against the planted detachment. The masks' envelopes are refined on the phase map as the workflow refines
the CNN's (:func:`detachment.particles.refine_envelope`): where partial volume makes the map's particle a
voxel wider than the planted one, the unrefined envelope would count that voxel, solid of no particle, as
a contact with another particle, a reading the workflow never makes. ``--exact-envelopes`` reads on the
labels as they are.

Per draw it prints the phase-map checks that fail, whether the contact reading is ambiguous (the
``contact_level`` rule would stop), how the contacts were read, the detachment MAE and bias over the
particles not touching the volume's border, and the phase accuracy; ``separation`` is the gap / CBD
components' Ashman's D (the reading stops below 2) and ``ambiguous_but_separation`` whether the other
checks of the reading alone would stop it; ``halo_fitted`` the halo amplitude taken out (0: none) and
``edge_undershoot`` the map's edge-halo check, read on what is left of the grey levels. ``silent`` marks a draw whose checks
pass and whose reading is not ambiguous but whose MAE is above 0.03 or |bias| above 0.02 (the goals of the
validation presets): numbers the workflow would report as if they were right. ``detachment_ambiguous`` is
the mean of ``particles.csv``'s column of that name over the scored particles, the share of each surface
the reading reports as undecided: ``covered`` marks a silent draw whose |bias| it reaches.
``separation_weak`` marks a draw read with the warning of
:func:`detachment.plausibility.warn_weak_separation` (gap and CBD only weakly separated), ``edges_wide`` one
read with that of :func:`detachment.plausibility.warn_wide_edges` (edges wider than the reading is checked on).
``--prior-sensitivity BETA`` thresholds and reads each draw a second time with the forward model's
smoothness weight ``threshold.psf_refine_beta`` set to BETA: ``prior_shift`` is how far the mean
detachment of the scored particles moves (``bias_weak_prior`` - ``detachment_bias``), a measure of how much
the prior rather than the data decides the contact layer (the prior merges one-voxel coats).
``--self-consistency`` reads each draw's map again from a volume rendered from it under the forward model's
assumptions (:func:`detachment.self_consistency.check_reading`): ``self_shift`` is the particles' mean move,
``self_consistent`` whether it is within ``detachment.self_consistency.MAX_SHIFT``, ``self_shift_mae`` the
particles' mean absolute move, and
``silent_unless_self`` marks a silent draw that this check would not flag either. ``--thin-features`` draws
gaps of 1-2 voxels and coats of 1-1.5 in place of the family's 1.5-4 and 1-2.5 (one-voxel features under every
drawn blur; the other fields as the seed draws them). The seeds are not those of any sheet or of
``random_phantoms.py``'s defaults.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from random_phantoms import draw, halo_columns, run_draws

from detachment import halo_removal, io, plausibility, validation
from detachment.config_docs import with_defaults
from detachment.contact_level import edge_width_from_map, reads_through_layer
from detachment.phantom import PhantomParams, generate_phantom, write_phantom
from detachment.phase_fit import PhaseModelError
from detachment.robustness import phase_accuracy
from detachment.self_consistency import MAX_SHIFT, check_reading, map_sigma, read_contacts
from detachment.threshold import ThresholdSettings

#: Goals of the validation presets: a draw over either, not stopped, is ``silent``.
MAX_MAE, MAX_BIAS = 0.03, 0.02
CONFIG = Path(__file__).resolve().parents[1] / "config" / "config.yaml"


def science_settings(path: Path = CONFIG) -> dict:
    """The ``science`` section of the workflow's default config, completed with the schema's defaults."""
    return with_defaults(yaml.safe_load(path.read_text()))["science"]


def draw_with_contacts(rng: np.random.Generator, max_drift: float = 0.03, thin: bool = False) -> dict:
    """PhantomParams fields of one draw: ``random_phantoms.draw``'s, then the planted mean detachment
    (0.1-0.6) and the share of touching pairs split by a one-voxel gap (0-0.6), drawn after the others so
    that a seed's grey levels and geometry are those ``random_phantoms.py`` draws for it. ``thin``: gaps then
    drawn again in 1-2 voxels and coats in 1-1.5 (one-voxel features under the drawn blur), after those, so
    every other field is the seed's as without it."""
    p = draw(rng, max_drift)
    p["detachment_mean"] = float(rng.uniform(0.1, 0.6))
    p["contact_gap_probability"] = float(rng.uniform(0.0, 0.6))
    if thin:
        p["gap_width_vox"], p["coating_width_vox"] = float(rng.uniform(1.0, 2.0)), float(rng.uniform(1.0, 1.5))
    return p


def measure(seed: int, work: Path, sc: dict, threshold: dict | None = None, refine: bool = True,
            weak_beta: float | None = None, max_drift: float = 0.03, self_check: bool = False,
            thin: bool = False) -> dict:
    """One draw: its parameters, the checks and the detachment read on the truth's particles (``threshold``:
    :class:`detachment.threshold.ThresholdSettings` fields other than the defaults; ``refine``: their
    envelopes refined on the phase map as the workflow's are, else read as they are; ``weak_beta``: read
    again with ``psf_refine_beta`` set to it, adding ``bias_weak_prior`` and ``prior_shift``; ``thin``: as
    :func:`draw_with_contacts`)."""
    p = draw_with_contacts(np.random.default_rng(seed), max_drift, thin)
    row = {"seed": seed, "drift": round(p["drift_amplitude"], 3), "supersample": p["supersample"],
           "blur_sigma_vox": round(p["blur_sigma_vox"], 3), "blur_z_factor": round(p["blur_z_factor"], 3),
           "void_to_cbd": round(p["intensity"]["cbd"] - p["intensity"]["void"], 3),
           "noise_fwhm": round(p["fwhm"]["void"], 3), "cbd_fwhm": round(p["fwhm"]["cbd"], 3),
           "gap_vox": round(p["gap_width_vox"], 2), "coat_vox": round(p["coating_width_vox"], 2),
           **halo_columns(p)}
    t0 = time.perf_counter()
    ph = generate_phantom(PhantomParams(**p), seed=seed)
    volume, truth, table = work / "volume.h5", work / "truth.h5", work / "truth.csv"
    phases_path, level_path = work / "phases.h5", work / "contact_level.csv"
    qc = work / "phase_qc.csv"
    write_phantom(ph, volume, truth, table)
    try:
        row.update(read_sample(ph, volume, truth, phases_path, level_path, qc, sc, threshold, refine, self_check))
        if weak_beta is not None:
            weak = read_sample(ph, volume, truth, phases_path, level_path, qc, sc,
                               {**(threshold or {}), "psf_refine_beta": weak_beta}, refine)
            row["bias_weak_prior"] = weak["detachment_bias"]
            row["prior_shift"] = round(weak["detachment_bias"] - row["detachment_bias"], 4)
        return {**row, "seconds": round(time.perf_counter() - t0, 1)}
    except PhaseModelError as e:
        return {**row, "failed": f"model: {e}"[:120]}
    finally:
        for f in (volume, truth, table, phases_path, level_path, qc):
            f.unlink(missing_ok=True)


def read_sample(ph, volume, truth, phases_path, level_path, qc, sc: dict, threshold: dict | None,
                refine: bool = True, self_check: bool = False) -> dict:
    """Threshold ``volume``, fit its contact level and read its particles on the truth's labels as the workflow
    reads the CNN's (:func:`detachment.self_consistency.read_contacts`), with the settings ``sc``
    (:func:`science_settings`; ``refine``: as :func:`measure`): the columns of :func:`measure` after the draw's
    parameters. ``ph``: the truth, with ``labels`` and ``phases`` (z, y, x) and ``table``
    (:func:`detachment.phantom.truth_table`'s columns); ``truth``: its labels' HDF5 file; the other paths are
    written (``phases_path`` is left for the caller). ``self_check``: also read the map rendered under the
    forward model's assumptions (:func:`detachment.self_consistency.check_reading`), adding ``self_shift``
    and ``self_consistent``."""
    links = validation.links_from_labels(ph.labels)
    res, fit, measured = read_contacts(volume, phases_path, level_path, qc, truth, links,
                                       ThresholdSettings(**(threshold or {})), sc, workers=2, refine=refine)
    checks = pd.read_csv(qc)
    codes = io.read_dataset(phases_path, "phases")
    through = reads_through_layer(fit, sc["contact_partial_volume"])
    checks_of_reading = (fit.spread, sc["contact_max_ambiguity"], res.blur_sigma_vox, fit.gap_width_ratio, through,
                         fit.gap_share_through_layer)
    ambiguous = plausibility.contacts_ambiguous(*checks_of_reading, fit.separation)
    errors = validation.compare_particles(ph.table, measured, None, "true")
    errors = errors[~errors.border_truth.astype(bool)]
    mae, bias = float(errors.detachment_error.abs().mean()), float(errors.detachment_error.mean())
    undecided = float(measured.set_index("label").detachment_ambiguous.reindex(errors.label).mean())
    failed = " ".join(checks.loc[~checks.passed.astype(bool), "check"])
    silent = not failed and not ambiguous and (mae > MAX_MAE or abs(bias) > MAX_BIAS)
    fitted = halo_removal.recorded(phases_path)
    width = float(edge_width_from_map(phases_path, qc))
    row = {"accuracy_declared": round(phase_accuracy(codes, ph.phases, merge_nmc=bool(res.unresolved)), 4),
           "halo_fitted": round(fitted[0], 3) if fitted else 0.0,
           "edge_undershoot": round(float(checks.set_index("check").value.get("edge_undershoot", np.nan)), 4),
           "unresolved": ",".join(res.unresolved),
           "blur_measured": round(float(res.blur_sigma_vox), 3), "edge_width": round(width, 3),
           "reading": fit.reading, "level_fitted": fit.fitted, "separation": round(fit.separation, 2),
           "gap_mean": round(fit.gap_mean, 4), "gap_sigma": round(fit.gap_sigma, 4),
           "cbd_mean": round(fit.cbd_mean, 4), "cbd_sigma": round(fit.cbd_sigma, 4),
           "electrolyte_sigma": round(fit.electrolyte_sigma, 4),
           "through_layer": through, "gap_width_ratio": round(fit.gap_width_ratio, 2),
           "through_share": round(float(fit.gap_share_through_layer), 3), "spread": round(float(fit.spread), 3),
           "failed": failed, "ambiguous": bool(ambiguous),
           "separation_weak": plausibility.weakly_separated(fit.separation),
           "edges_wide": plausibility.edges_wide(width),
           "ambiguous_but_separation": plausibility.contacts_ambiguous(*checks_of_reading),
           "n_particles": len(errors),
           "detachment_truth": round(float(errors.detachment_truth.mean()), 3),
           "detachment_mae": round(mae, 4), "detachment_bias": round(bias, 4),
           "bias_voxel_truth": round(float(errors.detachment_error_voxel_truth.mean()), 4),
           "detachment_ambiguous": round(undecided, 4), "silent": silent,
           "covered": silent and abs(bias) <= undecided}
    if self_check:
        # the truth's border flags, as the errors above exclude them
        first = measured.assign(touches_border=measured.label.map(ph.table.set_index("label").touches_border))
        check = check_reading(phases_path, res.fwhm, map_sigma(phases_path, qc), io.read_volume_info(volume)[1], truth,
                              links, first, level_path, ThresholdSettings(**(threshold or {})), sc, workers=2,
                              refine=refine, volume=volume)
        row["self_shift"] = round(check.shift, 4)
        row["self_shift_mae"] = round(check.shift_mae, 4)  # the particles' mean |move|: the shift's noise scale
        row["self_consistent"] = check.consistent
        row["silent_unless_self"] = silent and check.consistent
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--first", type=int, default=9000, help="first seed")
    ap.add_argument("--count", type=int, default=30, help="number of draws")
    ap.add_argument("--out", type=Path, help="also write the table as CSV")
    ap.add_argument("--threshold", action="append", default=[], metavar="KEY=VALUE",
                    help="a threshold setting other than the default (config key, YAML value), e.g. "
                         "psf_refine_beta=1.0; may be repeated")
    ap.add_argument("--exact-envelopes", action="store_true",
                    help="read on the truth's labels as they are, without the workflow's envelope refinement")
    ap.add_argument("--max-drift", type=float, default=0.03, metavar="GREY",
                    help="draw the grey levels' drift across the volume up to this (peak to peak; cupping, "
                         "beam drift), the other fields as drawn without it")
    ap.add_argument("--self-consistency", action="store_true",
                    help="also read each draw's map rendered under the forward model's assumptions "
                         "(detachment.self_consistency): self_shift, self_consistent")
    ap.add_argument("--thin-features", action="store_true",
                    help="draw gaps of 1-2 voxels and coats of 1-1.5 instead (every other field as drawn without it)")
    ap.add_argument("--prior-sensitivity", type=float, metavar="BETA",
                    help="also threshold and read each draw with threshold.psf_refine_beta set to BETA")
    args = ap.parse_args()
    sc = science_settings()
    if any("=" not in kv for kv in args.threshold):
        ap.error(f"--threshold takes KEY=VALUE, got {args.threshold}")
    threshold = {k: yaml.safe_load(v) for k, v in (kv.split("=", 1) for kv in args.threshold)}
    ThresholdSettings(**threshold)  # an unknown key or a bad value stops here, before any draw
    if args.prior_sensitivity is not None:
        ThresholdSettings(**{**threshold, "psf_refine_beta": args.prior_sensitivity})
    table = run_draws(lambda seed, work: measure(seed, work, sc, threshold, not args.exact_envelopes,
                                                 args.prior_sensitivity, args.max_drift, args.self_consistency,
                                                 args.thin_features),
                      range(args.first, args.first + args.count), args.out)
    summarise(table, args.prior_sensitivity, args.self_consistency)


def summarise(table: pd.DataFrame, prior_sensitivity: float | None, self_consistency: bool) -> None:
    """Print the draws' counts: read, passed, silent; what each warning (weak separation, wide edges) flags among
    the silent draws and the others; with ``self_consistency``, what that check flags, alone and with the
    warnings."""
    ran = table.dropna(subset=["detachment_mae"])
    passed = ran[(ran.failed == "") & ~ran.ambiguous.astype(bool)]
    print(f"\n{len(ran)} of {len(table)} draws read; checks pass and contacts not ambiguous on {len(passed)}; "
          f"silent (MAE > {MAX_MAE} or |bias| > {MAX_BIAS} where nothing stops): {int(ran.silent.sum())}, "
          f"their |bias| within the mean detachment_ambiguous on {int(ran.covered.sum())}; "
          f"detachment MAE where nothing stops: median {passed.detachment_mae.median():.4f}, most "
          f"{passed.detachment_mae.max():.4f}; bias from {passed.detachment_bias.min():+.4f} to "
          f"{passed.detachment_bias.max():+.4f}")
    silent = passed.silent.astype(bool)
    if prior_sensitivity is not None:
        shift = passed.prior_shift.abs()
        print(f"|prior_shift| at psf_refine_beta {prior_sensitivity:g} where nothing stops: silent draws "
              f"{np.round(shift[silent].sort_values().to_numpy(), 3)}, the others' largest "
              f"{shift[~silent].max():.3f} (median {shift[~silent].median():.3f})")
    weak = passed.separation_weak.astype(bool)
    print(f"weak separation warning (D {plausibility.MIN_CONTACT_SEPARATION}-{plausibility.WEAK_CONTACT_SEPARATION}): "
          f"flags {int((weak & silent).sum())} of the {int(silent.sum())} silent draws and "
          f"{int((weak & ~silent).sum())} of the other {int((~silent).sum())}")
    wide = passed.get("edges_wide", pd.Series(False, index=passed.index)).astype(bool)
    print(f"wide-edge warning (edge width above {plausibility.MAX_CHECKED_EDGE_WIDTH} vox): flags "
          f"{int((wide & silent).sum())} of the {int(silent.sum())} silent draws and {int((wide & ~silent).sum())} of "
          f"the other {int((~silent).sum())}")
    warned = weak | wide
    if self_consistency:
        flagged = ~passed.self_consistent.astype(bool)
        print(f"self-consistency (|self_shift| > {MAX_SHIFT} where nothing else stops; science.self_consistency "
              f"stops there by default): stops {int((flagged & silent).sum())} "
              f"of the {int(silent.sum())} silent draws and {int((flagged & ~silent).sum())} of the other "
              f"{int((~silent).sum())}; |self_shift| of the silent {np.round(passed.self_shift[silent].abs().sort_values().to_numpy(), 3)}, "
              f"the others' largest {passed.self_shift[~silent].abs().max():.4f}")
        either = flagged | warned
        print(f"self-consistency or a warning: flags {int((either & silent).sum())} of the {int(silent.sum())} silent "
              f"draws and {int((either & ~silent).sum())} of the other {int((~silent).sum())}")


if __name__ == "__main__":
    main()
