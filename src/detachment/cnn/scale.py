"""The scale a model was trained at, and rescaling slices of other volumes to it for inference.

A Mask R-CNN trained on particles of some size in pixels finds particles of about that size. The model's
metadata records its training scale (:func:`training_scale`): the in-plane voxel size of the labelled
volumes (µm, y x) and the median equivalent diameter of the training instances (px). Inference on a
volume of another voxel size resizes each slice by :func:`scale_factor` (volume voxel size / training
voxel size, per in-plane axis) so particles have their training size in pixels, predicts, and resizes the
mask probabilities back before they are thresholded (:func:`restore_prediction`).
"""

from __future__ import annotations

import logging

import h5py
import numpy as np
import torch
import torch.nn.functional as F

from .. import io

log = logging.getLogger(__name__)

#: the rescale factors inference accepts, per axis: beyond them a resampled slice carries too little
#: (down) or only interpolated (up) detail to be segmented as the training data were
RESCALE_RANGE = (0.25, 4.0)
#: ``infer.rescale``: by voxel size, by voxel size and the particles' measured size, or never
RESCALE_MODES = ("auto", "particle_size", "off")
#: relative difference of voxel sizes below which slices are not resampled
RESCALE_TOLERANCE = 1e-3
#: relative difference between the measured and the training particle size below which slices are not
#: resampled for size: the training tiles were zoomed by 0.8-1.25, so the model has seen that spread, and
#: the probe's median moves by up to ~10 % between cells of one kind (cracks split sections)
SIZE_TOLERANCE = 0.2
#: size factors are rounded to this step, so every slab job of a volume gets the same one
SIZE_STEP = 0.05
#: a size factor this close to the tolerance is warned about: the probe's median moves by about as much
#: between cells, so the decision could differ between cells of one study
MARGINAL_BAND = 0.05
#: slices the particle size is measured on, and the fewest particle sections it needs
PROBE_SLICES = 8
MIN_PROBE_SECTIONS = 20


def training_scale(split_path, voxel_sizes: dict) -> dict:
    """The training scale of a model: in-plane voxel size and median instance diameter of its training slices.

    Parameters
    ----------
    split_path : str or os.PathLike
        The training split file (:func:`detachment.annotations.write_split`: ``/masks`` (n, y, x)
        instances, ``/sample`` (n,) names), not augmented.
    voxel_sizes : dict
        Per sample, its voxel size (z, y, x) in µm.

    Returns
    -------
    dict
        ``voxel_size_um``: [y, x] µm, the median over the training slices of their sample's voxel size;
        ``particle_diameter_px``: the median equivalent diameter 2 (area / π)^½ of the instances
        (particle sections) on the training slices, px; ``n_instances``.

    Raises
    ------
    KeyError
        When a slice's sample has no voxel size in ``voxel_sizes``.
    """
    with h5py.File(split_path, "r") as f:
        masks = f["masks"][...]
        samples = [s.decode() if isinstance(s, bytes) else str(s) for s in f["sample"][...]]
    per_slice = np.array([io.parse_voxel_size(voxel_sizes[s], f"sample '{s}'")[1:] for s in samples])
    voxel = np.median(per_slice, axis=0)
    if np.any(np.abs(per_slice - voxel) > RESCALE_TOLERANCE * voxel):
        log.warning("labelled samples differ in voxel size (%s µm); the model records the median %s µm",
                    sorted({tuple(v) for v in per_slice.tolist()}), voxel.tolist())
    diameters = section_diameters(masks)
    diameter = float(np.median(diameters)) if len(diameters) else float("nan")
    return {"voxel_size_um": [float(v) for v in voxel], "particle_diameter_px": diameter,
            "n_instances": int(len(diameters))}


def scale_factor(voxel_size_um, meta: dict, mode: str = "auto", where: str = "volume") -> tuple[float, float]:
    """The (y, x) resize factor of a volume's slices for a model: volume voxel size / training voxel size.

    Parameters
    ----------
    voxel_size_um : sequence of float
        The volume's voxel size (z, y, x), µm.
    meta : dict
        The model metadata; its ``scale.voxel_size_um`` ([y, x] µm) is the training voxel size.
    mode : str or bool
        ``auto`` or ``particle_size``: rescale by voxel size (``particle_size`` then corrects the factor by
        :func:`size_factor`); ``off`` (or False, as YAML reads an unquoted ``off``): never (factor 1).
    where : str
        The volume, for messages.

    Returns
    -------
    tuple of float
        (fy, fx): a slice of (h, w) px is resized to (h fy, w fx). 1 where ``mode`` is ``off``, where the
        metadata has no training scale (logged) and within :data:`RESCALE_TOLERANCE` of 1.

    Raises
    ------
    detachment.io.InputError
        When a factor is outside :data:`RESCALE_RANGE`, naming the volume, both voxel sizes and the way out.
    ValueError
        For a ``mode`` not in :data:`RESCALE_MODES`.
    """
    mode = "off" if mode is False else mode
    if mode not in RESCALE_MODES:
        raise ValueError(f"infer.rescale: {mode!r} is not one of {', '.join(RESCALE_MODES)}")
    trained = (meta.get("scale") or {}).get("voxel_size_um")
    if mode == "off":
        return 1.0, 1.0
    if trained is None:
        log.warning("%s: the model's metadata has no training voxel size (field 'scale'; a model trained "
                    "before it was recorded): slices are not rescaled", where)
        return 1.0, 1.0
    trained = np.broadcast_to(np.asarray(trained, float), (2,))
    factor = np.asarray(voxel_size_um, float)[-2:] / trained
    if np.all(np.abs(factor - 1) <= RESCALE_TOLERANCE):
        return 1.0, 1.0
    lo, hi = RESCALE_RANGE
    if np.any(factor < lo) or np.any(factor > hi):
        raise io.InputError(
            f"{where}: voxel size {list(voxel_size_um)[-2:]} µm (y, x) against the model's training voxel size "
            f"{trained.tolist()} µm (field 'scale.voxel_size_um') needs a rescale factor {factor.round(3).tolist()}, "
            f"outside [{lo}, {hi}]; train or fine-tune a model on data of this voxel size, or set "
            f"infer.rescale: off to segment at native scale")
    return float(factor[0]), float(factor[1])


def scaled_shape(shape: tuple[int, int], factor: tuple[float, float]) -> tuple[int, int]:
    """(h, w) of a slice resized by ``factor``, rounded, at least 1 px.

    Parameters
    ----------
    shape : tuple of int
        (h, w) px.
    factor : tuple of float
        (fy, fx).

    Returns
    -------
    tuple of int
    """
    return tuple(max(1, int(round(s * f))) for s, f in zip(shape, factor))


def resize_images(batch: list[torch.Tensor], shape: tuple[int, int]) -> list[torch.Tensor]:
    """Resize (c, h, w) images to ``shape`` (bilinear; antialiased where it shrinks them).

    Parameters
    ----------
    batch : list of torch.Tensor
        (c, h, w) float images of one size.
    shape : tuple of int
        Target (h, w), px.

    Returns
    -------
    list of torch.Tensor
        (c, shape[0], shape[1]) images.
    """
    x = torch.stack(batch)
    if tuple(x.shape[-2:]) == tuple(shape):
        return batch
    shrink = shape[0] < x.shape[-2] or shape[1] < x.shape[-1]
    x = F.interpolate(x, size=tuple(shape), mode="bilinear", align_corners=False, antialias=shrink)
    return list(x)


def restore_prediction(pred: dict[str, torch.Tensor], shape: tuple[int, int]) -> dict[str, torch.Tensor]:
    """A prediction made on a resized slice, mapped back to the slice's own grid.

    Mask probabilities are resized bilinearly (then thresholded by the caller, so a mask keeps its outline
    rather than the blocks of a resized binary mask); boxes are scaled; scores and labels are kept.

    Parameters
    ----------
    pred : dict
        ``scores`` (n,), ``masks`` (n, 1, h', w') probabilities, optionally ``boxes`` (n, 4) x0, y0, x1, y1
        px and ``labels``.
    shape : tuple of int
        The slice's (h, w), px.

    Returns
    -------
    dict
        The same keys; ``masks`` (n, 1, h, w), ``boxes`` in the slice's px.
    """
    masks = pred["masks"]
    hs, ws = masks.shape[-2:]
    if (hs, ws) == tuple(shape):
        return pred
    out = dict(pred)
    if len(masks):
        out["masks"] = F.interpolate(masks.float(), size=tuple(shape), mode="bilinear", align_corners=False)
    else:
        out["masks"] = masks.new_zeros((0, 1) + tuple(shape))
    if "boxes" in pred:
        sx, sy = shape[1] / ws, shape[0] / hs
        out["boxes"] = pred["boxes"] * pred["boxes"].new_tensor([sx, sy, sx, sy])
    return out


def probe_slices(volume, n: int = PROBE_SLICES) -> list[int]:
    """Slices to measure the particle size on: where the volume's brightest voxels (NMC) lie.

    The per-slice count of voxels above the volume's 97.5th grey-level percentile (sampled on every
    fourth voxel in y and x) is taken as a distribution over z; the slices at its (k + 0.5) / n quantiles
    are returned, distinct and increasing.

    Parameters
    ----------
    volume : h5py.Dataset or numpy.ndarray
        (z, y, x) grey levels.
    n : int, default PROBE_SLICES
        Slices wanted.

    Returns
    -------
    list of int
    """
    sample = np.asarray(volume[:, ::4, ::4], np.float32)
    bright = (sample > np.percentile(sample, 97.5)).sum(axis=(1, 2)).astype(float)
    if bright.sum() == 0:
        bright[:] = 1.0
    cum = np.cumsum(bright) / bright.sum()
    zs = np.searchsorted(cum, (np.arange(n) + 0.5) / n)
    return sorted({int(min(z, len(cum) - 1)) for z in zs})


def section_diameters(labels: np.ndarray) -> np.ndarray:
    """Equivalent diameters 2 (area / π)^½ (px) of the instances of (n, y, x) label slices, ids per slice."""
    areas = np.concatenate([np.bincount(s.ravel())[1:] for s in labels]) if len(labels) else np.zeros(0)
    areas = areas[areas > 0]
    return 2 * np.sqrt(areas / np.pi)


def size_factor(seen_px: float, n_sections: int, meta: dict, where: str = "volume") -> float:
    """Further resize factor that brings a volume's particles to the size the model was trained on.

    ``seen_px`` is the median section diameter the model finds on the volume's probe slices
    (:func:`probe_slices`), in px as the model saw them; the metadata's ``scale.probe_diameter_px`` is the
    same measurement on the training volumes. Their ratio is the factor, rounded to :data:`SIZE_STEP`;
    1 within :data:`SIZE_TOLERANCE`, with fewer than :data:`MIN_PROBE_SECTIONS` sections, or for a model
    without the training measurement (logged).

    Parameters
    ----------
    seen_px : float
        Median equivalent diameter of the probe slices' sections, px at the model's input scale.
    n_sections : int
        Sections it was measured on.
    meta : dict
        The model metadata.
    where : str
        The volume, for messages.

    Returns
    -------
    float
        Multiplies both axes' voxel factor.
    """
    trained = (meta.get("scale") or {}).get("probe_diameter_px")
    if trained is None or not np.isfinite(trained) or n_sections < MIN_PROBE_SECTIONS:
        log.warning("%s: particle size not compared (%d sections on the probe slices; training measurement "
                    "%s px, field 'scale.probe_diameter_px'): slices rescaled by voxel size only", where,
                    n_sections, trained)
        return 1.0
    factor = float(trained) / seen_px
    log.info("%s: particle sections %.1f px as the model sees them (median of %d on the probe slices), %.1f px "
             "on the training volumes: size factor %.3f", where, seen_px, n_sections, trained, factor)
    if abs(abs(factor - 1) - SIZE_TOLERANCE) <= MARGINAL_BAND:
        log.warning("%s: the size factor %.3f lies within %.2f of the tolerance %.2f: cells of one study with "
                    "particles like these may be resized differently; compare the factors in the infer_slab logs "
                    "and set infer.rescale: auto for all of them where they differ", where, factor, MARGINAL_BAND,
                    SIZE_TOLERANCE)
    if abs(factor - 1) <= SIZE_TOLERANCE:
        return 1.0
    return float(round(factor / SIZE_STEP) * SIZE_STEP)
