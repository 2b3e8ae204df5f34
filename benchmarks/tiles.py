"""Tiled against whole-slice inference of one large slice, and the flip fusion's mask comparisons, with the
tests' analytic stand-in for the model (no trained model needed; CPU, one thread).

Usage: PYTHONPATH=src .venv/bin/python benchmarks/tiles.py [--side 1024] [--spacing 40] [--cap 150] [--tile 256]
       [--no-whole] [--fuse 300]
1. ``predict`` on a side x side slice of ~(side / spacing)² disks of 18 px (tests/test_tiles.py ``disk_scene``,
   ``BlobModel`` with ``--cap`` detections per image): whole and in tiles. Printed: seconds, detections, F1 against
   the truth, detection-cap warnings, and the traced (numpy) peak memory beyond the stand-in's own output.
2. ``fuse_flips`` on four passes of ``--fuse`` detections of 16 px on a 512 px tile: seconds, and the mask
   comparisons made against the n (n - 1) / 2 of comparing every pair.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_predict(image, truth, tile: int | None, cap: int) -> str:
    """One ``predict`` of the slice, whole (``tile`` None) or tiled; a line of what it found and cost."""
    import numpy as np
    import torch

    from detachment import metrics
    from detachment.cnn.predict import predict
    from tests.test_tiles import BlobModel

    model, warnings = BlobModel(cap=cap), []
    handler = logging.Handler(level=logging.WARNING)
    handler.emit = lambda record: warnings.append(record.getMessage())
    logging.getLogger("detachment").addHandler(handler)
    tracemalloc.start()
    t0 = time.process_time()
    labels, rows = predict(model, image[None], torch.device("cpu"), 2, 0.5, 0.5, tile_px=tile, overlap_px=64)
    dt = time.process_time() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    logging.getLogger("detachment").removeHandler(handler)
    f1 = metrics.instance_scores(truth.astype(np.int64), labels[0].astype(np.int64), 0.5).f1
    how = f"tiled (tile_px {tile}: {len(model.seen)} tiles of {model.seen[0]} px)" if tile else "whole"
    return (f"{how}: {dt:.1f} CPU s, {len(rows)} of {truth.max()} disks, F1 {f1:.3f}, {len(warnings)} cap "
            f"warning(s); traced peak {peak / 2**20:.0f} MiB, of which the stand-in's largest output "
            f"{model.output_bytes / 2**20:.0f} MiB (a float32 slice: {image.nbytes / 2**20:.0f} MiB)")


def run_fuse(n: int, side: int = 512) -> str:
    """``fuse_flips`` on four passes of ``n`` square detections; a line of its time and mask comparisons."""
    import numpy as np
    import torch

    from detachment.cnn.predict import _intersecting_later, _mask_boxes, fuse_flips

    rng = np.random.default_rng(0)
    passes = []
    for _ in range(4):
        masks = torch.zeros((n, 1, side, side))
        for k, (cy, cx) in enumerate(rng.integers(8, side - 8, (n, 2))):
            masks[k, 0, cy - 8:cy + 8, cx - 8:cx + 8] = 0.9
        passes.append({"scores": torch.tensor(rng.uniform(0.3, 1, n), dtype=torch.float32), "masks": masks})
    t0 = time.process_time()
    fused = fuse_flips(passes, 0.5)
    dt = time.process_time() - t0
    binary = [m[0] >= 0.5 for p in passes for m in p["masks"]]
    pairs = sum(len(j) for j in _intersecting_later(np.asarray(_mask_boxes(binary)).reshape(-1, 4)))
    m = 4 * n
    return (f"fuse_flips, 4 passes x {n} detections on {side} px: {dt:.2f} CPU s, {len(fused['scores'])} fused; "
            f"{pairs} pairs with intersecting boxes compared of {m * (m - 1) // 2} pairs")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--side", type=int, default=1024, help="slice side, px")
    ap.add_argument("--spacing", type=float, default=40.0, help="disk grid spacing, px")
    ap.add_argument("--cap", type=int, default=150, help="the stand-in's detections per image")
    ap.add_argument("--tile", type=int, default=256, help="infer.tile_px (default: what auto stands for)")
    ap.add_argument("--no-whole", action="store_true", help="skip the whole-slice run (cap x slice-sized masks)")
    ap.add_argument("--fuse", type=int, default=300, help="detections per pass of the fusion timing (0: skip)")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    import torch

    from tests.test_tiles import disk_scene

    torch.set_num_threads(1)
    image, truth = disk_scene(args.side, 9.0, args.spacing, seed=4)
    print(f"slice {args.side} x {args.side} px, {truth.max()} disks of 18 px, stand-in cap {args.cap}")
    for tile in ([args.tile] if args.no_whole else [None, args.tile]):
        print("  " + run_predict(image, truth, tile, args.cap), flush=True)
    if args.fuse:
        print("  " + run_fuse(args.fuse))
    return 0


if __name__ == "__main__":
    sys.exit(main())
