"""Mask R-CNN pipeline overheads, measured against bare torchvision calls on the same tensors.

Usage: .venv/bin/python benchmarks/maskrcnn.py [--slices 16] [--steps 6]

1. Inference: slices/s of :func:`detachment.maskrcnn.predict` (batching, painting
   non-overlapping labels) vs a bare ``model(batch)`` forward under inference_mode.
2. Training: seconds per SGD step of :func:`detachment.maskrcnn.train` (targets
   from label tiles, lr schedule, clipping, logging) vs a bare loop of
   ``loss = sum(model(images, targets).values()); backward; step`` with
   precomputed targets.
Both use the default (CPU) model settings and an untrained model.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch

from detachment.maskrcnn import (
    ModelSettings,
    TrainSettings,
    build_model,
    make_target,
    predict,
    to_tensor,
    train,
)
from detachment.phantom import PhantomParams, generate_phantom


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--slices", type=int, default=16)
    ap.add_argument("--steps", type=int, default=6)
    args = ap.parse_args()
    torch.set_num_threads(2)
    ph = generate_phantom(PhantomParams(), seed=1)
    zs = np.linspace(8, 24, args.slices).astype(int)
    images, masks = ph.volume[zs], ph.labels[zs].astype(np.int64)
    m = ModelSettings(image_mean=float(images.mean()), image_std=float(images.std()))
    torch.manual_seed(0)
    model = build_model(m).eval()
    dev = torch.device("cpu")

    t0 = time.perf_counter()
    predict(model, images, dev, 4, 0.5, 0.5)
    t_pipe = time.perf_counter() - t0
    batch = [to_tensor(im) for im in images]
    with torch.inference_mode():
        t0 = time.perf_counter()
        for b in range(0, len(batch), 4):
            model(batch[b:b + 4])
        t_bare = time.perf_counter() - t0
    print(f"inference: pipeline {len(images) / t_pipe:.2f} slices/s, bare forward {len(images) / t_bare:.2f} "
          f"slices/s, ratio {t_bare / t_pipe:.3f}")

    tiles = images[:, :128, :128]
    tmasks = masks[:, :128, :128]
    t = TrainSettings(epochs=1, batch_size=4, device="cpu", threads=2, max_iterations_per_epoch=args.steps,
                      warmup_iterations=1)
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        train(tiles, tmasks, tiles[:1], tmasks[:1], m, t, d, "bench", progress=False)
        t_train = (time.perf_counter() - t0)
    # the pipeline's figure includes one validation pass; time it separately to subtract
    torch.manual_seed(0)
    bare = build_model(m).train()
    opt = torch.optim.SGD(bare.parameters(), lr=0.01, momentum=0.9)
    targets = [make_target(mk) for mk in tmasks]
    imgs = [to_tensor(im) for im in tiles]
    t0 = time.perf_counter()
    for i in range(args.steps):
        j = [(4 * i + k) % len(imgs) for k in range(4)]
        loss = sum(bare([imgs[k] for k in j], [targets[k] for k in j]).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
    t_bare_train = time.perf_counter() - t0
    print(f"training: pipeline {t_train / args.steps:.2f} s/step (incl. one validation pass), "
          f"bare loop {t_bare_train / args.steps:.2f} s/step, ratio {t_bare_train / t_train:.3f}")


if __name__ == "__main__":
    main()
