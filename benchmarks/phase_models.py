"""Phase models and contact readings compared on phantom cells against their truth.

Usage: .venv/bin/python benchmarks/phase_models.py results/tune_* [--methods informed gmm] [--exact-envelopes]

For each cell directory (a phantom's ``volume.h5``, ``truth.h5``, ``truth_particles.csv``) and each
thresholding method: phase accuracy against the planted map (strict, and as the model declares it: NMC low
and high merged where it leaves them unresolved), the phases the model left unresolved, the plausibility
checks that fail, whether the contact reading is ambiguous, and detachment read with the default config's
contact settings on the truth's own particles taken as the segmentation's masks (so segmentation plays no
part), refined on the phase map as the workflow refines the CNN's (``--exact-envelopes``: as they are):
MAE and bias against the truth, border particles left out. The reading is ``random_contacts.py``'s. Choose
settings on the tuning cells (``config/tuning.yaml``), never on the reported ones.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pandas as pd
from random_contacts import read_sample, science_settings

from detachment.phase_fit import PhaseModelError

#: Columns of :func:`random_contacts.read_sample` printed, after the strict phase accuracy.
COLUMNS = ("accuracy_declared", "unresolved", "failed", "reading", "ambiguous", "through_layer", "separation",
           "detachment_mae", "detachment_bias", "detachment_truth")


def measure(cell: Path, method: str, work: Path, refine: bool = True) -> dict:
    """One cell, one method: the row of the printed table."""
    phases_path = work / f"{cell.name}_{method}.h5"
    with h5py.File(cell / "truth.h5", "r") as f:
        truth = SimpleNamespace(phases=f["phases"][...], labels=f["labels"][...],
                                table=pd.read_csv(cell / "truth_particles.csv"))
    try:
        row = read_sample(truth, cell / "volume.h5", cell / "truth.h5", phases_path, work / "contact_level.csv",
                          work / "phase_qc.csv", science_settings(), {"method": method}, refine)
    except PhaseModelError as e:
        return {"cell": cell.name, "method": method, "error": str(e)}
    with h5py.File(phases_path, "r") as f:
        strict = float(np.mean(f["phases"][...] == truth.phases))
    return {"cell": cell.name, "method": method, "phase_accuracy": strict, **{k: row[k] for k in COLUMNS}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cells", nargs="+", type=Path, help="phantom cell directories under results/")
    ap.add_argument("--methods", nargs="+", default=["informed", "gmm"])
    ap.add_argument("--exact-envelopes", action="store_true",
                    help="read on the truth's labels as they are, without the workflow's envelope refinement")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [measure(c, m, Path(tmp), not a.exact_envelopes) for c in a.cells for m in a.methods]
    table = pd.DataFrame(rows)
    pd.set_option("display.width", 200)
    print(table.round(3).to_string(index=False))


if __name__ == "__main__":
    main()
