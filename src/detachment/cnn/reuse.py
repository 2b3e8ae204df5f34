"""Reusing a model written by this workflow: its metadata file, the checks on loading, fine-tuning settings.

A model is two files side by side: the weights ``maskrcnn.pt`` (a state dict of tensors, loaded with
``weights_only=True``) and the metadata ``maskrcnn.json`` (settings, training scale, versions). Config
``model.checkpoint`` names the weights; :func:`meta_path_for` finds the metadata beside them.
:func:`check_model_meta` refuses metadata that does not describe a model this code can rebuild, or whose
architecture differs from the one a fine-tuning run configures, naming the file and the field.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import fields
from pathlib import Path

from .. import io
from .settings import CLASSES, ModelSettings

log = logging.getLogger(__name__)

#: ``model`` config keys about reusing a model; the rest of the section is :class:`~.model.ModelSettings`
REUSE_KEYS = ("checkpoint", "finetune", "finetune_epochs", "finetune_lr_scale")
#: :class:`~.model.ModelSettings` fields that shape the network or the meaning of its inputs: a fine-tuning
#: run must configure them as the checkpoint has them
ARCH_FIELDS = ("backbone", "fpn_channels", "box_head_width", "mask_head_width", "anchor_sizes", "context_slices")
#: versions compared on loading (a difference is logged: state dicts of these versions load across releases)
VERSION_KEYS = ("torch", "torchvision", "detachment")


def architecture_config(model_cfg: dict) -> dict:
    """The ``model`` config section without the reuse keys (:data:`REUSE_KEYS`).

    Parameters
    ----------
    model_cfg : dict
        The ``model`` config section.

    Returns
    -------
    dict
        The keys of :class:`~.model.ModelSettings` (without ``tile``, ``image_mean``, ``image_std``).
    """
    return {k: v for k, v in model_cfg.items() if k not in REUSE_KEYS}


def meta_path_for(weights_path) -> Path:
    """The metadata file of a weights file: same folder and stem, suffix ``.json``.

    Parameters
    ----------
    weights_path : str or os.PathLike
        E.g. ``results/model/maskrcnn.pt``.

    Returns
    -------
    pathlib.Path
        E.g. ``results/model/maskrcnn.json``.
    """
    return Path(weights_path).with_suffix(".json")


def _read_meta(meta_path: Path) -> dict:
    """The JSON object of a metadata file; InputError naming the file when missing or not an object."""
    if not meta_path.is_file():
        raise io.InputError(f"{meta_path}: model metadata not found; a model is its weights (.pt) and the "
                            f"metadata (.json) written beside them: copy both")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as e:
        raise io.InputError(f"{meta_path}: model metadata is not readable JSON ({e})") from None
    if not isinstance(meta, dict):
        raise io.InputError(f"{meta_path}: model metadata is not a JSON object")
    return meta


def _check_settings(meta: dict, where: Path) -> ModelSettings:
    """The :class:`~.model.ModelSettings` of ``meta['model']``; InputError naming the field otherwise."""
    if "classes" in meta and meta["classes"] != CLASSES:
        raise io.InputError(f"{where}: field 'classes' is {meta.get('classes')!r}; this workflow's models "
                            f"detect {CLASSES}")
    model = meta.get("model")
    if not isinstance(model, dict):
        raise io.InputError(f"{where}: field 'model' (the architecture settings) is missing or not an object")
    known = {f.name for f in fields(ModelSettings)}
    for key in model:
        if key not in known:
            raise io.InputError(f"{where}: field 'model.{key}' is not a model setting of this version "
                                f"(known: {sorted(known)})")
    try:
        return ModelSettings(**model)
    except (TypeError, ValueError) as e:
        raise io.InputError(f"{where}: field {e}") from None


def _check_scale(meta: dict, where: Path) -> None:
    """Refuse a ``scale`` entry whose voxel size or particle diameter is not positive and finite."""
    scale = meta.get("scale")
    if scale is None:
        return
    if not isinstance(scale, dict):
        raise io.InputError(f"{where}: field 'scale' is not an object")
    for key in ("voxel_size_um", "particle_diameter_px"):
        values = scale.get(key)
        values = values if isinstance(values, list) else [values]
        if not values or not all(isinstance(v, (int, float)) and math.isfinite(v) and v > 0 for v in values):
            raise io.InputError(f"{where}: field 'scale.{key}' is {scale.get(key)!r}; expected positive "
                                f"finite number(s)")


def check_model_meta(meta_path, expect_model: dict | None = None) -> dict:
    """Read and check a model's metadata: classes, architecture settings, training scale, versions.

    Parameters
    ----------
    meta_path : str or os.PathLike
        The metadata JSON (:func:`meta_path_for`).
    expect_model : dict, optional
        A configured ``model`` section (reuse keys allowed) whose :data:`ARCH_FIELDS` must equal the
        checkpoint's: a fine-tuning run keeps the checkpoint's architecture.

    Returns
    -------
    dict
        The metadata.

    Raises
    ------
    detachment.io.InputError
        Naming the file and the field: a missing or unreadable file, other ``classes``, an unknown or
        invalid ``model`` setting, a non-positive ``scale`` entry, or an architecture field that differs
        from ``expect_model``.
    """
    meta_path = Path(meta_path)
    meta = _read_meta(meta_path)
    settings = _check_settings(meta, meta_path)
    _check_scale(meta, meta_path)
    for key in ARCH_FIELDS if expect_model is not None else ():
        want = expect_model.get(key, getattr(ModelSettings(), key))
        have = getattr(settings, key)
        if (tuple(want) if isinstance(want, (list, tuple)) else want) != have:
            raise io.InputError(
                f"{meta_path}: field 'model.{key}' is {_plain(have)!r} but the config sets model.{key}: "
                f"{_plain(want)!r}; fine-tuning keeps the checkpoint's architecture, so set model.{key} to "
                f"{_plain(have)!r}")
    _log_versions(meta, meta_path)
    return meta


def _plain(value):
    """A tuple as a list (as the config and the JSON write it)."""
    return list(value) if isinstance(value, tuple) else value


def _log_versions(meta: dict, where: Path) -> None:
    """Log the versions of :data:`VERSION_KEYS` that differ from this environment's."""
    from .checkpoint import environment

    here, there = environment(), meta.get("versions") or {}
    for key in VERSION_KEYS:
        if key in there and there[key] != here.get(key):
            log.warning("%s: written with %s %s, loaded with %s %s", where, key, there[key], key, here.get(key))


def copy_model(weights_path, out_weights, out_meta) -> dict:
    """Check a model written by this workflow and copy it, with its metadata, to the run's model files.

    The weights are loaded (``weights_only=True``) into the architecture their metadata describes before
    they are copied, so a model that cannot be used stops here. The copied metadata gains ``reused_from``
    (the source path and the weights' fingerprint). Both files are written atomically.

    Parameters
    ----------
    weights_path : str or os.PathLike
        The model's weights; the metadata is beside them (:func:`meta_path_for`).
    out_weights, out_meta : str or os.PathLike
        The copies (``results/model/maskrcnn.pt`` and ``.json``).

    Returns
    -------
    dict
        The metadata written.

    Raises
    ------
    detachment.io.InputError
        When the metadata or weights are refused (:func:`check_model_meta`,
        :func:`detachment.cnn.predict.load_model`), naming the file and the field or tensor.
    """
    import shutil

    from .checkpoint import fingerprint
    from .predict import load_model

    _, meta = load_model(weights_path, meta_path_for(weights_path), "cpu")
    meta = {**meta, "reused_from": {"weights": str(weights_path), "fingerprint": fingerprint(weights_path)}}
    with io.atomic_output(out_weights) as tmp:
        shutil.copyfile(weights_path, tmp)
    with io.atomic_output(out_meta) as tmp:
        Path(tmp).write_text(json.dumps(meta, indent=2, default=float))
    log.info("model %s (run %s) reused as is", weights_path, meta.get("run_id"))
    return meta
