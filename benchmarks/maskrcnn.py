"""Mask R-CNN pipeline overheads against bare torchvision loops: same model, same batches, same dtype.

Usage: .venv/bin/python benchmarks/maskrcnn.py [--steps 30] [--warmup 3] [--size 128] [--batch 2]
       [--precision auto] [--slices 8] [--rounds 5] [--score 0] [--weights W --meta M] [--threads 2]
       [--tta] [--no-settings]

Model and training settings are config/config.yaml's (tile = ``--size``), on phantom tiles.
1. Training, seconds per SGD step. Ours: the library's loop (``train_one_epoch`` over
   ``epoch_batches``: targets built from the label tiles, lr set, autocast per ``train.precision``, the
   finite check, clipping, per-step loss logging), under the deterministic algorithms ``train()``
   switches on. Bare: a plain torchvision loop (``sum(model(images, targets).values())``, backward,
   clip, step) on precomputed targets, deterministic algorithms off. Two copies of one model see the
   same batches with the same lr, and torch's generator is reseeded alike before each pair of steps, so
   both do the same arithmetic (checked: equal weights at the end). Warm-up steps are untimed; then
   the steps are interleaved (which goes first alternates) and the median of the paired ratios is
   reported. Goal: ours / bare <= 1.1. Per-epoch work (validation, checkpoint) is not a step cost.
2. Inference, slices/s: ``predict`` without TTA (batching, tensors from numpy, painting labels) vs a
   bare ``model(batch)`` in eval mode under inference_mode on the same slices and batches; one warm-up
   round, then the batches of ``--rounds`` rounds interleaved (``predict`` called per batch, so its
   per-call costs count more often than in use); paired median ratio. Goal: >= 0.9. An
   untrained model (or ``--weights``/``--meta``); at ``--score`` 0 every detection is painted. With
   ``--tta`` also ``predict(tta=True)`` vs four bare forwards of the flipped batches (no goal).
3. Unless ``--no-settings``: the bare step at the configured speed settings (``model.roi_sampling_ratio``,
   ``train.precision``) vs torchvision's float32 at RoIAlign ratio 2, interleaved the same way.
"""

from __future__ import annotations

import argparse
import copy
import os
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from detachment.cnn.engine import epoch_batches, make_batch, train_one_epoch
from detachment.cnn.model import ModelSettings, TrainSettings, build_model, to_tensor, training_dtype
from detachment.cnn.predict import TTA_FLIPS, load_model, predict
from detachment.phantom import PhantomParams, generate_phantom

ROOT = Path(__file__).resolve().parents[1]


def settings(size: int, batch: int, precision: str | None, threads: int
             ) -> tuple[ModelSettings, TrainSettings, float]:
    """config/config.yaml's model and train sections, at tile ``size`` and batch ``batch`` on the CPU, and
    ``infer.mask_threshold``."""
    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    train_cfg = {k: v for k, v in cfg["train"].items() if k not in ("gpus", "runtime_min")}
    train_cfg.update(batch_size=batch, device="cpu", threads=threads, warmup_iterations=0)
    if precision:
        train_cfg["precision"] = precision
    return ModelSettings(**cfg["model"], tile=size), TrainSettings(**train_cfg), cfg["infer"]["mask_threshold"]


def phantom_data(size: int, n_tiles: int, n_slices: int):
    """Tiles of side ``size`` (with labels) and whole slices from the default phantom's particle layer."""
    ph = generate_phantom(PhantomParams(), seed=1)
    depth, ny, nx = ph.volume.shape
    rng = np.random.default_rng(0)
    zs = rng.integers(depth // 5, 4 * depth // 5, n_tiles)
    ys, xs = rng.integers(0, ny - size + 1, n_tiles), rng.integers(0, nx - size + 1, n_tiles)
    tiles = np.stack([ph.volume[z, y:y + size, x:x + size] for z, y, x in zip(zs, ys, xs)]).astype(np.float32)
    masks = np.stack([ph.labels[z, y:y + size, x:x + size] for z, y, x in zip(zs, ys, xs)]).astype(np.int64)
    slices = ph.volume[np.linspace(depth // 5, 4 * depth // 5, n_slices).astype(int)].astype(np.float32)
    return tiles, masks, slices


def bare_step(model, opt, images, targets, bf16: bool, clip: float) -> None:
    """A plain torchvision training step."""
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        loss_dict = model(images, targets)
    loss = sum(loss_dict.values())
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], clip)
    opt.step()


def interleaved(a, b, n_warmup: int, n_timed: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Seconds of ``a(i)`` and ``b(i)`` for i in the timed range, run in pairs, the first of a pair
    alternating; torch is reseeded alike before each call (same RPN / RoI samples for both)."""
    ta, tb = [], []
    for i in range(n_warmup + n_timed):
        pair = []
        for f in ((a, b) if i % 2 == 0 else (b, a)):
            torch.manual_seed(seed + i)
            t0 = time.perf_counter()
            f(i)
            pair.append((f, time.perf_counter() - t0))
        if i >= n_warmup:
            ta.append(dict(pair)[a])
            tb.append(dict(pair)[b])
    return np.array(ta), np.array(tb)


def summary(ours: np.ndarray, ref: np.ndarray) -> str:
    r = ours / ref
    q1, q3 = np.percentile(r, [25, 75])
    return (f"ours {np.median(ours):.3f} s, bare {np.median(ref):.3f} s (medians of {len(r)}); "
            f"ours / bare {np.median(r):.3f} (paired median, IQR {q1:.3f}-{q3:.3f})")


def bench_training(m: ModelSettings, t: TrainSettings, tiles, masks, n_warmup: int, n_steps: int) -> float:
    """Ours vs bare seconds per step; prints and returns the paired median ratio."""
    dtype = training_dtype(t.precision, torch.device("cpu"))
    torch.manual_seed(t.seed)
    ours = build_model(m).train()
    bare = copy.deepcopy(ours)
    opts = [torch.optim.SGD(net.parameters(), lr=t.lr_start, momentum=t.momentum, weight_decay=t.weight_decay)
            for net in (ours, bare)]
    n = t.batch_size
    order = np.arange(len(tiles))
    pre = [make_batch(tiles, masks, order[i * n:(i + 1) * n], torch.device("cpu"))
           for i in range(n_warmup + n_steps)]

    def our_step(i):
        torch.use_deterministic_algorithms(True, warn_only=True)  # as train() runs on a CPU
        train_one_epoch(ours, opts[0], epoch_batches(tiles, masks, order[i * n:], 1, n, torch.device("cpu")),
                        [t.lr_start], t, dtype, progress=False)
        torch.use_deterministic_algorithms(False)

    def bare_step_i(i):
        bare_step(bare, opts[1], *pre[i], dtype == torch.bfloat16, t.grad_clip_norm)

    t_ours, t_bare = interleaved(our_step, bare_step_i, n_warmup, n_steps)
    same = all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), bare.state_dict().values()))
    print(f"training step ({m.backbone}-FPN {m.fpn_channels}, tile {m.tile}, batch {n}, {dtype}, RoIAlign "
          f"ratio {m.roi_sampling_ratio}; {n_warmup} warm-up + {n_steps} timed steps, interleaved)")
    print(f"  {summary(t_ours, t_bare)}; goal <= 1.1; same weights after: {same}")
    return float(np.median(t_ours / t_bare))


def bench_inference(model, name: str, slices: np.ndarray, batch: int, score: float, mask: float,
                    rounds: int, tta: bool = False) -> float:
    """Ours vs bare throughput over whole slices, batch by batch interleaved; prints and returns the paired
    median ratio. With ``tta``, predict fusing four flips vs four bare forwards of the flipped batches."""
    model.eval()
    tile = model.transform.min_size, model.transform.max_size
    dev = torch.device("cpu")
    h, w = slices.shape[-2:]
    starts = range(0, len(slices), batch)
    arrays = [slices[b:b + batch] for b in starts]
    tensors = [[to_tensor(s) for s in a] for a in arrays]
    flips = TTA_FLIPS if tta else ((),)
    found = []

    def ours(i):
        labels, rows = predict(model, arrays[i % len(arrays)], dev, batch, score, mask, tta=tta)
        found.append(len(rows) / len(labels))

    def bare(i):
        model.transform.min_size, model.transform.max_size = (min(h, w),), max(h, w)  # as predict does
        with torch.inference_mode():
            for f in flips:
                model([torch.flip(x, f) if f else x for x in tensors[i % len(arrays)]])
        model.transform.min_size, model.transform.max_size = tile

    t_ours, t_bare = interleaved(ours, bare, len(arrays), rounds * len(arrays))
    what = "TTA (four flips fused) vs four bare forwards" if tta else "no TTA"
    print(f"inference ({name}, {len(slices)} slices {h}x{w} in batches of {batch}, {what}, "
          f"{np.mean(found):.0f} painted detections per slice at score {score}; 1 warm-up round + {rounds} "
          f"rounds, batches interleaved)")
    r = t_bare / t_ours
    q1, q3 = np.percentile(r, [25, 75])
    print(f"  ours {batch / np.median(t_ours):.2f} slices/s, bare {batch / np.median(t_bare):.2f} slices/s; "
          f"ours / bare throughput {np.median(r):.3f} (paired median of {len(r)}, IQR {q1:.3f}-{q3:.3f})"
          + ("" if tta else "; goal >= 0.9"))
    return float(np.median(r))


def bench_settings(m: ModelSettings, t: TrainSettings, tiles, masks, n_warmup: int, n_steps: int) -> None:
    """Bare steps at the configured speed settings vs torchvision's float32 at RoIAlign ratio 2."""
    dtype = training_dtype(t.precision, torch.device("cpu"))
    ref = ModelSettings(**{**m.__dict__, "roi_sampling_ratio": 2})
    nets = []
    for s in (m, ref):
        torch.manual_seed(t.seed)
        net = build_model(s).train()
        nets.append((net, torch.optim.SGD(net.parameters(), lr=t.lr_start, momentum=t.momentum,
                                          weight_decay=t.weight_decay)))
    n = t.batch_size
    pre = [make_batch(tiles, masks, range(i * n, (i + 1) * n), torch.device("cpu")) for i in range(n_warmup + n_steps)]
    clip = t.grad_clip_norm
    t_fast, t_ref = interleaved(lambda i: bare_step(*nets[0], *pre[i], dtype == torch.bfloat16, clip),
                                lambda i: bare_step(*nets[1], *pre[i], False, clip), n_warmup, n_steps)
    print(f"configured speed settings ({dtype}, RoIAlign ratio {m.roi_sampling_ratio}) vs float32 at ratio 2: "
          f"{np.median(t_fast):.3f} vs {np.median(t_ref):.3f} s/step, speed-up {np.median(t_ref / t_fast):.2f}x "
          f"(paired median)")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=30, help="timed training steps (default 30)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed warm-up steps (default 3)")
    ap.add_argument("--size", type=int, default=128, help="training tile side, px (default 128, augment.tile)")
    ap.add_argument("--batch", type=int, default=2, help="tiles per step and slices per forward (default 2)")
    ap.add_argument("--precision", choices=("auto", "fp32", "bf16"), help="default: train.precision")
    ap.add_argument("--slices", type=int, default=8, help="whole slices per inference round (default 8)")
    ap.add_argument("--rounds", type=int, default=5, help="timed inference rounds over the slices (default 5)")
    ap.add_argument("--score", type=float, default=0.0,
                    help="inference score threshold (default 0: every detection is painted, the most work)")
    ap.add_argument("--weights", type=Path, help="a trained model's weights for part 2 (with --meta)")
    ap.add_argument("--meta", type=Path, help="its JSON metadata (results/model/maskrcnn.json)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tta", action="store_true", help="part 2 also with test-time augmentation (longer)")
    ap.add_argument("--no-settings", action="store_true", help="skip part 3")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    m, t, infer_mask = settings(args.size, args.batch, args.precision, args.threads)
    n_tiles = args.batch * (args.warmup + args.steps)
    tiles, masks, slices = phantom_data(args.size, n_tiles, args.slices)
    m = ModelSettings(**{**m.__dict__, "image_mean": float(tiles.mean()), "image_std": float(tiles.std())})
    t0, load0 = time.perf_counter(), os.getloadavg()[0]
    bench_training(m, t, tiles, masks, args.warmup, args.steps)
    if args.weights:
        model, _ = load_model(args.weights, args.meta, torch.device("cpu"))
    else:
        torch.manual_seed(1)
        model = build_model(m)
    name = str(args.weights or "untrained model")
    bench_inference(model, name, slices, args.batch, args.score, infer_mask, args.rounds)
    if args.tta:
        bench_inference(model, name, slices, args.batch, args.score, infer_mask, args.rounds, tta=True)
    if not args.no_settings:
        bench_settings(m, t, tiles, masks, args.warmup, args.steps)
    print(f"({time.perf_counter() - t0:.0f} s, {args.threads} threads; load average before / after "
          f"{load0:.1f} / {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs: on a shared machine, compare "
          f"only ratios, and prefer --threads 1 when the load exceeds the free cores)")


if __name__ == "__main__":
    main()
