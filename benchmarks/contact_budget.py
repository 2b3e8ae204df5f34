"""Where the contact reading's error comes from, on samples the workflow has already run.

Usage: .venv/bin/python benchmarks/contact_budget.py results/tune_paper_like_1C [results/... ...]

Each argument is a sample's result folder holding ``volume.h5``, ``truth.h5`` (a phantom's planted
labels and phases) and ``phases.h5`` (the workflow's phase map). On the truth's own envelopes (no
segmentation error) every face between a particle and a planted void or CBD voxel is taken, and printed:

- the share of the planted void (``void_as``) and CBD (``cbd_as``) face neighbours the phase map codes
  void, CBD and NMC: how the map reads the one-voxel layer the contacts are read on;
- per particle (at least 20 such faces), the MAE and bias of the share of void faces as the map reads it
  (``map``) against the planted share;
- ``bound``: the same for the best per-particle estimate the face neighbour's grey level alone allows,
  each particle's void share fitted by maximum likelihood as the weight of two Gaussians whose means and
  spreads are taken from the planted void and CBD faces themselves (known only on a phantom). A one-voxel
  grey-level reading cannot do better on average than this; where it stays above a goal, only a reading
  that uses the neighbourhood (a better phase map) can reach it.

The numbers are of the contact layer only; detachment per particle also carries the envelope's errors
(``make validate``: ``detachment_mae`` against ``detachment_mae_true_envelopes``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import h5py
import numpy as np
from scipy.stats import norm

from detachment.phases import CBD, NMC_HIGH, NMC_LOW, VOID

MIN_FACES = 20


def face_layer(labels: np.ndarray, truth_phases: np.ndarray, arrays: list[np.ndarray]):
    """Owner label, planted phase of the face neighbour and each of ``arrays`` at the face neighbour, for
    every face between a particle voxel and a planted void or CBD voxel (z, y, x faces, both ways)."""
    owner, planted, values = [], [], [[] for _ in arrays]
    for axis in range(3):
        n = labels.shape[axis]
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[axis], hi[axis] = slice(0, n - 1), slice(1, n)
        for inside, outside in ((tuple(lo), tuple(hi)), (tuple(hi), tuple(lo))):
            m = (labels[inside] > 0) & (labels[outside] == 0) & np.isin(truth_phases[outside], (VOID, CBD))
            owner.append(labels[inside][m])
            planted.append(truth_phases[outside][m])
            for out, a in zip(values, arrays):
                out.append(a[outside][m])
    return np.concatenate(owner), np.concatenate(planted), [np.concatenate(v) for v in values]


def per_particle_weight(owner: np.ndarray, f_void: np.ndarray, f_cbd: np.ndarray, n: int,
                        iterations: int = 300) -> np.ndarray:
    """Each owner's weight of the void component (EM with the component densities fixed), (n,)."""
    count = np.maximum(np.bincount(owner, minlength=n), 1)
    pi = np.full(n, 0.5)
    for _ in range(iterations):
        w = pi[owner]
        resp = w * f_void / (w * f_void + (1 - w) * f_cbd + 1e-300)
        pi = np.bincount(owner, resp, minlength=n) / count
    return pi


def budget(folder: Path) -> dict:
    """The figures of the module docstring for one sample folder."""
    with h5py.File(folder / "truth.h5", "r") as f:
        labels, planted_phases = f["labels"][:], f["phases"][:]
    with h5py.File(folder / "phases.h5", "r") as f:
        codes = f["phases"][:]
    with h5py.File(folder / "volume.h5", "r") as f:
        grey = f["volume"][:].astype(np.float64)
    owner, planted, (code, level) = face_layer(labels, planted_phases, [codes, grey])
    n = int(owner.max()) + 1
    count = np.bincount(owner, minlength=n)
    keep = count >= MIN_FACES
    truth = np.bincount(owner, planted == VOID, minlength=n) / np.maximum(count, 1)
    out = {"faces": len(owner)}
    for name, phase in (("void_as", VOID), ("cbd_as", CBD)):
        c = code[planted == phase]
        out[name] = (f"void {np.mean(c == VOID):.3f} cbd {np.mean(c == CBD):.3f} "
                     f"nmc {np.mean((c == NMC_LOW) | (c == NMC_HIGH)):.3f}")
    read = np.bincount(owner, code == VOID, minlength=n) / np.maximum(count, 1)
    dens = [norm.pdf(level, level[planted == p].mean(), level[planted == p].std()) for p in (VOID, CBD)]
    bound = per_particle_weight(owner, dens[0], dens[1], n)
    for name, est in (("map", read), ("bound", bound)):
        err = (est - truth)[keep]
        out[name] = f"MAE {np.abs(err).mean():.3f} bias {err.mean():+.3f}"
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path)
    args = parser.parse_args()
    for folder in args.folders:
        row = budget(folder)
        print(f"{folder.name}: faces {row['faces']}; planted void read as {row['void_as']}; planted CBD read as "
              f"{row['cbd_as']}; per particle: map {row['map']}, grey-level bound {row['bound']}")


if __name__ == "__main__":
    main()
