"""Expected time of the paper-scale set-up (config/paper.yaml) on this machine, from measured steps.

Usage: .venv/bin/python benchmarks/paper_scale.py [--steps 3] [--threads 2] [--device cpu]

Measures, with config/paper.yaml laid over config/config.yaml:
1. seconds per SGD step of the ResNet-50-FPN Mask R-CNN on a batch of tiles at the paper's tile size
   and batch size (after one warm-up step), and the default CPU model's step for comparison;
2. seconds per inference slice at the paper's slice size;
and extrapolates training (steps per epoch from the leakage-free split of the paper phantom's slices
x augmentation copies / batch, times epochs) and inference (every slice of both cells). Phantom,
thresholding, linking and science scale with the voxel count and are small beside these.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from detachment.annotations import SplitSettings, split_slices
from detachment.config_docs import with_defaults
from detachment.maskrcnn import ModelSettings, build_model, make_target, to_tensor

ROOT = Path(__file__).resolve().parents[1]


def deep_merge(base: dict, over: dict) -> dict:
    """``over`` laid over ``base`` key by key (what snakemake does with two --configfile files)."""
    out = dict(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def merged_config() -> dict:
    return deep_merge(with_defaults(yaml.safe_load((ROOT / "config/config.yaml").read_text())),
                      yaml.safe_load((ROOT / "config/paper.yaml").read_text()))


def disks(n: int, size: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """Grey tiles of packed disks ~ the phantom's particle density (timing does not depend on realism)."""
    yy, xx = np.mgrid[:size, :size]
    images = rng.normal(0.3, 0.05, (n, size, size)).astype(np.float32)
    masks = np.zeros((n, size, size), np.int64)
    for i in range(n):
        for k in range(1, int(size * size / 900) + 1):
            cy, cx, r = rng.uniform(0, size), rng.uniform(0, size), rng.uniform(8, 18) * size / 256
            disk = ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r) & (masks[i] == 0)
            masks[i][disk] = k
            images[i][disk] += 0.4
    return images, masks


def step_time(m: ModelSettings, batch: int, tile: int, steps: int, device) -> float:
    torch.manual_seed(0)
    model = build_model(m).to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    images, masks = disks(batch, tile, np.random.default_rng(0))
    imgs = [to_tensor(im).to(device) for im in images]
    tg = [{k: v.to(device) for k, v in make_target(mk).items()} for mk in masks]
    times = []
    for _ in range(steps + 1):  # the first step warms up allocators and kernels
        t0 = time.perf_counter()
        loss = sum(model(imgs, tg).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return float(np.median(times[1:]))


def infer_time(m: ModelSettings, size: int, device) -> float:
    torch.manual_seed(0)
    model = build_model(m).to(device).eval()
    image, _ = disks(1, size, np.random.default_rng(1))
    x = [to_tensor(image[0]).to(device)]
    model.transform.min_size, model.transform.max_size = (size,), size
    with torch.inference_mode():
        model(x)
        t0 = time.perf_counter()
        model(x)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cfg = merged_config()
    tile, batch, epochs = cfg["augment"]["tile"], cfg["train"]["batch_size"], cfg["train"]["epochs"]
    copies = cfg["augment"]["copies"]
    depth, ny, nx = cfg["phantom"]["defaults"]["shape_zyx"]
    # labelled slices: every slice of both phantom cells (an upper bound: empty caps are dropped)
    split = split_slices({"cell_1C": list(range(depth)), "cell_C10": list(range(depth))},
                         SplitSettings(test_fraction=cfg["annotations"]["test_fraction"],
                                       val_fraction=cfg["annotations"]["val_fraction"],
                                       margin_slices=cfg["annotations"]["margin_slices"]))
    n_train = len(split["train"])
    steps_per_epoch = math.ceil(n_train * copies / batch)
    model_keys = set(ModelSettings.__dataclass_fields__)
    paper = ModelSettings(**{k: v for k, v in cfg["model"].items() if k in model_keys}, tile=tile)
    t_paper = step_time(paper, batch, tile, args.steps, device)
    base_cfg = with_defaults(yaml.safe_load((ROOT / "config/config.yaml").read_text()))
    default = ModelSettings(**{k: v for k, v in base_cfg["model"].items() if k in model_keys},
                            tile=base_cfg["augment"]["tile"])
    t_default = step_time(default, base_cfg["train"]["batch_size"], base_cfg["augment"]["tile"], args.steps, device)
    t_slice = infer_time(paper, max(ny, nx), device)
    train_h = t_paper * steps_per_epoch * epochs / 3600
    infer_h = t_slice * 2 * depth / 3600
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {args.threads} threads"
    print(f"device: {name}")
    print(f"paper model ({paper.backbone}-FPN {paper.fpn_channels}, tile {tile}, batch {batch}): "
          f"{t_paper:.2f} s/step; default CPU model (batch {base_cfg['train']['batch_size']}): "
          f"{t_default:.3f} s/step; ratio {t_paper / t_default:.1f}")
    print(f"training: {n_train} slices x {copies} copies / batch {batch} = {steps_per_epoch} steps/epoch x "
          f"{epochs} epochs -> {train_h:.1f} h")
    print(f"inference: {t_slice:.2f} s per {ny}x{nx} slice x {2 * depth} slices -> {infer_h:.2f} h")
    print(f"paper-scale CNN total (training + inference): {train_h + infer_h:.1f} h on this device")


if __name__ == "__main__":
    main()
