"""Augmentation of labelled slices: random crop, flip, rotation, scaling and intensity jitter.

One affine map per tile (scale, rotation by a multiple of 90° plus an arbitrary angle, flip,
translation to a random crop) is applied to the image with linear interpolation and to the instance
mask with nearest neighbour, so instance pixels follow the image exactly. Intensity jitter (gain,
offset, extra Gaussian noise) touches the image only. Deterministic for a seed.

Main entry points: :func:`augment`, :func:`augment_file`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage


@dataclass
class AugmentSettings:
    """``augment`` config section; lengths in pixels, angles in degrees, intensities in grey levels.

    Attributes
    ----------
    copies : int
        Augmented tiles made from each input slice.
    tile : int
        Edge of the square output tiles, in px.
    scale_range : tuple of float
        (low, high) zoom factor, drawn log-uniformly; above 1 magnifies.
    max_angle_deg : float
        Each tile is turned by a random multiple of 90° plus a uniform angle within
        ±min(``max_angle_deg``, 45°); 0 disables rotation (the 90° turns included).
    flip : bool
        Mirror half of the tiles.
    gain_range : tuple of float
        (low, high) multiplicative intensity gain, drawn uniformly.
    offset_range : tuple of float
        (low, high) additive intensity offset in grey levels, drawn uniformly.
    noise_sigma_max : float
        Standard deviation of the added Gaussian noise, in grey levels, is drawn uniformly from
        [0, ``noise_sigma_max``].
    min_instance_area_px : int
        Instances cut by the crop to fewer pixels than this are dropped.
    seed : int
        Seed of the random generator.
    """

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
    """A random map from output-tile coordinates to input-image coordinates.

    Scale, rotation and flip are drawn from ``s``; the tile's centre lands at a uniformly random point of
    the image, at least a quarter tile from its edges (or in the middle of an image too small for that).

    Parameters
    ----------
    rng : numpy.random.Generator
        Random generator.
    shape : tuple of int
        (y, x) shape of the input image, in px.
    s : AugmentSettings
        Ranges of the draws and the tile size.

    Returns
    -------
    numpy.ndarray
        (3, 3) float matrix mapping output-tile (row, col, 1) to input (row, col, 1), in px.
    """
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

    Outside the input, the image takes its median grey level (per channel) and the mask background:
    reflection would mirror particles into the tile and give one id to two mirrored fragments.

    Parameters
    ----------
    image : numpy.ndarray
        (y, x) or (channels, y, x) grey levels; every channel gets the same map.
    mask : numpy.ndarray
        (y, x) integer instance labels, 0 = background.
    m : numpy.ndarray
        (3, 3) map from output (row, col, 1) to input coordinates (:func:`random_affine`).
    tile : int
        Edge of the output tile, in px.

    Returns
    -------
    image : numpy.ndarray
        (tile, tile) or (channels, tile, tile) float32.
    mask : numpy.ndarray
        (tile, tile) instance labels, of ``mask``'s type.
    """
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
    """Random gain, offset and Gaussian noise on an image.

    Parameters
    ----------
    rng : numpy.random.Generator
        Random generator.
    image : numpy.ndarray
        Grey levels, any shape.
    s : AugmentSettings
        Ranges of gain, offset (grey levels) and noise standard deviation (grey levels).

    Returns
    -------
    numpy.ndarray
        ``image * gain + offset + noise``, float32, of ``image``'s shape.
    """
    gain = rng.uniform(*s.gain_range)
    offset = rng.uniform(*s.offset_range)
    noise = rng.uniform(0, s.noise_sigma_max)
    return (image * gain + offset + rng.normal(0, noise, image.shape)).astype(np.float32)


def augment(images: np.ndarray, masks: np.ndarray, s: AugmentSettings) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``s.copies`` augmented tiles per input slice.

    Instances cut by the crop to fewer than ``s.min_instance_area_px`` pixels are dropped and the ids
    made consecutive per tile (:func:`detachment.annotations.relabel_slice`).

    Parameters
    ----------
    images : numpy.ndarray
        (n, y, x) grey levels, or (n, channels, y, x) for a model that sees neighbour slices.
    masks : numpy.ndarray
        (n, y, x) integer instance labels, 0 = background.
    s : AugmentSettings
        Augmentation settings.

    Returns
    -------
    tiles : numpy.ndarray
        (n * copies, [channels,] tile, tile) float32 grey levels.
    tile_masks : numpy.ndarray
        (n * copies, tile, tile) uint16 instance labels, ids 1..k per tile.
    source : numpy.ndarray
        (n * copies,) int64 index of each tile's input slice.
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
    """Augment a split file into a training-tile file, atomically.

    Parameters
    ----------
    train_path : str or os.PathLike
        Split file (``/images``, ``/masks``, ``/context``; :func:`detachment.annotations.write_split`).
    out_path : str or os.PathLike
        File to write: ``/images`` (N, tile, tile) float32, or (N, 3, tile, tile) with the neighbour
        slices as channels; ``/masks`` (N, tile, tile) uint16; ``/source`` (N,) int64 input slice index.
    s : AugmentSettings
        Augmentation settings.
    context_slices : int, default 0
        ``model.context_slices``: 1 to carry the slices z-1 and z+1 as channels.

    Returns
    -------
    int
        Number of tiles written, N = slices × ``s.copies``.
    """
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
