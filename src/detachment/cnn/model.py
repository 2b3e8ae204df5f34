"""Mask R-CNN settings, model building, input tensors and device / precision selection.

torchvision's :class:`~torchvision.models.detection.MaskRCNN` with a ResNet-FPN backbone trained from
scratch, its heads trimmed for the CPU; ``min_size`` = ``max_size`` = the tile size, so images are never
resized (the default 800 px resize costs ~10x on a CPU). Everything that shapes the model is in
:class:`ModelSettings`, stored with every checkpoint. Inputs are grey slices repeated to three channels
(or slices z-1, z, z+1), normalised with the training tiles' mean and standard deviation.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from .settings import BACKBONES, CLASSES, ModelSettings  # noqa: F401  (re-exported)

#: CPU flags (Linux ``/proc/cpuinfo``) of bfloat16 arithmetic in hardware.
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


@dataclass
class TrainSettings:
    """Optimisation (``train`` config section); the fields are documented in the config schema.

    Parameters
    ----------
    epochs, batch_size : int
        Passes over the tiles, and tiles per SGD step.
    lr_start, lr_end : float
        Learning rate after warm-up and at the end; cosine decay between them (:func:`~.engine.lr_at`).
    momentum, weight_decay : float
        SGD momentum and L2 weight decay.
    warmup_iterations : int
        Steps of linear warm-up from 0.1 ``lr_start``.
    grad_clip_norm : float
        Global gradient-norm clip (0: none).
    device : str
        ``auto``, ``cpu`` or ``cuda[:N]`` (:func:`select_device`).
    threads : int
        torch CPU threads.
    seed : int
        Seed of weight init, data order and the RPN / RoI samplers.
    score_threshold, mask_threshold, min_visible_fraction, iou_threshold : float
        Validation metrics per epoch, as inference uses them.
    max_iterations_per_epoch : int or None
        Cap on the steps of an epoch.
    precision : str
        ``bf16``: training forward passes under ``torch.autocast`` (bfloat16 matmuls and convolutions,
        float32 weights and optimiser); ``fp32``: none; ``auto``: bf16 where the device runs it natively
        (:func:`bf16_native`). Validation and inference always run in float32.

    Raises
    ------
    ValueError
        For a ``precision`` other than ``auto``, ``fp32`` or ``bf16``.
    """

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
    precision: str = "fp32"

    def __post_init__(self):
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ValueError(f"train.precision: {self.precision!r} is not 'auto', 'fp32' or 'bf16'")


def settings_dict(m: ModelSettings, t: TrainSettings) -> dict:
    """Both settings as plain dicts (the JSON metadata and the run id hash them).

    Parameters
    ----------
    m, t : ModelSettings, TrainSettings
        The settings.

    Returns
    -------
    dict
        ``{"model": {...}, "train": {...}}``.
    """
    return {"model": asdict(m), "train": asdict(t)}


def select_device(requested: str = "auto") -> torch.device:
    """The torch device of a ``device`` setting.

    Parameters
    ----------
    requested : str
        ``auto`` (CUDA when present, else CPU), ``cpu`` or ``cuda[:N]``.

    Returns
    -------
    torch.device

    Raises
    ------
    RuntimeError
        When CUDA is requested but not available.
    ValueError
        For any other string.
    """
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {requested!r} was requested but no CUDA device is available; "
                           f"use device: auto or cpu")
    if requested not in ("cpu",) and not requested.startswith("cuda"):
        raise ValueError(f"device: {requested!r} is not auto, cpu or cuda[:N]")
    return torch.device(requested)


def cpu_has_bf16_instructions(cpuinfo: str | None = None) -> bool:
    """Whether the CPU has bfloat16 instructions (:data:`BF16_CPU_FLAGS`).

    Parameters
    ----------
    cpuinfo : str, optional
        The text of ``/proc/cpuinfo``; read when ``None``.

    Returns
    -------
    bool
        False where it cannot be told (no ``/proc/cpuinfo``).
    """
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
    """Whether ``device`` computes bfloat16 natively.

    A CUDA GPU that supports it, or a CPU with bfloat16 instructions (AVX512_BF16 or AMX) and oneDNN
    kernels for them. oneDNN also reports bfloat16 support on AVX-512 CPUs without those instructions,
    where it emulates bfloat16, slower than float32.

    Parameters
    ----------
    device : torch.device

    Returns
    -------
    bool
    """
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if not cpu_has_bf16_instructions():
        return False
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch build without oneDNN
        return False


def training_dtype(precision: str, device: torch.device) -> torch.dtype:
    """The autocast dtype of training forward passes.

    Parameters
    ----------
    precision : str
        ``train.precision``: ``auto``, ``fp32`` or ``bf16``.
    device : torch.device

    Returns
    -------
    torch.dtype
        ``torch.bfloat16`` for ``bf16``, and for ``auto`` where :func:`bf16_native`; else ``torch.float32``.
    """
    if precision == "bf16" or (precision == "auto" and bf16_native(device)):
        return torch.bfloat16
    return torch.float32


def build_model(s: ModelSettings) -> nn.Module:
    """An untrained Mask R-CNN with a ResNet-FPN backbone and trimmed heads (2 classes).

    Weights are drawn from torch's global generator (seed it first for a reproducible model).

    Parameters
    ----------
    s : ModelSettings

    Returns
    -------
    torchvision.models.detection.MaskRCNN
        In training mode, on the CPU, float32.
    """
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
    """The model's input tensor of one slice.

    Parameters
    ----------
    image : numpy.ndarray
        (y, x) grey slice, or (3, y, x) slices z-1, z, z+1; any real dtype.

    Returns
    -------
    torch.Tensor
        (3, y, x) float32 on the CPU: the slice repeated, or the three slices as they are.

    Raises
    ------
    ValueError
        For any other shape.
    """
    x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
    if x.ndim == 3 and x.shape[0] == 3:
        return x
    if x.ndim != 2:
        raise ValueError(f"expected a (y, x) slice or (3, y, x) slices z-1, z, z+1, got shape {tuple(x.shape)}")
    return x[None].expand(3, -1, -1).contiguous()


def make_target(mask: np.ndarray) -> dict[str, torch.Tensor]:
    """The torchvision training target of one instance label slice.

    Parameters
    ----------
    mask : numpy.ndarray
        (y, x) integer instance labels, 0 = background.

    Returns
    -------
    dict
        ``boxes`` (n, 4) float32 x0, y0, x1, y1 in px (x1, y1 exclusive), ``labels`` (n,) int64 ones,
        ``masks`` (n, y, x) uint8; instances by increasing label.
    """
    ids = np.unique(mask[mask > 0])
    if len(ids) == 0:
        return {"boxes": torch.zeros((0, 4)), "labels": torch.zeros(0, dtype=torch.int64),
                "masks": torch.zeros((0,) + mask.shape, dtype=torch.uint8)}
    masks = mask[None] == ids[:, None, None]
    rows, cols = masks.any(2), masks.any(1)  # (n, y), (n, x); every instance has a pixel
    y0, x0 = rows.argmax(1), cols.argmax(1)
    y1, x1 = rows.shape[1] - rows[:, ::-1].argmax(1), cols.shape[1] - cols[:, ::-1].argmax(1)
    return {"boxes": torch.from_numpy(np.stack([x0, y0, x1, y1], 1).astype(np.float32)),
            "labels": torch.ones(len(ids), dtype=torch.int64),
            "masks": torch.from_numpy(masks.view(np.uint8))}
