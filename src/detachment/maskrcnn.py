"""Mask R-CNN for per-slice particle instances: the public names of :mod:`detachment.cnn`, in one place.

Kept for existing callers and users' scripts; the code lives in :mod:`detachment.cnn.model` (settings,
model, inputs, device and precision), :mod:`~detachment.cnn.engine` (training),
:mod:`~detachment.cnn.predict` (inference), :mod:`~detachment.cnn.checkpoint`,
:mod:`~detachment.cnn.activation`, :mod:`~detachment.cnn.reuse` (model reuse) and
:mod:`~detachment.cnn.scale` (training scale, rescaling).
"""

from __future__ import annotations

from .cnn.activation import activation_map
from .cnn.checkpoint import environment, fingerprint, load_checkpoint, save_checkpoint
from .cnn.engine import (
    TrainResult,
    epoch_batches,
    epoch_order,
    evaluate,
    iterations_per_epoch,
    lr_at,
    make_batch,
    resume,
    seed_everything,
    train,
    train_from_files,
    train_one_epoch,
    train_step,
    validation_loss,
)
from .cnn.model import (
    BACKBONES,
    BF16_CPU_FLAGS,
    CLASSES,
    ModelSettings,
    TrainSettings,
    bf16_native,
    build_model,
    cpu_has_bf16_instructions,
    make_target,
    select_device,
    settings_dict,
    to_tensor,
    training_dtype,
)
from .cnn.predict import (
    TTA_FLIPS,
    TTA_MIN_SCORE,
    fuse_flips,
    load_model,
    native_scale,
    predict,
    predictions_to_labels,
)
from .cnn.reuse import ARCH_FIELDS, check_model_meta, copy_model, meta_path_for
from .cnn.scale import RESCALE_RANGE, scale_factor, training_scale

__all__ = [
    "ARCH_FIELDS", "BACKBONES", "BF16_CPU_FLAGS", "RESCALE_RANGE", "check_model_meta", "copy_model",
    "meta_path_for", "scale_factor", "training_scale", "CLASSES", "TTA_FLIPS", "TTA_MIN_SCORE", "ModelSettings", "TrainResult",
    "TrainSettings", "activation_map", "bf16_native", "build_model", "cpu_has_bf16_instructions",
    "environment", "epoch_batches", "epoch_order", "evaluate", "fingerprint", "fuse_flips",
    "iterations_per_epoch", "load_checkpoint", "load_model", "lr_at", "make_batch", "make_target",
    "native_scale", "predict", "predictions_to_labels", "resume", "save_checkpoint", "seed_everything",
    "select_device", "settings_dict", "to_tensor", "train", "train_from_files", "train_one_epoch",
    "train_step", "training_dtype", "validation_loss",
]
