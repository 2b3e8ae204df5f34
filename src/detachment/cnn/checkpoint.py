"""Checkpoints: atomic saving, safe loading (``weights_only=True``: never executes a pickle), run fingerprints.

A checkpoint is a dict of state dicts and plain values; anything else is refused with a message naming
the file.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from pathlib import Path

import numpy as np
import torch

from .. import io


def fingerprint(obj) -> str:
    """Short SHA-256 of a file's bytes, or of a JSON-serialisable object.

    Parameters
    ----------
    obj : str, os.PathLike or JSON-serialisable
        A path of an existing file (its bytes are hashed), or a value (its sorted-key JSON is hashed;
        values JSON cannot hold are hashed as ``str``).

    Returns
    -------
    str
        The first 16 hex digits.
    """
    h = hashlib.sha256()
    if isinstance(obj, (str, os.PathLike)) and Path(obj).is_file():
        with open(obj, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    else:
        h.update(json.dumps(obj, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def save_checkpoint(path, state: dict) -> None:
    """Atomic ``torch.save``: a reader sees the old file or the complete new one.

    Parameters
    ----------
    path : str or os.PathLike
        The checkpoint file.
    state : dict
        State dicts and plain values (what :func:`load_checkpoint` accepts).
    """
    with io.atomic_output(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path) -> dict:
    """Load a checkpoint safely, onto the CPU (``weights_only=True``).

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    dict
        What was saved (a state dict, or a dict of them and plain values).

    Raises
    ------
    detachment.io.InputError
        When the file is missing, unreadable, or holds objects other than tensors and plain values
        (possibly a malicious pickle); the message names the file.
    """
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


def environment() -> dict:
    """Versions stored in the model metadata.

    Returns
    -------
    dict
        ``torch``, ``torchvision``, ``numpy``, ``python`` and ``detachment`` (this package; ``unknown``
        where it is not installed) version strings.
    """
    from importlib import metadata

    import torchvision

    try:
        package = metadata.version("detachment")
    except metadata.PackageNotFoundError:
        package = "unknown"
    return {"torch": torch.__version__, "torchvision": torchvision.__version__, "numpy": np.__version__,
            "python": platform.python_version(), "detachment": package}
