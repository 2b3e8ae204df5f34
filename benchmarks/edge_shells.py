"""Electrolyte read as CBD at the particles' blurred edges, and a point-spread rule that would reassign it.

Usage: .venv/bin/python benchmarks/edge_shells.py [SAMPLE ...]   (after `make run` and `make validate`)

For each phantom sample (default: the default and validation cells found under results/) it compares the
phase map with the phantom's truth and prints:

- the voxel accuracy, and the share of all voxels that are electrolyte read as CBD;
- of those, the share that touch a true NMC voxel, and the share that touch true CBD;
- the accuracy after the candidate rule: a CBD voxel with NMC on one side and electrolyte on the opposite
  side along the same axis becomes electrolyte where its grey level is below the midpoint of what an
  electrolyte and a CBD voxel there would read, ``s μ_NMC + (1 - s) μ_void`` and
  ``s μ_NMC + (1 - 2 s) μ_CBD + s μ_void``; ``s`` is the share of a voxel's grey level coming from its face
  neighbour through a Gaussian point-spread function of the sample's measured blur σ (``phase_qc.csv``);
- how many voxels the rule moves, and the share of them that are truly electrolyte.

The rule is the library's (:func:`detachment.blur.reassign_edge_shells`); the maps in results/ already
carry it (``threshold.edge_shells``), so run this on maps made with it off to see its effect.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import h5py
import pandas as pd
from scipy import ndimage

from detachment.blur import edge_shell_cut, face_spill, reassign_edge_shells
from detachment.phases import CBD, NMC_HIGH, NMC_LOW, VOID

CROSS = ndimage.generate_binary_structure(3, 1)


def measure(results: Path, sample: str) -> dict:
    with h5py.File(results / sample / "phases.h5") as f:
        p, attrs = f["phases"][...], dict(f["phases"].attrs)
    with h5py.File(results / sample / "truth.h5") as f:
        truth = f["phases"][...]
    with h5py.File(results / sample / "volume.h5") as f:
        grey = f["volume"][...]
    qc = pd.read_csv(results / sample / "phase_qc.csv")
    sigma = float(qc.loc[qc["check"] == "blur_sigma_vox", "value"].iloc[0])
    names = [n.strip() for n in str(attrs["order"]).split(",")]
    cut = edge_shell_cut(names, attrs["means"], sigma)
    after = p if cut is None else reassign_edge_shells(p, grey, cut)
    move = after != p
    wrong = (truth == VOID) & (p == CBD)
    true_nmc = (truth == NMC_LOW) | (truth == NMC_HIGH)
    return {"sample": sample, "blur_sigma": sigma, "spill": face_spill(sigma),
            "cut": float("nan") if cut is None else float(cut), "accuracy": (p == truth).mean(),
            "void_as_cbd": wrong.mean(),
            "touching_nmc": (wrong & ndimage.binary_dilation(true_nmc, CROSS)).sum() / max(wrong.sum(), 1),
            "touching_cbd": (wrong & ndimage.binary_dilation(truth == CBD, CROSS)).sum() / max(wrong.sum(), 1),
            "accuracy_after": (after == truth).mean(), "moved": int(move.sum()),
            "moved_truly_void": float((truth[move] == VOID).mean()) if move.any() else float("nan")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("samples", nargs="*")
    ap.add_argument("--results", default="results")
    args = ap.parse_args()
    results = Path(args.results)
    samples = args.samples or sorted(d.name for d in results.iterdir() if (d / "truth.h5").is_file()
                                     and (d / "phases.h5").is_file() and (d / "phase_qc.csv").is_file())
    if not samples:
        sys.exit(f"{results}: no sample with phases.h5, truth.h5 and phase_qc.csv (run `make run` first)")
    table = pd.DataFrame([measure(results, s) for s in samples])
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table.round(4).to_string(index=False))


if __name__ == "__main__":
    main()
