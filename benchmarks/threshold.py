"""Thresholding throughput as a ratio against a raw h5py read of the same volume.

Usage: .venv/bin/python benchmarks/threshold.py [--depth 96] [--side 384]

Builds a volume by tiling the default phantom, times (1) reading it slab by slab
with h5py and (2) the full streamed thresholding (three passes: range,
histogram, classification with clean-ups and FWHM histograms, plus writing
phases.h5), and prints both throughputs and their ratio. Both are measured in
this run on this machine.

The phase-model fit imports scipy.signal, scipy.optimize and scikit-image's
filters on first use (about 1 s, once per process, whatever the volume's size);
they are imported before the timing so the ratio is a throughput, and the time
they take is printed on its own line.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

from detachment import io
from detachment.phantom import PhantomParams, generate_phantom
from detachment.threshold import ThresholdSettings, threshold_volume


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--depth", type=int, default=80)
    ap.add_argument("--side", type=int, default=384)
    args = ap.parse_args()
    tile = generate_phantom(PhantomParams(), seed=1).volume
    reps = [int(np.ceil(n / s)) for n, s in zip((args.depth, args.side, args.side), tile.shape)]
    vol = np.tile(tile, reps)[: args.depth, : args.side, : args.side]
    t0 = time.perf_counter()
    import scipy.optimize  # noqa: F401  (one-time imports of the phase-model fit, see the docstring)
    import scipy.signal  # noqa: F401
    import skimage.filters  # noqa: F401
    t_import = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "volume.h5"
        io.write_volume(path, vol, 0.5, "benchmark")
        settings = ThresholdSettings()
        t0 = time.perf_counter()
        with h5py.File(path) as f:
            for z0, z1 in io.slab_ranges(vol.shape[0], settings.slab):
                f["volume"][z0:z1].sum()
        t_read = time.perf_counter() - t0
        t0 = time.perf_counter()
        threshold_volume(path, Path(d) / "phases.h5", settings, progress=False)
        t_thr = time.perf_counter() - t0
    n = vol.size
    print(f"volume {vol.shape} = {n / 1e6:.1f} Mvoxel")
    print(f"raw h5py slab read : {n / t_read / 1e6:8.1f} Mvoxel/s ({t_read:.2f} s)")
    print(f"threshold_volume   : {n / t_thr / 1e6:8.1f} Mvoxel/s ({t_thr:.2f} s)")
    print(f"one-time imports of the phase-model fit, not in the ratio: {t_import:.2f} s")
    print(f"ratio thresholding / raw read throughput: {t_read / t_thr:.3f}")


if __name__ == "__main__":
    main()
