"""Ring artefacts of the reconstruction, measured on the volume.

A detector pixel that answers a little too high or too low leaves, in every slice, a ring about the rotation
axis: an offset that depends on the radius alone and is the same along the axis. Taken as the median over
the slices and then averaged over each radius, the particles and pores cancel and the rings stay. The volume's two halves along
z hold different particles but the same rings, so the product of their two radial profiles keeps what is
common to both (the rings) and averages what is not (structure, noise) towards zero: its mean is the rings'
mean square, read without a noise floor to subtract.

The rotation axis is taken to run along z through the slices' centre (a volume reconstructed as a whole, or
cropped about its centre); rings about another centre are not measured. The measure stops the phase map
(``phase_qc.csv`` ``ring_ratio``) rather than correcting it: remove rings in the reconstruction.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

#: Radial bin width (voxels) of the profiles.
BIN_VOX = 0.5
#: Fewest pixels a radial bin must hold to enter the product (the centre's bins are a few pixels).
MIN_BIN_PIXELS = 20
#: Most slices per half the median is taken over (evenly spread): bounds the memory on large volumes.
MAX_SLICES = 32
#: σ (voxels) of the in-plane smoothing subtracted from the mean slices: rings are narrower, the phases'
#: large-scale layout (the electrolyte's column, the shading) is not.
HIGH_PASS_SIGMA_VOX = 3.0


@dataclass(frozen=True)
class Rings:
    """Ring artefacts read on a volume.

    Attributes
    ----------
    rms : float
        Root mean square (grey levels) of the ring offsets the two halves share, over the radial bins
        (0 where their profiles do not agree at all).
    correlation : float
        Pearson r of the two halves' radial profiles: near 0 without rings, near 1 where they dominate.
    contrast : float
        CBD's grey level less the electrolyte's, grey levels (given).
    """

    rms: float
    correlation: float
    contrast: float

    @property
    def ratio(self) -> float:
        """``rms`` over ``contrast``; NaN where the contrast is not > 0."""
        if not (np.isfinite(self.contrast) and self.contrast > 0):
            return float("nan")
        return float(self.rms / self.contrast)


def radial_profile(image: np.ndarray, step: float = BIN_VOX) -> tuple[np.ndarray, np.ndarray]:
    """Mean of ``image`` less its smoothing (σ :data:`HIGH_PASS_SIGMA_VOX`) in rings of width ``step`` about
    the (y, x) centre ``((Y - 1) / 2, (X - 1) / 2)``.

    Returns
    -------
    profile, pixels : numpy.ndarray
        Per radial bin (``round(r / step)``), the mean and the number of pixels.
    """
    Y, X = image.shape
    yy, xx = np.mgrid[0:Y, 0:X]
    bins = np.round(np.hypot(yy - (Y - 1) / 2, xx - (X - 1) / 2) / step).astype(np.int64).ravel()
    high = (image - ndimage.gaussian_filter(image, HIGH_PASS_SIGMA_VOX)).ravel()
    pixels = np.bincount(bins)
    return np.bincount(bins, high) / np.maximum(pixels, 1), pixels


def measure(volume: np.ndarray, contrast: float) -> Rings:
    """:class:`Rings` of a (z, y, x) volume: the radial profiles of the median slice of each half along z
    (NaN with fewer than two slices).

    The median over the slices, not the mean: a particle that spans many slices moves a mean but not a median,
    and so shares less with the other half.

    Parameters
    ----------
    volume : array_like
        (z, y, x) grey levels (an h5py dataset is read slice by slice, at most :data:`MAX_SLICES` per half).
    contrast : float
        CBD's grey level less the electrolyte's (:func:`detachment.shading.contrast_from_fwhm`).
    """
    Z = volume.shape[0]
    if Z < 2:  # no two halves to compare
        return Rings(float("nan"), float("nan"), float(contrast))
    medians = [_median_slice(volume, 0, Z // 2), _median_slice(volume, Z // 2, Z)]
    (p1, pixels), (p2, _) = (radial_profile(m) for m in medians)
    ok = pixels >= MIN_BIN_PIXELS
    common = float(np.mean(p1[ok] * p2[ok]))
    r = float(np.corrcoef(p1[ok], p2[ok])[0, 1]) if ok.sum() > 2 else float("nan")
    return Rings(float(np.sqrt(max(common, 0.0))), r, float(contrast))


def _median_slice(volume, z0: int, z1: int) -> np.ndarray:
    """Median (float64) over at most :data:`MAX_SLICES` slices spread evenly over ``z0:z1`` (memory: that
    many float32 slices, 134 MB at 1024 x 1024)."""
    zs = np.unique(np.linspace(z0, z1 - 1, min(MAX_SLICES, z1 - z0)).round().astype(int))
    return np.median(np.stack([np.asarray(volume[int(z)], np.float32) for z in zs]), axis=0).astype(np.float64)


def measure_file(volume_path, contrast: float) -> Rings:
    """:func:`measure` on the ``/volume`` of ``volume_path``."""
    import h5py

    from . import io

    with h5py.File(volume_path, "r") as f:
        return measure(f[io.VOLUME_DATASET], contrast)
