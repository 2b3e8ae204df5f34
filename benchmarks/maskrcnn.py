"""Mask R-CNN pipeline overheads, measured against bare torchvision calls on the same tensors.

Usage: .venv/bin/python benchmarks/maskrcnn.py [--slices 16] [--steps 12]

1. Inference: slices/s of :func:`detachment.maskrcnn.predict` (batching, painting
   non-overlapping labels) vs a bare ``model(batch)`` forward under inference_mode;
   with test-time augmentation (four flips fused) vs four bare forwards.
2. Training: seconds per SGD step of :func:`detachment.maskrcnn.train` (targets
   from label tiles, lr schedule, clipping, logging, checkpoint) vs a bare loop of
   ``loss = sum(model(images, targets).values()); backward; clip; step`` with
   precomputed targets. Both start from the same weights, see the same batches in
   the same order with the same learning rate and clipping, so they do the same
   arithmetic: a step's cost depends on how many proposals survive, which changes
   as the weights move, so a bare loop with another learning rate or data order
   is not comparable. The pipeline's one validation pass is timed alone and
   subtracted.
3. Training speed of the default CPU settings (``model.roi_sampling_ratio`` 1,
   ``train.precision`` bf16) against torchvision's float32 at ratio 2: the same
   bare loop, same weights and batches, seconds per step and their ratio.
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
    evaluate,
    make_target,
    predict,
    seed_everything,
    to_tensor,
    train,
    validation_loss,
)
from detachment.phantom import PhantomParams, generate_phantom


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--slices", type=int, default=16)
    ap.add_argument("--steps", type=int, default=12)
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
    t0 = time.perf_counter()
    predict(model, images, dev, 4, 0.5, 0.5, tta=True)
    t_tta = time.perf_counter() - t0
    # test-time augmentation runs four forward passes; the ratio says what the fusion adds on top of them
    print(f"inference with tta: {len(images) / t_tta:.2f} slices/s, ratio to four bare forwards "
          f"{4 * t_bare / t_tta:.3f}")

    # one epoch of exactly ``steps`` batches of 4 (train() stops an epoch when the tiles run out)
    reps = np.arange(4 * args.steps) % len(images)
    tiles = images[reps, :128, :128]
    tmasks = masks[reps, :128, :128]
    lr = 0.005
    t = TrainSettings(epochs=1, batch_size=4, device="cpu", threads=2, max_iterations_per_epoch=args.steps,
                      warmup_iterations=0, lr_start=lr, lr_end=lr, seed=0)
    # the validation pass inside train(), timed alone to subtract it
    torch.manual_seed(0)
    probe = build_model(m)
    t0 = time.perf_counter()
    validation_loss(probe, tiles[:1], tmasks[:1], dev)
    evaluate(probe, tiles[:1], tmasks[:1], dev, t)
    t_val = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        train(tiles, tmasks, tiles[:1], tmasks[:1], m, t, d, "bench", progress=False)
        t_train = time.perf_counter() - t0 - t_val
    targets = [make_target(mk) for mk in tmasks]
    imgs = [to_tensor(im) for im in tiles]
    order = torch.randperm(len(tiles), generator=torch.Generator().manual_seed(t.seed * 1000)).numpy()

    def bare_seconds(settings: ModelSettings, bf16: bool = False) -> float:
        """The same run without the pipeline (train() seeds torch with t.seed, then reseeds per epoch)."""
        seed_everything(t.seed)
        net = build_model(settings).train()
        params = [p for p in net.parameters() if p.requires_grad]
        opt = torch.optim.SGD(params, lr=lr, momentum=t.momentum, weight_decay=t.weight_decay)
        torch.manual_seed(t.seed * 1000)
        t0 = time.perf_counter()
        for i in range(args.steps):
            j = order[(i * 4) % len(imgs): (i * 4) % len(imgs) + 4]
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                out = net([imgs[k] for k in j], [targets[k] for k in j])
            loss = sum(v.float() for v in out.values())
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, t.grad_clip_norm)
            opt.step()
        return time.perf_counter() - t0

    t_bare_train = bare_seconds(m)
    assert len(tiles) // t.batch_size == args.steps  # both loops ran the same number of steps
    print(f"training: pipeline {t_train / args.steps:.2f} s/step (validation pass of {t_val:.2f} s subtracted), "
          f"bare loop {t_bare_train / args.steps:.2f} s/step, ratio {t_bare_train / t_train:.3f}")
    # m is torchvision's float32 at RoIAlign ratio 2: the bare loop above is the reference
    t_fast = bare_seconds(ModelSettings(**{**m.__dict__, "roi_sampling_ratio": 1}), bf16=True)
    print(f"training step, default CPU settings (bf16, RoIAlign ratio 1) {t_fast / args.steps:.2f} s vs fp32 at "
          f"ratio 2 {t_bare_train / args.steps:.2f} s: speed-up {t_bare_train / t_fast:.2f}x")


if __name__ == "__main__":
    main()
