"""Activation maps of a trained Mask R-CNN (Supp. Fig. 9a): what the backbone responds to in a slice."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .model import to_tensor
from .predict import native_scale


def activation_map(model: nn.Module, image: np.ndarray, device) -> np.ndarray:
    """L2 norm over channels of the finest FPN level, upsampled to the image.

    Leaves the model in eval mode.

    Parameters
    ----------
    model : MaskRCNN
    image : numpy.ndarray
        (y, x) slice, or (3, y, x) slices z-1, z, z+1.
    device : torch.device or str
        Where ``model`` is.

    Returns
    -------
    numpy.ndarray
        (y, x) float32 activation (arbitrary units, ≥ 0).
    """
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
