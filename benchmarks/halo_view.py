"""Reading a volume less its edge halo, as a ratio against a raw h5py read of the same volume.

Usage: .venv/bin/python benchmarks/halo_view.py [--depth 64] [--side 1024] [--slab 32] [--repeats 2]
       [--amplitude 0.5] [--reach 2.0]

Builds a volume by tiling the default phantom (its content does not change the cost: the removal is a
filter) and reads it slab by slab, as the contact, particle and second-map steps read the grey levels of a
map that records a halo (``detachment.halo_removal.HaloFreeView``): (1) with h5py alone, (2) less the halo
with the exact inverse alone (a map written before the noise was given back), (3) less the halo with the
damped noise given back (``halo_noise_sd``: what the workflow does now), and (4) the noise's draw alone
(``white_noise`` over each slab's padded block in one piece; the view draws it per band along y where a
slab exceeds ``halo_removal.BLOCK_VOXELS``, overlapping by the context). Printed: each throughput, the time of
(2) and (3) over (1), of (3) over (2), about how much of (3) drawing the noise takes, and the peak memory
numpy allocates for one slab's read (tracemalloc, which numpy reports to) with and without the noise, against
the slab itself. All are measured in this run on this machine, each the best of ``--repeats``.
"""

from __future__ import annotations

import argparse
import tempfile
import tracemalloc
from pathlib import Path

import h5py
import numpy as np
from threshold import best_of, tiled

from detachment import halo_removal, io
from detachment.phantom import PhantomParams, generate_phantom


def read_all(dataset, depth: int, slab: int) -> None:
    """Every slab of ``dataset`` read once (its values summed, so nothing is left unread)."""
    for z0, z1 in io.slab_ranges(depth, slab):
        np.asarray(dataset[z0:z1]).sum()


def peak_mib(run) -> float:
    """Peak memory (MiB) numpy allocates while ``run`` runs, over what was allocated before."""
    tracemalloc.start()
    try:
        run()
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--depth", type=int, default=64)
    ap.add_argument("--side", type=int, default=1024)
    ap.add_argument("--slab", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=2, help="each timing is the best of this many runs")
    ap.add_argument("--amplitude", type=float, default=0.5)
    ap.add_argument("--reach", type=float, default=2.0, help="the halo's reach, voxels")
    args = ap.parse_args()
    vol = tiled(generate_phantom(PhantomParams(), seed=1).volume, args.depth, args.side)
    a, h, sd = args.amplitude, args.reach, 0.02
    m = halo_removal.margin_vox(a, h)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "volume.h5"
        io.write_volume(path, vol, 0.5, "benchmark")
        with h5py.File(path, "r") as f:
            ds = f["volume"]
            exact = halo_removal.HaloFreeView(ds, a, h)
            noisy = halo_removal.HaloFreeView(ds, a, h, noise_sd=sd)
            t_raw = best_of(args.repeats, lambda: read_all(ds, args.depth, args.slab))
            t_exact = best_of(args.repeats, lambda: read_all(exact, args.depth, args.slab))
            t_noisy = best_of(args.repeats, lambda: read_all(noisy, args.depth, args.slab))
            blocks = [[(max(0, z0 - m) - m, min(args.depth, z1 + m) + m), (-2 * m, args.side + 2 * m),
                       (-2 * m, args.side + 2 * m)] for z0, z1 in io.slab_ranges(args.depth, args.slab)]
            t_draw = best_of(args.repeats, lambda: [halo_removal.white_noise(b) for b in blocks])
            z1 = min(args.depth, args.slab)
            mem_exact = peak_mib(lambda: exact[0:z1])
            mem_noisy = peak_mib(lambda: noisy[0:z1])
    n = vol.size
    slab_mib = z1 * args.side**2 * 4 / 2**20
    print(f"volume {vol.shape} = {n / 1e6:.1f} Mvoxel, slabs of {args.slab}, halo {a} over {h} voxels "
          f"(margin {m} voxels)")
    for name, t in (("raw h5py slab read", t_raw), ("less the halo, exact inverse", t_exact),
                    ("less the halo, noise given back", t_noisy)):
        print(f"{name:34s}: {n / t / 1e6:8.2f} Mvoxel/s ({t:.2f} s), time over the raw read {t / t_raw:7.2f}")
    print(f"time with the noise given back over the exact inverse alone: {t_noisy / t_exact:.2f}; "
          f"drawing the noise in one piece per slab (white_noise, {t_draw:.2f} s): {t_draw / t_noisy:.2f} of that")
    print(f"peak memory of one slab's read ({slab_mib:.0f} MiB of float32): exact inverse {mem_exact:.0f} MiB "
          f"({mem_exact / slab_mib:.1f} slabs), noise given back {mem_noisy:.0f} MiB ({mem_noisy / slab_mib:.1f} "
          f"slabs); ratio {mem_noisy / mem_exact:.2f}")


if __name__ == "__main__":
    main()
