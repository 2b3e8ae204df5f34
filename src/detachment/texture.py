"""A phase's grey-level texture: how far its voxels' deviations are correlated, measured and drawn.

Inside a phase, a reconstruction's grey levels are not white noise: NMC as the paper images it varies over a
voxel or more, and a reconstruction's own noise is correlated by its filters. Each phase's texture is
described as a white part plus a smooth part, white noise filtered by a Gaussian of ``scale_vox`` voxels,
that carries ``smooth_share`` of the variance. Both are fitted to the variogram at lags 1 and 2 of the
phase's interior voxels (:func:`measure_textures`); the variogram takes differences of neighbours, so a slow
shading of the grey levels adds little to it (where shading widens the phase's spread, the excess reads as a
smooth part of a few voxels). :func:`textured_noise` draws noise with those textures, as
:mod:`detachment.self_consistency` renders a phase map.

Main entry points: :func:`measure_textures`, :func:`fit_texture`, :func:`textured_noise`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

#: Lag-1 correlation below which a phase's texture is taken as white.
MIN_CORRELATION = 0.05
#: Range of the smooth part's Gaussian scale, voxels.
SCALE_RANGE = (0.3, 4.0)
#: Fewest interior voxel pairs per lag for a texture to be measured; fewer: white.
MIN_PAIRS = 2000
#: scipy.ndimage.gaussian_filter's default truncation, in standard deviations.
TRUNCATE = 4.0


@dataclass(frozen=True)
class PhaseTexture:
    """One phase's texture.

    Attributes
    ----------
    smooth_share : float
        Share (0-1) of the phase's grey-level variance in the smooth part; 0: white noise.
    scale_vox : float
        Standard deviation (voxels) of the Gaussian that filters white noise into the smooth part; 0 where
        ``smooth_share`` is 0.
    """

    smooth_share: float = 0.0
    scale_vox: float = 0.0


WHITE = PhaseTexture()


def gaussian_kernel(scale: float) -> np.ndarray:
    """The sampled, normalised 1D Gaussian of standard deviation ``scale`` voxels that
    ``scipy.ndimage.gaussian_filter`` applies (radius ``int(4 scale + 0.5)``)."""
    radius = int(TRUNCATE * float(scale) + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    g = np.exp(-0.5 * (x / scale) ** 2)
    return g / g.sum()


def lag_correlation(scale: float, lag: int) -> float:
    """Correlation at ``lag`` voxels (along an axis) of white noise filtered by :func:`gaussian_kernel`."""
    g = gaussian_kernel(scale)
    auto = np.correlate(g, g, mode="full")
    centre = len(g) - 1
    return float(auto[centre + lag] / auto[centre]) if lag < len(g) else 0.0


def fit_texture(gamma1: float, gamma2: float, spread: float) -> PhaseTexture:
    """The texture whose variogram at lags 1 and 2 is ``gamma1``, ``gamma2`` for a phase of standard
    deviation ``spread`` (all grey levels, the variograms in grey levels squared).

    The lag-k correlation is ``1 - gamma_k / spread²``; the ratio of lags 2 and 1 fixes the smooth part's
    scale (it grows with the scale; clipped to :data:`SCALE_RANGE`), the lag-1 correlation its share
    (clipped to 0-1). White where the lag-1 correlation is below :data:`MIN_CORRELATION` or any input is
    not finite and positive.
    """
    if not all(np.isfinite(v) and v > 0 for v in (gamma1, gamma2, spread)):
        return WHITE
    rho1, rho2 = 1.0 - gamma1 / spread**2, 1.0 - gamma2 / spread**2
    if rho1 < MIN_CORRELATION:
        return WHITE
    ratio = max(rho2, 0.0) / rho1
    lo, hi = SCALE_RANGE
    for _ in range(40):  # bisection: lag_correlation(s, 2) / lag_correlation(s, 1) rises with s
        mid = 0.5 * (lo + hi)
        if lag_correlation(mid, 2) / lag_correlation(mid, 1) < ratio:
            lo = mid
        else:
            hi = mid
    scale = 0.5 * (lo + hi)
    return PhaseTexture(float(min(rho1 / lag_correlation(scale, 1), 1.0)), float(scale))


def variogram(grey: np.ndarray, mask: np.ndarray, lag: int, chunk: int = 16) -> tuple[float, int]:
    """Half the mean squared difference of voxel pairs ``lag`` apart along any axis, both in ``mask``;
    and the number of such pairs. (z, y, x) arrays, read ``chunk`` slices at a time (the differences are
    summed in float64 without holding them for the whole volume); NaN without pairs."""
    total, count = 0.0, 0
    depth = grey.shape[0]
    for z0 in range(0, depth, chunk):
        z1 = min(z0 + chunk, depth)
        # pairs that start in slices z0..z1-1: along z they reach lag slices further
        g = grey[z0:min(z1 + lag, depth)]
        m = mask[z0:min(z1 + lag, depth)]
        for axis in range(3):
            if g.shape[axis] <= lag:
                continue
            head, tail = [slice(None)] * 3, [slice(None)] * 3
            head[axis], tail[axis] = slice(None, -lag), slice(lag, None)
            if axis:  # in-plane pairs of the chunk's own slices only
                head[0] = tail[0] = slice(0, z1 - z0)
            else:
                head[0] = slice(0, min(z1 - z0, g.shape[0] - lag))
                tail[0] = slice(lag, lag + head[0].stop)
            both = m[tuple(head)] & m[tuple(tail)]
            d = g[tuple(head)][both].astype(np.float64) - g[tuple(tail)][both]
            total += float(np.dot(d, d))
            count += int(d.size)
    return (0.5 * total / count if count else float("nan")), count


def measure_textures(grey: np.ndarray, codes: np.ndarray, spreads: np.ndarray, sigma: float
                     ) -> dict[int, PhaseTexture]:
    """Each phase code's texture (:func:`fit_texture`), measured in its interior.

    Parameters
    ----------
    grey : numpy.ndarray
        (z, y, x) grey levels.
    codes : numpy.ndarray
        (z, y, x) phase codes on the same grid.
    spreads : numpy.ndarray
        Standard deviation of each code's grey levels (indexed by code; ``phase_fwhm.csv`` fwhm / 2.3548).
    sigma : float
        Point-spread σ, voxels: the interior is the phase eroded by ``ceil(2 σ) + 1`` voxels, where the
        blurred edges of other phases have faded.

    Returns
    -------
    dict of int to PhaseTexture
        One entry per code the map holds; :data:`WHITE` where the interior has fewer than
        :data:`MIN_PAIRS` pairs at lag 2.
    """
    depth = int(np.ceil(2 * max(float(sigma), 0.0))) + 1
    out = {}
    for code in np.flatnonzero(np.bincount(np.asarray(codes).ravel())):
        interior = ndimage.binary_erosion(codes == code, iterations=depth)
        g1, _ = variogram(grey, interior, 1)
        g2, n2 = variogram(grey, interior, 2)
        out[int(code)] = fit_texture(g1, g2, float(spreads[code])) if n2 >= MIN_PAIRS else WHITE
    return out


def textured_noise(codes: np.ndarray, spreads: np.ndarray, textures: dict[int, PhaseTexture] | None,
                   seed: int) -> np.ndarray:
    """Zero-mean noise with each code's spread and texture.

    Each code's voxels get ``spread · (sqrt(1 - share) · white + sqrt(share) · smooth)``, the smooth field
    drawn independently per code (white noise filtered by a Gaussian of ``scale_vox``, scaled to unit
    variance by the kernel's norm); codes absent from ``textures`` are white.

    Returns
    -------
    numpy.ndarray
        (z, y, x) float32.
    """
    rng = np.random.default_rng(seed)
    codes = np.asarray(codes)
    spreads = np.asarray(spreads, np.float32)
    textures = textures or {}
    share = np.zeros(len(spreads), np.float32)
    for code, t in textures.items():
        share[code] = t.smooth_share
    noise = rng.standard_normal(codes.shape, dtype=np.float32) * (spreads * np.sqrt(1 - share))[codes]
    for code in sorted(textures):
        t = textures[code]
        if t.smooth_share <= 0:
            continue
        field = rng.standard_normal(codes.shape, dtype=np.float32)
        ndimage.gaussian_filter(field, t.scale_vox, output=field, mode="wrap", truncate=TRUNCATE)  # in place
        norm = float(np.sum(gaussian_kernel(t.scale_vox) ** 2)) ** (codes.ndim / 2)
        inside = codes == code
        noise[inside] += field[inside] * np.float32(spreads[code] * np.sqrt(t.smooth_share) / norm)
    return noise
