"""Training in the torchvision ``references/detection`` style: one step, one epoch, validation, a driver.

:func:`train` builds the model, resumes from ``last.pt`` of the same run id, and per epoch runs
:func:`train_one_epoch`, :func:`validation_loss` and :func:`evaluate`, then writes a log row and an atomic
checkpoint. Data order and the RPN / RoI samplers are reseeded per epoch from (seed, epoch), so a
resumed run is bitwise the uninterrupted one on a CPU. :func:`train_from_files` is the workflow's entry.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .. import io, metrics
from .checkpoint import environment, fingerprint, load_checkpoint, save_checkpoint
from .model import (
    CLASSES,
    ModelSettings,
    TrainSettings,
    build_model,
    make_target,
    select_device,
    settings_dict,
    to_tensor,
    training_dtype,
)
from .predict import native_scale, predict

log = logging.getLogger(__name__)

#: the modules whose code shapes a training run: a change in any of them must not resume an old checkpoint
CODE = ("model.py", "engine.py", "predict.py")


@dataclass
class TrainResult:
    """What :func:`train` reports besides the model.

    Parameters
    ----------
    log_rows : list of dict
        One row per finished epoch (those of a resumed checkpoint included): ``epoch``, ``iterations``,
        ``lr``, ``train_loss`` and each ``train_loss_*`` (epoch means), ``val_loss``, ``val_precision``,
        ``val_sensitivity``, ``val_f1``.
    resumed_from_epoch : int
        The first epoch this call trained (0 unless resumed).
    """

    log_rows: list[dict] = field(default_factory=list)
    resumed_from_epoch: int = 0


def lr_at(it: int, total: int, t: TrainSettings) -> float:
    """Learning rate of an iteration: linear warm-up, then cosine decay from ``lr_start`` to ``lr_end``.

    Parameters
    ----------
    it : int
        Iteration (SGD step) counted from 0 over all epochs.
    total : int
        Iterations of the whole run.
    t : TrainSettings

    Returns
    -------
    float
    """
    if it < t.warmup_iterations:
        return t.lr_start * (0.1 + 0.9 * it / max(t.warmup_iterations, 1))
    frac = min(1.0, (it - t.warmup_iterations) / max(total - t.warmup_iterations, 1))
    return t.lr_end + 0.5 * (t.lr_start - t.lr_end) * (1 + math.cos(math.pi * frac))


def seed_everything(seed: int) -> None:
    """Seed torch (weights init, RPN / RoI sampling); numpy randomness here always uses explicit generators.

    Parameters
    ----------
    seed : int
    """
    torch.manual_seed(seed)


def iterations_per_epoch(n_tiles: int, t: TrainSettings) -> int:
    """SGD steps of one epoch: enough batches to see every tile once, capped by ``max_iterations_per_epoch``.

    Parameters
    ----------
    n_tiles : int
    t : TrainSettings

    Returns
    -------
    int
    """
    per_epoch = math.ceil(n_tiles / t.batch_size)
    if t.max_iterations_per_epoch:
        per_epoch = min(per_epoch, t.max_iterations_per_epoch)
    return per_epoch


def epoch_order(n_tiles: int, seed: int, epoch: int) -> np.ndarray:
    """Reseed torch for an epoch and draw its tile order, both from (seed, epoch).

    The RPN / RoI samplers draw from torch's global generator, so a resumed run must not depend on how
    much randomness earlier epochs consumed.

    Parameters
    ----------
    n_tiles : int
    seed, epoch : int

    Returns
    -------
    numpy.ndarray
        (n_tiles,) int64 permutation.
    """
    torch.manual_seed(seed * 1000 + epoch)
    g = torch.Generator().manual_seed(seed * 1000 + epoch)
    return torch.randperm(n_tiles, generator=g).numpy()


def make_batch(tiles: np.ndarray, tile_masks: np.ndarray, idx, device: torch.device
               ) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    """Model inputs and torchvision targets of some tiles.

    Parameters
    ----------
    tiles : numpy.ndarray
        (n, y, x) or (n, 3, y, x) tiles.
    tile_masks : numpy.ndarray
        (n, y, x) instance labels.
    idx : sequence of int
        The tiles of the batch.
    device : torch.device

    Returns
    -------
    images : list of torch.Tensor
        (3, y, x) float32 (:func:`~.model.to_tensor`).
    targets : list of dict
        :func:`~.model.make_target` of each tile.
    """
    images = [to_tensor(tiles[j]).to(device) for j in idx]
    targets = [{k: v.to(device) for k, v in make_target(tile_masks[j]).items()} for j in idx]
    return images, targets


def epoch_batches(tiles: np.ndarray, tile_masks: np.ndarray, order: np.ndarray, steps: int, batch_size: int,
                  device: torch.device) -> Iterator[tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]]:
    """The batches of an epoch, built as they are consumed.

    Parameters
    ----------
    tiles, tile_masks : numpy.ndarray
        As :func:`make_batch`.
    order : numpy.ndarray
        Tile order (:func:`epoch_order`); wraps around when ``steps`` batches need more tiles.
    steps, batch_size : int
    device : torch.device

    Yields
    ------
    tuple
        ``(images, targets)`` of :func:`make_batch`.
    """
    n = len(tiles)
    for i in range(steps):
        yield make_batch(tiles, tile_masks, order[(i * batch_size) % n: (i * batch_size) % n + batch_size], device)


def train_step(model: nn.Module, opt: torch.optim.Optimizer, images: list[torch.Tensor], targets: list[dict],
               lr: float, grad_clip_norm: float, dtype: torch.dtype = torch.float32) -> dict[str, float]:
    """One SGD step: forward (under bf16 autocast when ``dtype`` is bfloat16), summed loss, backward, clip, step.

    Parameters
    ----------
    model : MaskRCNN
        In training mode.
    opt : torch.optim.Optimizer
        Its (single) parameter group's learning rate is set to ``lr``; its parameters are clipped.
    images, targets : list
        A batch (:func:`make_batch`).
    lr : float
    grad_clip_norm : float
        Global gradient-norm clip; 0 turns it off (from-scratch detection heads spike early: clipping
        keeps SGD stable).
    dtype : torch.dtype
        ``torch.bfloat16`` or ``torch.float32`` (:func:`~.model.training_dtype`).

    Returns
    -------
    dict
        Each torchvision loss term and their sum ``loss``, as floats.

    Raises
    ------
    FloatingPointError
        When the loss is not finite (nothing is updated).
    """
    for group in opt.param_groups:
        group["lr"] = lr
    with torch.autocast(images[0].device.type, dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
        loss_dict = model(images, targets)
    loss = sum(v.float() for v in loss_dict.values())
    if not torch.isfinite(loss):
        raise FloatingPointError(f"non-finite training loss: { {k: float(v) for k, v in loss_dict.items()} }")
    opt.zero_grad()
    loss.backward()
    if grad_clip_norm > 0:
        torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], grad_clip_norm)
    opt.step()
    return {k: float(v.detach()) for k, v in loss_dict.items()} | {"loss": float(loss.detach())}


def train_one_epoch(model: nn.Module, opt: torch.optim.Optimizer, batches: Iterable, lrs: list[float],
                    t: TrainSettings, dtype: torch.dtype, epoch: int = 0, progress: bool = False) -> list[dict]:
    """:func:`train_step` over an epoch's batches, in training mode.

    Parameters
    ----------
    model, opt
        As :func:`train_step`.
    batches : iterable
        ``(images, targets)`` pairs (:func:`epoch_batches`); as many as ``lrs``.
    lrs : list of float
        Learning rate of each step (:func:`lr_at`).
    t : TrainSettings
        ``grad_clip_norm``, and ``epochs`` for the progress bar.
    dtype : torch.dtype
    epoch : int
        From 0, for messages.
    progress : bool
        Show a progress bar.

    Returns
    -------
    list of dict
        :func:`train_step`'s losses per step.

    Raises
    ------
    FloatingPointError
        When a loss is not finite, naming the epoch and iteration.
    """
    from tqdm import tqdm

    model.train()
    losses = []
    bar = tqdm(zip(lrs, batches), total=len(lrs), desc=f"epoch {epoch + 1}/{t.epochs}", unit="it",
               disable=not progress)
    for i, (lr, (images, targets)) in enumerate(bar):
        try:
            losses.append(train_step(model, opt, images, targets, lr, t.grad_clip_norm, dtype))
        except FloatingPointError as e:
            raise FloatingPointError(f"epoch {epoch}, iteration {i}: {e}") from None
        # refresh=False: a redraw per step would ignore tqdm's mininterval (TQDM_MININTERVAL in log files)
        bar.set_postfix(loss=f"{losses[-1]['loss']:.3f}", refresh=False)
    return losses


@torch.no_grad()
def validation_loss(model: nn.Module, images: np.ndarray, masks: np.ndarray, device) -> float:
    """Mean total loss on validation slices at native scale (train-mode heads, BatchNorm statistics frozen).

    Parameters
    ----------
    model : MaskRCNN
        Its train / eval mode is restored.
    images : numpy.ndarray
        (n, y, x) or (n, 3, y, x) slices.
    masks : numpy.ndarray
        (n, y, x) instance labels.
    device : torch.device or str

    Returns
    -------
    float
        NaN without slices. The RPN / RoI samplers draw from torch's global generator.
    """
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


def evaluate(model: nn.Module, images: np.ndarray, masks: np.ndarray, device, t: TrainSettings) -> dict:
    """Mean instance precision, sensitivity and F1 over slices, at ``t.iou_threshold``.

    Parameters
    ----------
    model : MaskRCNN
    images : numpy.ndarray
        (n, y, x) or (n, 3, y, x) slices.
    masks : numpy.ndarray
        (n, y, x) true instance labels.
    device : torch.device or str
    t : TrainSettings
        ``batch_size`` and the painting thresholds (:func:`~.predict.predict`), ``iou_threshold``.

    Returns
    -------
    dict
        ``precision``, ``sensitivity``, ``f1`` (means over slices of :func:`detachment.metrics.instance_scores`).
    """
    pred, _ = predict(model, images, device, t.batch_size, t.score_threshold, t.mask_threshold,
                      min_visible_fraction=t.min_visible_fraction)
    sc = [metrics.instance_scores(m, p, t.iou_threshold) for m, p in zip(masks, pred)]
    return {"precision": float(np.mean([s.precision for s in sc])),
            "sensitivity": float(np.mean([s.sensitivity for s in sc])),
            "f1": float(np.mean([s.f1 for s in sc]))}


def _setup(m: ModelSettings, t: TrainSettings, device: torch.device, init_state: dict | None = None
           ) -> tuple[nn.Module, torch.optim.Optimizer, torch.dtype]:
    """Threads, CPU determinism, seed, then the model (``init_state``'s weights when given: fine-tuning),
    its SGD optimiser and the training dtype."""
    torch.set_num_threads(max(1, t.threads))
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
    seed_everything(t.seed)
    model = build_model(m)
    if init_state is not None:
        model.load_state_dict(init_state)
    model = model.to(device)
    dtype = training_dtype(t.precision, device)
    log.info("training on %s, forward passes in %s (train.precision %s)", device, dtype, t.precision)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=t.lr_start, momentum=t.momentum, weight_decay=t.weight_decay)
    return model, opt, dtype


def resume(ckpt: Path, run_id: str, model: nn.Module, opt: torch.optim.Optimizer, result: TrainResult) -> int:
    """Load ``ckpt`` into the model, optimiser and log if it belongs to ``run_id``.

    Parameters
    ----------
    ckpt : pathlib.Path
        ``last.pt`` of :func:`train`; may not exist.
    run_id : str
        The run's resume key; a checkpoint of another one is ignored.
    model, opt
        Loaded in place.
    result : TrainResult
        Gets the checkpoint's log rows and ``resumed_from_epoch``.

    Returns
    -------
    int
        The epoch to start at: after the checkpoint's, else 0.

    Raises
    ------
    detachment.io.InputError
        When ``ckpt`` exists but is not a safe, readable checkpoint.
    """
    if not ckpt.exists():
        return 0
    state = load_checkpoint(ckpt)
    if state.get("run_id") != run_id:
        log.info("ignoring %s: it belongs to another configuration or data", ckpt)
        return 0
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    start = int(state["epoch"]) + 1
    result.log_rows = json.loads(state["log"])
    result.resumed_from_epoch = start
    log.info("resuming from %s at epoch %d", ckpt, start)
    return start


def _epoch_row(epoch: int, per_epoch: int, total: int, t: TrainSettings, losses: list[dict], val_loss: float,
               scores: dict) -> dict:
    """An epoch's log row (:class:`TrainResult`)."""
    return {"epoch": epoch + 1, "iterations": (epoch + 1) * per_epoch, "lr": lr_at((epoch + 1) * per_epoch - 1, total, t),
            "train_loss": float(np.mean([x["loss"] for x in losses])),
            **{f"train_{k}": float(np.mean([x[k] for x in losses])) for k in losses[0] if k != "loss"},
            "val_loss": val_loss, **{f"val_{k}": v for k, v in scores.items()}}


def train(tiles: np.ndarray, tile_masks: np.ndarray, val_images: np.ndarray, val_masks: np.ndarray,
          m: ModelSettings, t: TrainSettings, checkpoint_dir, run_id: str, progress: bool = True,
          stop_after_epoch: int | None = None, init_state: dict | None = None) -> tuple[nn.Module, TrainResult]:
    """Train from scratch or from given weights, or resume from ``checkpoint_dir/last.pt`` of the same ``run_id``.

    Per epoch, a checkpoint (model, optimiser, epoch, log so far) is written atomically to
    ``checkpoint_dir/last.pt``; a killed run resumes after the last finished epoch and, on a CPU (where
    deterministic algorithms are switched on for the process), ends as an uninterrupted run does.

    Parameters
    ----------
    tiles : numpy.ndarray
        (n, y, x) or (n, 3, y, x) training tiles, side ``m.tile``.
    tile_masks : numpy.ndarray
        (n, y, x) instance labels of the tiles.
    val_images, val_masks : numpy.ndarray
        Validation slices and labels, as ``tiles`` and ``tile_masks`` (any y, x).
    m, t : ModelSettings, TrainSettings
    checkpoint_dir : str or os.PathLike
    run_id : str
        Resume key (:func:`train_from_files` hashes settings, data and code).
    progress : bool
        Show progress bars.
    stop_after_epoch : int, optional
        End after this epoch (from 0; tests of resuming).
    init_state : dict, optional
        A state dict of the architecture ``m`` to start from (fine-tuning); from scratch when None.

    Returns
    -------
    model : MaskRCNN
        Trained, in training mode.
    result : TrainResult

    Raises
    ------
    FloatingPointError, detachment.io.InputError
        When a training loss is not finite; when ``last.pt`` is not a safe, readable checkpoint.
    """
    device = select_device(t.device)
    model, opt, dtype = _setup(m, t, device, init_state)
    per_epoch = iterations_per_epoch(len(tiles), t)
    total = per_epoch * t.epochs
    ckpt = Path(checkpoint_dir) / "last.pt"
    result = TrainResult()
    start = resume(ckpt, run_id, model, opt, result)
    for epoch in range(start, t.epochs):
        order = epoch_order(len(tiles), t.seed, epoch)
        batches = epoch_batches(tiles, tile_masks, order, per_epoch, t.batch_size, device)
        lrs = [lr_at(epoch * per_epoch + i, total, t) for i in range(per_epoch)]
        losses = train_one_epoch(model, opt, batches, lrs, t, dtype, epoch, progress)
        row = _epoch_row(epoch, per_epoch, total, t, losses, validation_loss(model, val_images, val_masks, device),
                         evaluate(model, val_images, val_masks, device, t))
        result.log_rows.append(row)
        log.info("epoch %d: %s", epoch + 1, {k: round(v, 4) for k, v in row.items()})
        save_checkpoint(ckpt, {"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch,
                               "run_id": run_id, "log": json.dumps(result.log_rows)})
        if stop_after_epoch is not None and epoch >= stop_after_epoch:
            break
    return model, result


def _write_model(model: nn.Module, result: TrainResult, m: ModelSettings, t: TrainSettings, run_id: str,
                 weights_path, meta_path, extra: dict) -> None:
    """The trained weights (state dict) and their JSON metadata (with ``extra``), each written atomically."""
    with io.atomic_output(weights_path) as tmp:
        torch.save(model.state_dict(), tmp)
    meta = {"classes": CLASSES, "run_id": run_id, "epochs": t.epochs, **settings_dict(m, t),
            "device": str(select_device(t.device)), "versions": environment(),
            "final": result.log_rows[-1] if result.log_rows else {}, "resumed_from_epoch": result.resumed_from_epoch, **extra}
    with io.atomic_output(meta_path) as tmp:
        Path(tmp).write_text(json.dumps(meta, indent=2, default=float))


def train_from_files(tiles_path, val_path, weights_path, meta_path, model_cfg: dict, train_cfg: dict,
                     checkpoint_dir, progress: bool = True, scale: dict | None = None,
                     init_from=None) -> list[dict]:
    """Train on an augmented tile file, validate on a split file, write weights and JSON metadata.

    Normalisation and tile size come from the tiles (also when fine-tuning: each data set is normalised by
    its own grey levels). The run id (resume key, in the metadata) hashes the settings, both data files,
    the starting weights and the code of :data:`CODE`, so a changed loop does not resume an old checkpoint.

    Parameters
    ----------
    tiles_path : str or os.PathLike
        HDF5 with ``images`` (n, y, x) or (n, 3, y, x) and ``masks`` (n, y, x).
    val_path : str or os.PathLike
        Validation split file (:func:`detachment.annotations.read_split`).
    weights_path, meta_path : str or os.PathLike
        Outputs: the state dict, and the metadata (settings, run id, versions, last log row).
    model_cfg, train_cfg : dict
        ``model`` and ``train`` config sections (:class:`~.model.ModelSettings` without ``tile``,
        ``image_mean``, ``image_std``; :class:`~.model.TrainSettings`).
    checkpoint_dir : str or os.PathLike
    progress : bool
    scale : dict, optional
        The training scale (:func:`~.scale.training_scale`), stored as the metadata's ``scale``.
    init_from : str or os.PathLike, optional
        Weights of a model of this workflow to fine-tune, of ``model_cfg``'s architecture (metadata beside
        them, :func:`~.reuse.meta_path_for`). From scratch when None.

    Returns
    -------
    list of dict
        The training log rows (:class:`TrainResult`).

    Raises
    ------
    detachment.io.InputError
        When the tiles do not fit ``model.context_slices``, a checkpoint is unsafe or unreadable, or the
        model to fine-tune has another architecture (naming its file and the field).
    """
    from ..annotations import read_model_images, read_split

    tiles, tile_masks, m = _read_tiles(tiles_path, model_cfg)
    _, val_masks, _, _ = read_split(val_path)
    val_images = read_model_images(val_path, m.context_slices)
    t = TrainSettings(**train_cfg)
    init_state, origin = _finetune_start(init_from, model_cfg)
    code = {name: fingerprint(Path(__file__).with_name(name)) for name in CODE}
    run_id = fingerprint({"settings": settings_dict(m, t), "tiles": fingerprint(tiles_path),
                          "val": fingerprint(val_path), "code": code, "init": origin})
    model, result = train(tiles, tile_masks, val_images, val_masks, m, t, checkpoint_dir, run_id, progress,
                          init_state=init_state)
    extra = {"scale": scale, "finetuned_from": origin}
    _write_model(model, result, m, t, run_id, weights_path, meta_path, extra)
    return result.log_rows


def _read_tiles(tiles_path, model_cfg: dict) -> tuple[np.ndarray, np.ndarray, ModelSettings]:
    """The tiles, their labels, and the model settings with the tiles' size and normalisation; InputError
    when the tiles do not fit ``model.context_slices``."""
    import h5py

    with h5py.File(tiles_path, "r") as f:
        tiles, tile_masks = f["images"][...], f["masks"][...]
    m = ModelSettings(**model_cfg, tile=int(tiles.shape[-1]), image_mean=float(tiles.mean()),
                      image_std=float(tiles.std()) or 1.0)
    if (tiles.ndim == 4) != bool(m.context_slices):
        raise io.InputError(f"{tiles_path}: tiles of shape {tiles.shape[1:]} do not fit model.context_slices "
                            f"{m.context_slices}; rerun the augment rule")
    return tiles, tile_masks, m


def _finetune_start(init_from, model_cfg: dict) -> tuple[dict | None, dict | None]:
    """The state dict to fine-tune from and its provenance (path, fingerprint, its run id), or Nones."""
    if init_from is None:
        return None, None
    from .predict import load_model
    from .reuse import check_model_meta, meta_path_for

    check_model_meta(meta_path_for(init_from), expect_model=model_cfg)
    model, meta = load_model(init_from, meta_path_for(init_from), "cpu")
    log.info("fine-tuning from %s (run %s)", init_from, meta.get("run_id"))
    return model.state_dict(), {"weights": str(init_from), "fingerprint": fingerprint(init_from),
                                "run_id": meta.get("run_id")}
