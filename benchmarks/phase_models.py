"""Phase models and contact readings compared on phantom cells against their truth.

Usage: .venv/bin/python benchmarks/phase_models.py results/tune_* [--methods informed gmm] [--max-spread 0.1]

For each cell directory (a phantom's ``volume.h5``, ``truth.h5``, ``truth_particles.csv``) and each
thresholding method: phase accuracy against the planted map (strict, and with NMC low / high merged),
the phases the model left unresolved, the plausibility checks that fail, and detachment measured on
the truth's own envelopes (so segmentation plays no part) with the contact level fitted on them and
the reading :func:`detachment.contact_level.choose_reading` picks (``--max-spread none``: never the
deconvolved one): MAE and bias against the truth, border particles left out. Choose settings on the
tuning cells (``config/tuning.yaml``), never on the reported ones.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from detachment import plausibility, validation
from detachment.particles import contact_level_from_files, particle_table_from_files
from detachment.phase_fit import PhaseModelError
from detachment.phases import NMC_LOW
from detachment.threshold import ThresholdSettings, threshold_volume


def measure(cell: Path, method: str, max_spread: float | None, work: Path) -> dict:
    """One cell, one method: the row of the printed table."""
    phases_path = work / f"{cell.name}_{method}.h5"
    try:
        res = threshold_volume(cell / "volume.h5", phases_path, ThresholdSettings(method=method), progress=False)
    except PhaseModelError as e:
        return {"cell": cell.name, "method": method, "error": str(e)}
    with h5py.File(cell / "truth.h5", "r") as f:
        truth_phases, labels = f["phases"][...], f["labels"][...]
    with h5py.File(phases_path, "r") as f:
        found = f["phases"][...]
    merge = np.array([0, 1, NMC_LOW, NMC_LOW, 4], np.uint8)
    checks = plausibility.check_phase_map(plausibility.PhaseCounts(res.counts_per_slice), res.fwhm)
    links = validation.links_from_labels(labels)
    level, _, _ = contact_level_from_files(cell / "truth.h5", phases_path, cell / "volume.h5", links, progress=False,
                                           refine=False, max_spread=max_spread)
    measured = particle_table_from_files(cell / "truth.h5", phases_path, cell / "volume.h5", links, progress=False,
                                         refine=False, contact_level=level.level,
                                         deconvolve=level.reading == "deconvolved")
    truth = pd.read_csv(cell / "truth_particles.csv")
    pairs = measured.merge(truth[["label", "detachment", "touches_border"]], on="label", suffixes=("", "_true"))
    pairs = pairs[~pairs.touches_border_true.astype(bool)]
    err = pairs.detachment - pairs.detachment_true
    return {"cell": cell.name, "method": method, "phase_accuracy": (found == truth_phases).mean(),
            "accuracy_nmc_merged": (merge[found] == merge[truth_phases]).mean(),
            "unresolved": ",".join(res.unresolved), "failed_checks": ",".join(checks.check[~checks.passed]),
            "reading": level.reading, "spread": level.spread, "detachment_mae": err.abs().mean(),
            "detachment_bias": err.mean(), "mean_found": pairs.detachment.mean(),
            "mean_true": pairs.detachment_true.mean()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cells", nargs="+", type=Path, help="phantom cell directories under results/")
    ap.add_argument("--methods", nargs="+", default=["informed", "gmm"])
    ap.add_argument("--max-spread", default="0.1", help="science.contact_max_spread; 'none' never switches")
    a = ap.parse_args()
    spread = None if a.max_spread == "none" else float(a.max_spread)
    with tempfile.TemporaryDirectory() as tmp:
        rows = [measure(c, m, spread, Path(tmp)) for c in a.cells for m in a.methods]
    table = pd.DataFrame(rows)
    pd.set_option("display.width", 200)
    print(table.round(3).to_string(index=False))


if __name__ == "__main__":
    main()
