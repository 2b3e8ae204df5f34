"""Linking speed (voxels/s): Hungarian linker vs the greedy stitcher on the same per-slice stack.

Usage: .venv/bin/python benchmarks/linking.py [--depth 160] [--repeats 5]

The stack is the default phantom's true labels cut into per-slice instances and
tiled in z to ``--depth`` slices; both linkers stream over the same slices. The
Hungarian linker runs with the ``link`` settings of ``config/config.yaml`` (gap
closing, gap filling, fragment absorption and rejoining). Also prints the peak traced memory
of the Hungarian linker at depth D and 4D.

A whole stack links in a tenth of a second, so each linker first runs once on a few
slices (imports and first calls, printed on their own line) and each speed is the best
of ``--repeats`` runs, the two linkers taking turns.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
import tracemalloc
from pathlib import Path

import numpy as np
import yaml

from detachment.config_docs import with_defaults
from detachment.linking import LinkSettings, link_slices, stitch_greedy
from detachment.phantom import PhantomParams, generate_phantom


def default_settings() -> LinkSettings:
    """The ``link`` section of the default config (keys LinkSettings does not take left out)."""
    cfg = with_defaults(yaml.safe_load((Path(__file__).resolve().parents[1] / "config" / "config.yaml").read_text()))
    cfg = cfg["link"]
    names = {f.name for f in dataclasses.fields(LinkSettings)}
    return LinkSettings(**{k: v for k, v in cfg.items() if k in names and v is not None})


def run(fn, stack):
    t0 = time.perf_counter()
    for _ in fn(stack):
        pass
    return time.perf_counter() - t0


def peak(stack, settings):
    tracemalloc.start()
    for _ in link_slices(iter(stack), settings)[0]:
        pass
    p = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return p


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--depth", type=int, default=160)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    labels = generate_phantom(PhantomParams(), seed=1).labels
    stack = np.concatenate([labels] * int(np.ceil(args.depth / len(labels))))[: args.depth]
    n = stack.size
    settings = default_settings()
    hungarian, greedy = (lambda s: link_slices(iter(s), settings)[0]), (lambda s: stitch_greedy(iter(s)))
    first = run(hungarian, stack[:8]) + run(greedy, stack[:8])
    times = [(run(hungarian, stack), run(greedy, stack)) for _ in range(max(1, args.repeats))]
    t_h, t_g = min(t for t, _ in times), min(t for _, t in times)
    print(f"stack {stack.shape} = {n / 1e6:.1f} Mvoxel; first runs on 8 slices (imports, first calls): {first:.2f} s")
    print(f"hungarian : {n / t_h / 1e6:7.2f} Mvoxel/s")
    print(f"greedy    : {n / t_g / 1e6:7.2f} Mvoxel/s")
    print(f"ratio hungarian / greedy speed: {t_g / t_h:.3f}")
    quarter = stack[: max(1, args.depth // 4)]
    print(f"peak traced memory, depth {len(quarter)} vs {len(stack)}: ratio {peak(stack, settings) / peak(quarter, settings):.2f}")


if __name__ == "__main__":
    main()
