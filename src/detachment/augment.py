"""Augmentation of labelled slices: random crop, flip, rotation, scaling and intensity jitter.

One affine map per tile (scale, rotation by a multiple of 90° plus an arbitrary
angle, flip, translation to a random crop) is applied to the image with linear
interpolation and to the instance mask with nearest neighbour, so instance
pixels follow the image exactly. Intensity jitter (gain, offset, gamma-like
curvature, extra noise) touches the image only. Deterministic for a seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage


@dataclass
class AugmentSettings:
    """``augment`` config section; ``tile`` in pixels, angles in degrees."""

    copies: int = 48
    tile: int = 128
    scale_range: tuple[float, float] = (0.8, 1.25)
    max_angle_deg: float = 180.0
    flip: bool = True
    gain_range: tuple[float, float] = (0.9, 1.1)
    offset_range: tuple[float, float] = (-0.05, 0.05)
    noise_sigma_max: float = 0.02
    min_instance_area_px: int = 12
    seed: int = 0


def random_affine(rng, shape: tuple[int, int], s: AugmentSettings) -> np.ndarray:
    """3x3 matrix mapping output-tile (row, col, 1) to input-image coordinates."""
    scale = np.exp(rng.uniform(*np.log(s.scale_range)))
    angle = np.deg2rad(90 * rng.integers(4) + rng.uniform(-1, 1) * min(s.max_angle_deg, 45.0)) \
        if s.max_angle_deg > 0 else 0.0
    c, si = np.cos(angle), np.sin(angle)
    rot = np.array([[c, -si], [si, c]]) / scale
    if s.flip and rng.random() < 0.5:
        rot = rot @ np.diag([1.0, -1.0])
    half = (s.tile - 1) / 2
    # the tile's centre lands at a random point of the image, at least a quarter tile from its edges
    q = min(s.tile / 4, (min(shape) - 1) / 2)
    centre = np.array([rng.uniform(q, shape[0] - 1 - q), rng.uniform(q, shape[1] - 1 - q)])
    m = np.eye(3)
    m[:2, :2] = rot
    m[:2, 2] = centre - rot @ np.array([half, half])
    return m


def warp_pair(image: np.ndarray, mask: np.ndarray, m: np.ndarray, tile: int) -> tuple[np.ndarray, np.ndarray]:
    """Apply the map ``m`` (output -> input coordinates) to an image (linear) and its mask (nearest).

    ``image`` is (y, x) or (channels, y, x); every channel gets the same map."""
    kw = {"matrix": m[:2, :2], "offset": m[:2, 2], "output_shape": (tile, tile), "mode": "constant"}
    # outside the image: the median grey level and no instance (reflection would mirror
    # particles into the tile and give one id to two mirrored fragments)
    if image.ndim == 3:
        img = np.stack([ndimage.affine_transform(c, order=1, cval=float(np.median(c)), **kw) for c in image])
    else:
        img = ndimage.affine_transform(image, order=1, cval=float(np.median(image)), **kw)
    msk = ndimage.affine_transform(mask, order=0, cval=0, **kw)
    return img.astype(np.float32), msk


def jitter_intensity(rng, image: np.ndarray, s: AugmentSettings) -> np.ndarray:
    gain = rng.uniform(*s.gain_range)
    offset = rng.uniform(*s.offset_range)
    noise = rng.uniform(0, s.noise_sigma_max)
    return (image * gain + offset + rng.normal(0, noise, image.shape)).astype(np.float32)


def augment(images: np.ndarray, masks: np.ndarray, s: AugmentSettings) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``s.copies`` augmented tiles per input slice.

    ``images``: (n, y, x), or (n, channels, y, x) for a model that sees neighbour slices.
    Returns (tiles (n, [channels,] tile, tile) float32, masks (n, tile, tile) uint16 with
    consecutive ids per tile, source index (n,)). Instances cut to fewer than
    ``min_instance_area_px`` pixels by the crop are dropped.
    """
    from .annotations import relabel_slice

    rng = np.random.default_rng(s.seed)
    n = len(images) * s.copies
    out_img = np.empty((n,) + images.shape[1:-2] + (s.tile, s.tile), np.float32)
    out_msk = np.empty((n, s.tile, s.tile), np.uint16)
    source = np.empty(n, np.int64)
    k = 0
    for i in range(len(images)):
        for _ in range(s.copies):
            m = random_affine(rng, images[i].shape[-2:], s)
            img, msk = warp_pair(images[i], masks[i], m, s.tile)
            out_img[k] = jitter_intensity(rng, img, s)
            out_msk[k] = relabel_slice(msk, s.min_instance_area_px)
            source[k] = i
            k += 1
    return out_img, out_msk, source


def augment_file(train_path, out_path, s: AugmentSettings, context_slices: int = 0) -> int:
    """Augment a split file (``/images``, ``/masks``) into ``out_path`` (``/images``, ``/masks``, ``/source``);
    with ``context_slices`` the tiles carry the neighbour slices as channels (n, 3, tile, tile)."""
    import h5py

    from . import io
    from .annotations import read_model_images, read_split

    _, masks, _, _ = read_split(train_path)
    images = read_model_images(train_path, context_slices)
    tiles, tile_masks, source = augment(images, masks, s)
    with io.atomic_output(out_path) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("images", data=tiles, chunks=(1,) + tiles.shape[1:])
        f.create_dataset("masks", data=tile_masks, chunks=(1, s.tile, s.tile), compression="gzip",
                         compression_opts=1)
        f.create_dataset("source", data=source)
    return len(tiles)
