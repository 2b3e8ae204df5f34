"""Thresholding throughput as a ratio against a raw h5py read of the same volume.

Usage: .venv/bin/python benchmarks/threshold.py [--depth 80] [--side 384] [--workers 2]

Builds a volume by tiling the default phantom, times (1) reading it slab by slab
with h5py and (2) the full streamed thresholding (the histogram pass, the model
fit, the classification pass with clean-ups, FWHM histograms and edge profiles,
the edge-rule passes and the forward-model pass, plus writing the compressed
phases.h5, then the shading measure's read of both volumes: ``shading.threshold_flattened``,
and the edge-halo and z-blur measures' reads of both: what the threshold rule runs), and prints both throughputs and
their ratio, with ``--workers`` threads (the threshold rule's ``threads``, 2 by
default) and ``threshold_volume`` alone with them and with one, the time with
the forward-model pass over the time without it, and the rule's time over
``threshold_volume``'s. All are measured in
this run on this machine, each the best of ``--repeats`` runs.

Once per process, whatever the volume's size, the phase-model fit imports
scipy.signal, scipy.optimize and scikit-image's filters (about 1 s) and the
compiled kernels are loaded from numba's cache (compiled on the first run after
an installation, seconds). Both happen before the timing, on a small volume,
so that the ratio is a throughput; the time they take is printed on its own
line.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

from detachment import edge_halo, io, shading, z_blur
from detachment.phantom import PhantomParams, generate_phantom
from detachment.threshold import ThresholdSettings, threshold_volume


def best_of(repeats: int, run) -> float:
    """The shortest wall time of ``repeats`` calls of ``run``, s."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return min(times)


def tiled(tile: np.ndarray, depth: int, side: int) -> np.ndarray:
    """``tile`` (z, y, x) repeated to ``depth`` x ``side`` x ``side``."""
    reps = [int(np.ceil(n / s)) for n, s in zip((depth, side, side), tile.shape)]
    return np.tile(tile, reps)[:depth, :side, :side]


def _read(path: Path, depth: int, slab: int) -> None:
    with h5py.File(path) as f:
        for z0, z1 in io.slab_ranges(depth, slab):
            f["volume"][z0:z1].sum()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--depth", type=int, default=80)
    ap.add_argument("--side", type=int, default=384)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3, help="each timing is the best of this many runs")
    args = ap.parse_args()
    tile = generate_phantom(PhantomParams(), seed=1).volume
    vol = tiled(tile, args.depth, args.side)
    with tempfile.TemporaryDirectory() as d:
        settings = ThresholdSettings()
        t0 = time.perf_counter()
        small = Path(d) / "small.h5"
        io.write_volume(small, tile, 0.5, "benchmark")
        threshold_volume(small, Path(d) / "small_phases.h5", settings, progress=False, workers=args.workers)
        t_once = time.perf_counter() - t0
        path = Path(d) / "volume.h5"
        io.write_volume(path, vol, 0.5, "benchmark")
        t_read = best_of(args.repeats, lambda: _read(path, vol.shape[0], settings.slab))
        t_thr = {workers: best_of(args.repeats, lambda w=workers: threshold_volume(
            path, Path(d) / "phases.h5", settings, progress=False, workers=w)) for workers in dict.fromkeys((1, args.workers))}

        def rule():
            result = shading.threshold_flattened(path, Path(d) / "rule.h5", settings, progress=False,
                                                 workers=args.workers)[0]
            edge_halo.measure_map(Path(d) / "rule.h5", path, result.fwhm)
            z_blur.measure_files(Path(d) / "rule.h5", path)

        t_rule = best_of(args.repeats, rule)
        plain = ThresholdSettings(psf_refine=False)
        t_plain = best_of(args.repeats, lambda: threshold_volume(path, Path(d) / "plain.h5", plain, progress=False,
                                                                 workers=args.workers))
    n = vol.size
    print(f"volume {vol.shape} = {n / 1e6:.1f} Mvoxel")
    print(f"raw h5py slab read : {n / t_read / 1e6:8.1f} Mvoxel/s ({t_read:.3f} s)")
    for workers, t in t_thr.items():
        print(f"threshold_volume, {workers} thread(s): {n / t / 1e6:8.1f} Mvoxel/s ({t:.3f} s), "
              f"ratio {t_read / t:.3f}")
    print(f"one-time imports and kernel loading, on a {tile.shape} volume, not in the ratio: {t_once:.2f} s")
    print(f"threshold rule (threshold_flattened, the edge-halo and z-blur measures), {args.workers} thread(s): {n / t_rule / 1e6:8.1f} Mvoxel/s "
          f"({t_rule:.3f} s); time over threshold_volume's: {t_rule / t_thr[args.workers]:.3f}")
    print(f"ratio thresholding / raw read throughput: {t_read / t_rule:.3f} "
          f"({args.workers} threads, the threshold rule's default, shading, edge-halo and z-blur measures included)")
    print(f"without the forward-model pass (psf_refine: false): {n / t_plain / 1e6:8.1f} Mvoxel/s ({t_plain:.3f} s); "
          f"time with / without it: {t_thr[args.workers] / t_plain:.2f}")


if __name__ == "__main__":
    main()
