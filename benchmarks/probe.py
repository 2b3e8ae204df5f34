"""Cost of the particle-size probe (``infer.rescale: particle_size``) against the inference it precedes.

Usage: .venv/bin/python benchmarks/probe.py [--model results/model/maskrcnn.pt] [--side 1024] [--depth 64]
       [--slab 16] [--threads 2]

Needs a finished default run (``make run``: the model and ``results/unseen_1C/volume.h5``). A volume of
``--side`` px slices and ``--depth`` slices is tiled from ``unseen_1C`` (mirrored copies, so particles stay
whole at the seams) and written as the workflow writes volumes. Every slab job of a volume runs the probe
once, so its cost is set against one slab job of ``--slab`` slices at the config's inference settings,
measured in the same run:

- ``read``: choosing the probe slices (one strided pass over the volume) against reading the slab's slices;
- ``probe``: the whole probe (:func:`detachment.inference.probe_sections`: choosing, reading and segmenting
  the central window of each probe slice, no flips) against predicting one slice with the config's TTA
  and tiling, and against the slab job (that slice time × ``--slab``).

Prints the timings and the ratios probe / slab job and read / slab read.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import torch
import yaml

from detachment import inference, io
from detachment.cnn.predict import load_model, predict
from detachment.cnn.reuse import meta_path_for
from detachment.cnn.scale import probe_slices, scale_factor
from detachment.config_docs import with_defaults

ROOT = Path(__file__).resolve().parents[1]


def tiled_volume(source: Path, side: int, depth: int, out: Path) -> None:
    """Write ``out``: ``source``'s volume mirrored and tiled to (depth, side, side), its voxel size kept."""
    vol = io.read_dataset(source, io.VOLUME_DATASET)
    _, voxel = io.read_volume_info(source)
    reps_z = -(-depth // vol.shape[0])
    block = np.concatenate([vol, vol[::-1]] * ((reps_z + 1) // 2), axis=0)[:depth]
    row = np.concatenate([block, block[:, :, ::-1]] * (side // (2 * vol.shape[2]) + 1), axis=2)[:, :, :side]
    tiled = np.concatenate([row, row[:, ::-1]] * (side // (2 * vol.shape[1]) + 1), axis=1)[:, :side]
    io.write_volume(out, np.ascontiguousarray(tiled, np.float32), voxel, "benchmarks/probe.py")


def timed(fn, repeat: int = 1) -> float:
    """Least wall time of ``repeat`` calls of ``fn``, s."""
    best = np.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(ROOT / "results" / "model" / "maskrcnn.pt"))
    ap.add_argument("--side", type=int, default=1024)
    ap.add_argument("--depth", type=int, default=64)
    ap.add_argument("--slab", type=int, default=16, help="slices of one slab job")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = with_defaults(yaml.safe_load((ROOT / "config" / "config.yaml").read_text()))["infer"]
    dev = torch.device("cpu")
    model, meta = load_model(args.model, meta_path_for(args.model), dev)
    with tempfile.TemporaryDirectory() as tmp:
        vol_path = Path(tmp) / "volume.h5"
        tiled_volume(ROOT / "results" / "unseen_1C" / "volume.h5", args.side, args.depth, vol_path)
        shape, voxel = io.read_volume_info(vol_path)
        factor = scale_factor(voxel, meta, "auto")
        with h5py.File(vol_path, "r") as f:
            d = f[io.VOLUME_DATASET]
            t_choose = timed(lambda: probe_slices(d))
            t_read = timed(lambda: d[: args.slab][...])
            one = d[shape[0] // 2: shape[0] // 2 + 1][...].astype(np.float32)
        tiling = inference._tiling(cfg["tile_px"], meta, shape, factor, str(vol_path))
        t_slice = timed(lambda: predict(model, one, dev, batch_size=1, score_threshold=cfg["score_threshold"],
                                        mask_threshold=cfg["mask_threshold"], tta=cfg["tta"], scale=factor,
                                        **tiling))
        t_probe = timed(lambda: inference.probe_sections(model, dev, meta, vol_path, factor))
    slab_job = t_slice * args.slab
    print(f"volume {shape[0]} x {shape[1]} x {shape[2]} px, slab job {args.slab} slices, TTA {cfg['tta']}, "
          f"{args.threads} threads")
    print(f"choosing the probe slices {t_choose:.2f} s; reading the slab {t_read:.2f} s: ratio {t_choose / t_read:.2f}")
    print(f"probe {t_probe:.2f} s; one slice {t_slice:.2f} s; slab job ~{slab_job:.1f} s: "
          f"probe / slab job {t_probe / slab_job:.3f}")


if __name__ == "__main__":
    main()
