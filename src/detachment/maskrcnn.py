"""Mask R-CNN for per-slice particle instances (Supp. Fig. 4, Supp. Note 1).

torchvision's :class:`~torchvision.models.detection.MaskRCNN` with a ResNet +
FPN backbone trained from scratch (no weights can be downloaded). For the CPU
the heads are trimmed (FPN width, box-head width, mask-head width, RoI and RPN
sample sizes) and the transform's ``min_size``/``max_size`` equal the tile
size, so images are never resized (the default 800 px resize costs ~10x on a
CPU). Everything that shapes the model is in :class:`ModelSettings`, stored
with every checkpoint.

Images are single-channel grey slices, repeated to three channels;
normalisation uses the training tiles' mean and standard deviation.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import io, metrics

log = logging.getLogger(__name__)

BACKBONES = {"resnet18": 512, "resnet34": 512, "resnet50": 2048, "resnet101": 2048}
CLASSES = ["background", "particle"]


@dataclass
class ModelSettings:
    """Architecture (``model`` config section)."""

    backbone: str = "resnet18"
    fpn_channels: int = 64
    box_head_width: int = 256
    mask_head_width: int = 64
    anchor_sizes: tuple[int, ...] = (8, 16, 32, 64, 128)
    rpn_batch_size_per_image: int = 128
    rpn_pre_nms_top_n_train: int = 600
    rpn_post_nms_top_n_train: int = 300
    rpn_pre_nms_top_n_test: int = 1000
    rpn_post_nms_top_n_test: int = 500
    box_batch_size_per_image: int = 128
    box_positive_fraction: float = 0.5
    box_detections_per_img: int = 150
    # RoIAlign samples per bin side (torchvision: 2). On a CPU the RoIAlign backward pass is single-threaded
    # and a fifth of a training step at 2; 1 takes a quarter of the samples
    roi_sampling_ratio: int = 2
    tile: int = 128
    image_mean: float = 0.0
    image_std: float = 1.0
    context_slices: int = 0  # 1: the three input channels are slices z-1, z, z+1 (2.5D); 0: z repeated

    def __post_init__(self):
        if self.context_slices not in (0, 1):
            raise ValueError(f"model.context_slices: {self.context_slices!r} is not 0 or 1")
        if self.backbone not in BACKBONES:
            raise ValueError(f"model.backbone: {self.backbone!r} is not one of {sorted(BACKBONES)}")
        self.anchor_sizes = tuple(int(a) for a in self.anchor_sizes)
        if len(self.anchor_sizes) != 5:
            raise ValueError(f"model.anchor_sizes: need 5 sizes (one per FPN level), got {list(self.anchor_sizes)}")


@dataclass
class TrainSettings:
    """Optimisation (``train`` config section). lr decays from ``lr_start`` to ``lr_end`` (cosine)."""

    epochs: int = 4
    batch_size: int = 4
    lr_start: float = 0.02
    lr_end: float = 0.002
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_iterations: int = 50
    grad_clip_norm: float = 10.0
    device: str = "auto"
    threads: int = 2
    seed: int = 0
    score_threshold: float = 0.5
    mask_threshold: float = 0.5
    min_visible_fraction: float = 0.5
    iou_threshold: float = 0.5
    max_iterations_per_epoch: int | None = None
    # "bf16": forward passes under torch.autocast (bfloat16 matmuls and convolutions, float32 weights and
    # optimiser); "fp32": none; "auto": bf16 where the device runs it natively (see bf16_native).
    # Validation and inference always run in float32
    precision: str = "fp32"

    def __post_init__(self):
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ValueError(f"train.precision: {self.precision!r} is not 'auto', 'fp32' or 'bf16'")


def select_device(requested: str = "auto") -> torch.device:
    """``auto``: CUDA when present, else CPU. Asking for ``cuda`` without one is an error."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {requested!r} was requested but no CUDA device is available; "
                           f"use device: auto or cpu")
    if requested not in ("cpu",) and not requested.startswith("cuda"):
        raise ValueError(f"device: {requested!r} is not auto, cpu or cuda[:N]")
    return torch.device(requested)


#: CPU flags (Linux ``/proc/cpuinfo``) of bfloat16 arithmetic in hardware.
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_has_bf16_instructions(cpuinfo: str | None = None) -> bool:
    """Whether the CPU has bfloat16 instructions (:data:`BF16_CPU_FLAGS`), from ``cpuinfo`` (the text of
    ``/proc/cpuinfo``; read when ``None``). False where it cannot be told (no ``/proc/cpuinfo``)."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo") as f:
                cpuinfo = f.read()
        except OSError:
            return False
    flags = set()
    for line in cpuinfo.splitlines():
        if line.lower().startswith(("flags", "features")):
            flags.update(line.split(":", 1)[-1].split())
    return any(f in flags for f in BF16_CPU_FLAGS)


def bf16_native(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 natively: a CUDA GPU that supports it, or a CPU with bfloat16
    instructions (AVX512_BF16 or AMX) and oneDNN kernels for them. oneDNN also reports bfloat16 support on
    AVX-512 CPUs without those instructions, where it emulates bfloat16, slower than float32."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if not cpu_has_bf16_instructions():
        return False
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch build without oneDNN
        return False


def training_dtype(precision: str, device: torch.device) -> torch.dtype:
    """The autocast dtype of training forward passes for ``train.precision`` on ``device``."""
    if precision == "bf16" or (precision == "auto" and bf16_native(device)):
        return torch.bfloat16
    return torch.float32


def build_model(s: ModelSettings) -> nn.Module:
    """An untrained Mask R-CNN with a ResNet-FPN backbone and trimmed heads (2 classes)."""
    from torchvision.models.detection import MaskRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
    from torchvision.ops import MultiScaleRoIAlign
    from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool

    # from scratch: trainable BatchNorm (frozen BN with random statistics would not normalise)
    backbone = resnet_fpn_backbone(backbone_name=s.backbone, weights=None, norm_layer=nn.BatchNorm2d,
                                   trainable_layers=5, returned_layers=[1, 2, 3, 4])
    c = BACKBONES[s.backbone]
    backbone.fpn = FeaturePyramidNetwork([c // 8, c // 4, c // 2, c], s.fpn_channels,
                                         extra_blocks=LastLevelMaxPool())
    backbone.out_channels = s.fpn_channels
    anchors = AnchorGenerator(sizes=tuple((a,) for a in s.anchor_sizes), aspect_ratios=((0.5, 1.0, 2.0),) * 5)
    return MaskRCNN(
        backbone, num_classes=None,
        box_roi_pool=MultiScaleRoIAlign(["0", "1", "2", "3"], 7, s.roi_sampling_ratio),
        mask_roi_pool=MultiScaleRoIAlign(["0", "1", "2", "3"], 14, s.roi_sampling_ratio),
        box_head=TwoMLPHead(s.fpn_channels * 7 * 7, s.box_head_width),
        box_predictor=FastRCNNPredictor(s.box_head_width, len(CLASSES)),
        mask_head=MaskRCNNHeads(s.fpn_channels, (s.mask_head_width,) * 4, 1),
        mask_predictor=MaskRCNNPredictor(s.mask_head_width, s.mask_head_width, len(CLASSES)),
        min_size=s.tile, max_size=s.tile,
        image_mean=[s.image_mean] * 3, image_std=[s.image_std] * 3,
        rpn_anchor_generator=anchors,
        rpn_batch_size_per_image=s.rpn_batch_size_per_image,
        rpn_pre_nms_top_n_train=s.rpn_pre_nms_top_n_train, rpn_post_nms_top_n_train=s.rpn_post_nms_top_n_train,
        rpn_pre_nms_top_n_test=s.rpn_pre_nms_top_n_test, rpn_post_nms_top_n_test=s.rpn_post_nms_top_n_test,
        box_batch_size_per_image=s.box_batch_size_per_image, box_positive_fraction=s.box_positive_fraction,
        box_detections_per_img=s.box_detections_per_img,
    )


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """(y, x) grey slice -> (3, y, x) float tensor (repeated); (3, y, x) slices z-1, z, z+1 are kept."""
    x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
    if x.ndim == 3 and x.shape[0] == 3:
        return x
    if x.ndim != 2:
        raise ValueError(f"expected a (y, x) slice or (3, y, x) slices z-1, z, z+1, got shape {tuple(x.shape)}")
    return x[None].expand(3, -1, -1).contiguous()


def make_target(mask: np.ndarray) -> dict[str, torch.Tensor]:
    """torchvision target (boxes x1 y1 x2 y2, labels, masks) from a (y, x) instance label slice."""
    ids = np.unique(mask[mask > 0])
    if len(ids) == 0:
        return {"boxes": torch.zeros((0, 4)), "labels": torch.zeros(0, dtype=torch.int64),
                "masks": torch.zeros((0,) + mask.shape, dtype=torch.uint8)}
    masks = mask[None] == ids[:, None, None]
    boxes = []
    for m in masks:
        ys, xs = np.nonzero(m)
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    return {"boxes": torch.tensor(np.array(boxes), dtype=torch.float32),
            "labels": torch.ones(len(ids), dtype=torch.int64),
            "masks": torch.from_numpy(masks.astype(np.uint8))}


def predictions_to_labels(pred: dict[str, torch.Tensor], shape: tuple[int, int], score_threshold: float,
                          mask_threshold: float, min_visible_fraction: float = 0.5) -> tuple[np.ndarray, list[dict]]:
    """Paint detections into one non-overlapping label slice, highest score first.

    A pixel goes to the highest-scoring detection whose mask probability there is
    ≥ ``mask_threshold``. A detection of which less than ``min_visible_fraction`` of
    its mask is still free is dropped (mask-level NMS): box NMS at IoU 0.5 keeps
    duplicates of one particle whose boxes differ, and their leftovers would be
    false fragments (measured on the default phantom's test split: precision
    0.77 -> 0.87 at sensitivity 0.90). Returns the label slice (uint32, ids 1..n
    by decreasing score) and rows (label, score, bbox, area).
    """
    scores = pred["scores"].detach().cpu().numpy()
    keep = np.nonzero(scores >= score_threshold)[0]
    keep = keep[np.argsort(-scores[keep], kind="stable")]
    out = np.zeros(shape, np.uint32)
    rows = []
    if len(keep) == 0:
        return out, rows
    probs = pred["masks"][keep, 0].detach().cpu().numpy()
    n = 0
    for k, p in zip(keep, probs):
        full = p >= mask_threshold
        pix = full & (out == 0)
        if not pix.any() or pix.sum() < min_visible_fraction * full.sum():
            continue
        n += 1
        out[pix] = n
        ys, xs = np.nonzero(pix)
        rows.append({"label": n, "score": float(scores[k]), "y0": int(ys.min()), "x0": int(xs.min()),
                     "y1": int(ys.max()) + 1, "x1": int(xs.max()) + 1, "area_px": int(pix.sum())})
    return out, rows


# test-time augmentation: the four flips of a slice (dims of a (3, y, x) tensor), identity first
TTA_FLIPS: tuple[tuple[int, ...], ...] = ((), (-1,), (-2,), (-2, -1))
TTA_MIN_SCORE = 0.05  # detections below this in a flipped pass are not worth fusing


def fuse_flips(preds: list[dict[str, torch.Tensor]], mask_threshold: float, match_iou: float = 0.5
               ) -> dict[str, torch.Tensor]:
    """Fuse the predictions of one slice's flipped passes (masks already flipped back) into one set.

    Greedy by score over all passes: a detection gathers at most one detection of every other pass whose
    binarised mask overlaps it at IoU ≥ ``match_iou``. The fused score is the group's summed score over
    the number of passes (a particle seen in one pass of four keeps a quarter of its score); the fused
    mask probability is the mean over the passes that saw it, so the mask threshold keeps its meaning.
    """
    n = len(preds)
    dets = [(float(sc), v, m) for v, p in enumerate(preds)
            for sc, m in zip(p["scores"].tolist(), p["masks"][:, 0]) if sc >= TTA_MIN_SCORE]
    dets.sort(key=lambda d: -d[0])
    binary = [d[2] >= mask_threshold for d in dets]
    # boxes of the binarised masks (y0, x0, y1, x1; empty masks get an empty box): only pairs whose boxes
    # intersect are compared, and on the joint box, so a slice with hundreds of particles stays cheap
    boxes = []
    for b in binary:
        ys, xs = torch.nonzero(b.any(1)).flatten(), torch.nonzero(b.any(0)).flatten()
        boxes.append((int(ys[0]), int(xs[0]), int(ys[-1]) + 1, int(xs[-1]) + 1) if len(ys) else (0, 0, 0, 0))
    used = [False] * len(dets)
    scores, masks = [], []
    for i, (sc, v, m) in enumerate(dets):
        if used[i]:
            continue
        used[i] = True
        group = {v: (sc, m)}
        for j in range(i + 1, len(dets)):
            if used[j] or dets[j][1] in group:
                continue
            (a0, a1, a2, a3), (b0, b1, b2, b3) = boxes[i], boxes[j]
            y0, x0, y1, x1 = max(a0, b0), max(a1, b1), min(a2, b2), min(a3, b3)
            if y0 >= y1 or x0 >= x1:
                continue
            y0, x0, y1, x1 = min(a0, b0), min(a1, b1), max(a2, b2), max(a3, b3)
            bi, bj = binary[i][y0:y1, x0:x1], binary[j][y0:y1, x0:x1]
            inter = (bi & bj).sum().item()
            union = (bi | bj).sum().item()
            if union and inter / union >= match_iou:
                group[dets[j][1]] = dets[j][0], dets[j][2]
                used[j] = True
        scores.append(sum(g[0] for g in group.values()) / n)
        masks.append(torch.stack([g[1] for g in group.values()]).mean(0))
    if not scores:
        h, w = preds[0]["masks"].shape[-2:]
        return {"scores": torch.zeros(0), "masks": torch.zeros((0, 1, h, w))}
    return {"scores": torch.tensor(scores), "masks": torch.stack(masks)[:, None]}


def _predict_batch(model: nn.Module, batch: list[torch.Tensor], tta: bool, mask_threshold: float
                   ) -> list[dict[str, torch.Tensor]]:
    """The model's predictions for a batch of (3, y, x) tensors; with ``tta``, fused over the four flips."""
    if not tta:
        return model(batch)
    passes = [model([torch.flip(x, f) if f else x for x in batch]) for f in TTA_FLIPS]
    out = []
    for i in range(len(batch)):
        preds = [{"scores": p[i]["scores"], "masks": torch.flip(p[i]["masks"], f) if f else p[i]["masks"]}
                 for f, p in zip(TTA_FLIPS, passes)]
        out.append(fuse_flips(preds, mask_threshold))
    return out


@torch.inference_mode()
def predict(model: nn.Module, images: np.ndarray, device: torch.device, batch_size: int, score_threshold: float,
            mask_threshold: float, progress: bool = False, min_visible_fraction: float = 0.5, tta: bool = False
            ) -> tuple[np.ndarray, list[dict]]:
    """Instance labels (n, y, x) for (n, y, x) slices, or (n, 3, y, x) slices with their neighbours, at
    native scale; rows carry ``index``. ``tta``: fuse the four flips of each slice (:func:`fuse_flips`;
    four times the compute)."""
    from tqdm import tqdm

    was_training = model.training
    model.eval()
    h, w = images.shape[-2:]
    out = np.zeros((len(images), h, w), np.uint32)
    rows = []
    starts = range(0, len(images), batch_size)
    with native_scale(model, h, w):
        for b in tqdm(starts, desc="infer", unit="batch", disable=not progress):
            batch = [to_tensor(im).to(device) for im in images[b:b + batch_size]]
            for i, pred in enumerate(_predict_batch(model, batch, tta, mask_threshold)):
                out[b + i], r = predictions_to_labels(pred, (h, w), score_threshold, mask_threshold,
                                                          min_visible_fraction)
                rows.extend({"index": b + i, **row} for row in r)
    model.train(was_training)
    return out, rows


@contextlib.contextmanager
def native_scale(model: nn.Module, h: int, w: int):
    """Let the model's transform take (h, w) images without resizing, restoring the tile size after.

    The model is trained at native scale on tiles (min_size = max_size = tile); whole slices must not be
    resized either, and validation inside training must not leave the transform at the slice size.
    """
    saved = (model.transform.min_size, model.transform.max_size)
    model.transform.min_size, model.transform.max_size = (min(h, w),), max(h, w)
    try:
        yield
    finally:
        model.transform.min_size, model.transform.max_size = saved


def evaluate(model: nn.Module, images: np.ndarray, masks: np.ndarray, device, t: TrainSettings) -> dict:
    """Mean instance precision / sensitivity / F over images at ``t.iou_threshold``."""
    pred, _ = predict(model, images, device, t.batch_size, t.score_threshold, t.mask_threshold,
                      min_visible_fraction=t.min_visible_fraction)
    sc = [metrics.instance_scores(m, p, t.iou_threshold) for m, p in zip(masks, pred)]
    return {"precision": float(np.mean([s.precision for s in sc])),
            "sensitivity": float(np.mean([s.sensitivity for s in sc])),
            "f1": float(np.mean([s.f1 for s in sc]))}


# ---------------------------------------------------------------------------------------------
# checkpoints


def fingerprint(obj) -> str:
    """Short SHA-256 of a JSON-serialisable object (config) or of a file's bytes."""
    h = hashlib.sha256()
    if isinstance(obj, (str, os.PathLike)) and Path(obj).is_file():
        with open(obj, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    else:
        h.update(json.dumps(obj, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def save_checkpoint(path, state: dict) -> None:
    """Atomic ``torch.save`` of a dict of state dicts and plain values."""
    with io.atomic_output(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path) -> dict:
    """Load a checkpoint safely (``weights_only=True``); errors name the file and say what is wrong."""
    path = Path(path)
    if not path.exists():
        raise io.InputError(f"{path}: checkpoint does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for bad files
        msg = str(e).splitlines()[0][:300]
        if "Weights only load failed" in str(e) or "Unsupported global" in str(e):
            raise io.InputError(f"{path}: refused to load: it holds objects other than tensors and plain "
                                f"values (possibly a malicious pickle); only weights are accepted ({msg})") from None
        raise io.InputError(f"{path}: not a readable PyTorch checkpoint ({msg})") from None


def load_model(weights_path, meta_path, device) -> tuple[nn.Module, dict]:
    """Rebuild the model from its JSON metadata and load its weights; refuse a mismatched architecture."""
    meta_path = Path(meta_path)
    try:
        meta = json.loads(meta_path.read_text())
        settings = ModelSettings(**meta["model"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise io.InputError(f"{meta_path}: model metadata is missing or invalid ({e})") from None
    model = build_model(settings)
    state = load_checkpoint(weights_path)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise io.InputError(f"{weights_path}: expected a state dict of tensors")
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).splitlines()[0]
        raise io.InputError(f"{weights_path}: weights do not fit the architecture in {meta_path} "
                            f"({settings.backbone}, FPN {settings.fpn_channels}): {first}") from None
    return model.to(device), meta


def environment() -> dict:
    import torchvision

    return {"torch": torch.__version__, "torchvision": torchvision.__version__, "numpy": np.__version__,
            "python": platform.python_version()}


# ---------------------------------------------------------------------------------------------
# training


@dataclass
class TrainResult:
    log_rows: list[dict] = field(default_factory=list)
    resumed_from_epoch: int = 0


def lr_at(it: int, total: int, t: TrainSettings) -> float:
    """Linear warm-up, then cosine decay from ``lr_start`` to ``lr_end`` over ``total`` iterations."""
    if it < t.warmup_iterations:
        return t.lr_start * (0.1 + 0.9 * it / max(t.warmup_iterations, 1))
    frac = min(1.0, (it - t.warmup_iterations) / max(total - t.warmup_iterations, 1))
    return t.lr_end + 0.5 * (t.lr_start - t.lr_end) * (1 + math.cos(math.pi * frac))


def seed_everything(seed: int) -> None:
    """Seed torch (weights init, RPN/RoI sampling); numpy randomness here always uses explicit generators."""
    torch.manual_seed(seed)


def train(tiles: np.ndarray, tile_masks: np.ndarray, val_images: np.ndarray, val_masks: np.ndarray,
          m: ModelSettings, t: TrainSettings, checkpoint_dir, run_id: str, progress: bool = True,
          stop_after_epoch: int | None = None) -> tuple[nn.Module, TrainResult]:
    """Train from scratch (or resume from ``checkpoint_dir/last.pt`` of the same ``run_id``).

    One checkpoint per epoch (model, optimizer, epoch, log so far) is written
    atomically to ``checkpoint_dir/last.pt``; a run killed at any point resumes
    at the epoch after the last finished one. Data order is drawn from a
    generator seeded by (seed, epoch), so a resumed run sees the same batches
    as an uninterrupted one. ``stop_after_epoch`` ends early (tests).
    """
    from tqdm import tqdm

    device = select_device(t.device)
    torch.set_num_threads(max(1, t.threads))
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
    seed_everything(t.seed)
    model = build_model(m).to(device)
    dtype = training_dtype(t.precision, device)
    log.info("training on %s, forward passes in %s (train.precision %s)", device, dtype, t.precision)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=t.lr_start, momentum=t.momentum, weight_decay=t.weight_decay)
    n = len(tiles)
    per_epoch = math.ceil(n / t.batch_size)
    if t.max_iterations_per_epoch:
        per_epoch = min(per_epoch, t.max_iterations_per_epoch)
    total = per_epoch * t.epochs
    ckpt = Path(checkpoint_dir) / "last.pt"
    result = TrainResult()
    start = 0
    if ckpt.exists():
        state = load_checkpoint(ckpt)
        if state.get("run_id") == run_id:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            start = int(state["epoch"]) + 1
            result.log_rows = json.loads(state["log"])
            result.resumed_from_epoch = start
            log.info("resuming from %s at epoch %d", ckpt, start)
        else:
            log.info("ignoring %s: it belongs to another configuration or data", ckpt)
    for epoch in range(start, t.epochs):
        model.train()
        # reseed per epoch: the RPN / RoI samplers draw from torch's global generator, so a resumed
        # run must not depend on how much randomness earlier epochs consumed
        torch.manual_seed(t.seed * 1000 + epoch)
        g = torch.Generator().manual_seed(t.seed * 1000 + epoch)
        order = torch.randperm(n, generator=g).numpy()
        losses = []
        bar = tqdm(range(per_epoch), desc=f"epoch {epoch + 1}/{t.epochs}", unit="it", disable=not progress)
        for i in bar:
            it = epoch * per_epoch + i
            for group in opt.param_groups:
                group["lr"] = lr_at(it, total, t)
            idx = order[(i * t.batch_size) % n: (i * t.batch_size) % n + t.batch_size]
            imgs = [to_tensor(tiles[j]).to(device) for j in idx]
            tg = [{k: v.to(device) for k, v in make_target(tile_masks[j]).items()} for j in idx]
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
                loss_dict = model(imgs, tg)
            loss = sum(v.float() for v in loss_dict.values())
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite training loss at epoch {epoch}, iteration {i}: "
                                         f"{ {k: float(v) for k, v in loss_dict.items()} }")
            opt.zero_grad()
            loss.backward()
            if t.grad_clip_norm > 0:  # from-scratch detection heads spike early; clipping keeps SGD stable
                torch.nn.utils.clip_grad_norm_(params, t.grad_clip_norm)
            opt.step()
            losses.append({k: float(v.detach()) for k, v in loss_dict.items()} | {"loss": float(loss.detach())})
            bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
        val_loss = validation_loss(model, val_images, val_masks, device)
        scores = evaluate(model, val_images, val_masks, device, t)
        row = {"epoch": epoch + 1, "iterations": (epoch + 1) * per_epoch, "lr": lr_at((epoch + 1) * per_epoch - 1, total, t),
               "train_loss": float(np.mean([x["loss"] for x in losses])),
               **{f"train_{k}": float(np.mean([x[k] for x in losses])) for k in losses[0] if k != "loss"},
               "val_loss": val_loss, **{f"val_{k}": v for k, v in scores.items()}}
        result.log_rows.append(row)
        log.info("epoch %d: %s", epoch + 1, {k: round(v, 4) for k, v in row.items()})
        save_checkpoint(ckpt, {"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch,
                               "run_id": run_id, "log": json.dumps(result.log_rows)})
        if stop_after_epoch is not None and epoch >= stop_after_epoch:
            break
    return model, result


@torch.no_grad()
def validation_loss(model: nn.Module, images: np.ndarray, masks: np.ndarray, device) -> float:
    """Mean total loss on validation slices (train-mode heads, BatchNorm statistics frozen)."""
    was = model.training
    model.train()
    for mod in model.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.eval()
    h, w = images.shape[-2:]
    total = []
    with native_scale(model, h, w):
        for im, mk in zip(images, masks):
            d = model([to_tensor(im).to(device)], [{k: v.to(device) for k, v in make_target(mk).items()}])
            total.append(float(sum(d.values())))
    model.train(was)
    return float(np.mean(total)) if total else float("nan")


def activation_map(model: nn.Module, image: np.ndarray, device) -> np.ndarray:
    """Supp. Fig. 9a-style activation: L2 norm over channels of the finest FPN level, upsampled to the image."""
    model.eval()
    with torch.inference_mode():
        x = to_tensor(image).to(device)
        h, w = image.shape[-2:]
        with native_scale(model, h, w):
            batch, _ = model.transform([x])
        feats = model.backbone(batch.tensors)
        f = feats["0"][0].norm(dim=0)[None, None]
        f = torch.nn.functional.interpolate(f, size=batch.tensors.shape[-2:], mode="bilinear", align_corners=False)
        return f[0, 0, :h, :w].cpu().numpy()


def settings_dict(m: ModelSettings, t: TrainSettings) -> dict:
    return {"model": asdict(m), "train": asdict(t)}


def train_from_files(tiles_path, val_path, weights_path, meta_path, model_cfg: dict, train_cfg: dict,
                     checkpoint_dir, progress: bool = True):
    """Train on an augmented tile file, validate on a split file, write weights + JSON metadata.

    Returns the training log rows. The run id (resume key) hashes the settings and both data files.
    """
    import h5py

    from .annotations import read_model_images, read_split

    with h5py.File(tiles_path, "r") as f:
        tiles, tile_masks = f["images"][...], f["masks"][...]
    m = ModelSettings(**model_cfg, tile=int(tiles.shape[-1]), image_mean=float(tiles.mean()),
                      image_std=float(tiles.std()) or 1.0)
    if (tiles.ndim == 4) != bool(m.context_slices):
        raise io.InputError(f"{tiles_path}: tiles of shape {tiles.shape[1:]} do not fit model.context_slices "
                            f"{m.context_slices}; rerun the augment rule")
    _, val_masks, _, _ = read_split(val_path)
    val_images = read_model_images(val_path, m.context_slices)
    t = TrainSettings(**train_cfg)
    # the resume key: settings, both data files and this module's code (a changed training loop must
    # not resume a checkpoint written by the old one)
    run_id = fingerprint({"settings": settings_dict(m, t), "tiles": fingerprint(tiles_path),
                          "val": fingerprint(val_path), "code": fingerprint(__file__)})
    model, result = train(tiles, tile_masks, val_images, val_masks, m, t, checkpoint_dir, run_id, progress)
    with io.atomic_output(weights_path) as tmp:
        torch.save(model.state_dict(), tmp)
    meta = {"classes": CLASSES, "run_id": run_id, "epochs": t.epochs, **settings_dict(m, t),
            "device": str(select_device(t.device)), "versions": environment(),
            "final": result.log_rows[-1] if result.log_rows else {}, "resumed_from_epoch": result.resumed_from_epoch}
    with io.atomic_output(meta_path) as tmp:
        Path(tmp).write_text(json.dumps(meta, indent=2, default=float))
    return result.log_rows
