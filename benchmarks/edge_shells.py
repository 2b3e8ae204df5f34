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

The rule has no free parameter; it is not part of the pipeline (see docs/results.md).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
from scipy import ndimage
from scipy.stats import norm

from detachment.phases import CBD, NMC_HIGH, NMC_LOW, VOID

CROSS = ndimage.generate_binary_structure(3, 1)


def face_spill(sigma: float) -> float:
    """Share of a unit voxel's mean grey level that comes from its face neighbour (1D Gaussian PSF, σ in voxels)."""
    x = np.linspace(-0.5, 0.5, 201)  # positions across the voxel; the neighbour spans 0.5 .. 1.5 away
    return float(np.mean(norm.cdf((x - 0.5) / sigma) - norm.cdf((x - 1.5) / sigma)))


def _shifted(mask: np.ndarray, axis: int, step: int) -> np.ndarray:
    """``out[i] = mask[i - step]`` along ``axis`` (False where that lies outside)."""
    out = np.zeros_like(mask)
    src, dst = [slice(None)] * 3, [slice(None)] * 3
    src[axis], dst[axis] = (slice(0, -1), slice(1, None)) if step > 0 else (slice(1, None), slice(0, -1))
    out[tuple(dst)] = mask[tuple(src)]
    return out


def sandwiched(between: np.ndarray, other: np.ndarray) -> np.ndarray:
    """Voxels with ``between`` on one side and ``other`` on the opposite side along some axis."""
    out = np.zeros(between.shape, bool)
    for axis in range(3):
        for step in (1, -1):
            out |= _shifted(between, axis, step) & _shifted(other, axis, -step)
    return out


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
    means = dict(zip(names, np.asarray(attrs["means"], float)))
    mu_nmc = float(np.mean([means[n] for n in ("nmc_low", "nmc_high") if n in means]))
    s = face_spill(sigma)
    cut = s * mu_nmc + s * means["void"] + (1 - 2 * s) * (means["void"] + means["cbd"]) / 2
    nmc = (p == NMC_LOW) | (p == NMC_HIGH)
    move = (p == CBD) & sandwiched(nmc, p == VOID) & (grey < cut)
    after = p.copy()
    after[move] = VOID
    wrong = (truth == VOID) & (p == CBD)
    true_nmc = (truth == NMC_LOW) | (truth == NMC_HIGH)
    return {"sample": sample, "blur_sigma": sigma, "spill": s, "cut": cut, "accuracy": (p == truth).mean(),
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
