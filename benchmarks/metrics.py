"""Overlap kernel speed: sparse pair count vs a dense np.histogram2d-style count on the same label pairs.

Usage: .venv/bin/python benchmarks/metrics.py

Compares :func:`detachment.metrics.overlap` with a dense (n_a+1) x (n_b+1)
``np.histogram2d`` of the same two 3D label volumes (the default phantom's truth
and a shifted copy), checks both give the same counts, and prints the ratio.
"""

from __future__ import annotations

import time

import numpy as np

from detachment.metrics import overlap
from detachment.phantom import PhantomParams, generate_phantom


def main():
    a = generate_phantom(PhantomParams(), seed=1).labels
    b = np.roll(a, 2, axis=2)
    t0 = time.perf_counter()
    ov = overlap(a, b)
    t_sparse = time.perf_counter() - t0
    t0 = time.perf_counter()
    na, nb = int(a.max()) + 1, int(b.max()) + 1
    dense, _, _ = np.histogram2d(a.ravel(), b.ravel(), bins=(np.arange(na + 1), np.arange(nb + 1)))
    t_dense = time.perf_counter() - t0
    check = dense[ov.a_ids[ov.pairs[:, 0]], ov.b_ids[ov.pairs[:, 1]]]
    assert np.array_equal(check, ov.counts), "sparse and dense counts differ"
    print(f"labels {a.shape}, {na - 1} x {nb - 1} instances")
    print(f"sparse overlap : {t_sparse * 1e3:8.1f} ms")
    print(f"histogram2d    : {t_dense * 1e3:8.1f} ms")
    print(f"ratio sparse / dense speed: {t_dense / t_sparse:.2f}")


if __name__ == "__main__":
    main()
