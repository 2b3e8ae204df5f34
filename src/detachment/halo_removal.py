"""Edge halos taken out of the grey levels before the phases are read from them.

Phase-contrast imaging leaves every edge overshooting (:mod:`detachment.edge_halo`: a Zernike ring's halo, a
propagation-based reconstruction's fringes, a sharpening filter). Here it is modelled as an unsharp mask acting
on the blurred object, ``v = (1 + a) u - a G_h u`` with ``G_h`` a Gaussian of ``h`` voxels, and undone with
its exact inverse, ``u = v / ((1 + a) - a Ĝ_h)`` in Fourier space. That inverse passes the low frequencies
and damps the high ones by up to ``1 / (1 + a)``: it never amplifies the noise, so it is taken out before
the phase model, the forward model and the contact reading, which all assume a point spread that is nowhere
negative.

``a`` and ``h`` are fitted to the volume (:func:`fit`): for each point spread σ and halo reach ``h`` on a grid,
the map's levels blurred by σ (``R``) and the grey levels ``v`` give ``a`` by least squares of
``v - R ≈ a (R - G_h R) + c`` over the voxels near the map's edges; the grid point of least residual wins.
:func:`threshold_halo_free` reads the phases, measures the edge halo, and where it reaches
:data:`TRIGGER_UNDERSHOOT` reads them again on the volume less the fitted halo; the map then carries
``halo_amplitude`` and ``halo_sigma_vox`` and :func:`detachment.shading.flat_view` reads its grey levels
through :class:`HaloFreeView`. Axes (z, y, x).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from .io import view_regions

log = logging.getLogger(__name__)

#: Edge undershoot (:attr:`detachment.edge_halo.EdgeHalo.undershoot`) from which the halo is fitted and
#: taken out; cells without a halo read under 0.01.
TRIGGER_UNDERSHOOT = 0.02
#: Halo reaches (Gaussian σ, voxels) tried by :func:`fit`.
REACH_GRID = (1.0, 1.5, 2.0, 3.0, 4.0, 5.0)
#: Point spreads (Gaussian σ, voxels) tried by :func:`fit`.
BLUR_GRID = (0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.3, 1.6, 2.0)
#: Amplitudes below this are no halo (nothing is taken out).
MIN_AMPLITUDE = 0.02
#: Largest amplitude taken out (the edge halo check stops beyond what is left).
MAX_AMPLITUDE = 2.0
#: Change of the amplitude fitted on the map read less the first fit beyond which the phases are read again.
AMPLITUDE_TOLERANCE = 0.05
#: Rounds of :func:`_refined` (levels, then amplitude).
REFINE_ROUNDS = 5
#: Voxels within this many steps of a change of phase code are fitted.
NEAR_VOX = 6
#: Most voxels of the block :func:`fit` reads (a central block of the volume).
FIT_VOXELS = 4_000_000
#: Relative weight of the inverse filter's impulse response left out beyond the margin.
TAIL = 1e-4
#: Dataset attributes of the map that record the halo taken out.
AMPLITUDE_ATTR, REACH_ATTR = "halo_amplitude", "halo_sigma_vox"


@dataclass(frozen=True)
class HaloFit:
    """A fitted halo: ``amplitude`` a (0: none), ``sigma_vox`` its reach h, ``blur_sigma_vox`` the point
    spread fitted with it (voxels) and ``residual`` the mean squared residual near the edges (grey levels²)."""

    amplitude: float
    sigma_vox: float
    blur_sigma_vox: float
    residual: float


def margin_vox(amplitude: float, sigma_vox: float) -> int:
    """Voxels on each side a block needs for :func:`remove` to be exact within :data:`TAIL` at its centre.

    The inverse is ``Σ_n r^n G_h^n / (1 + a)`` with ``r = a / (1 + a)``; ``G_h^n`` reaches ``3 h √n``."""
    if amplitude <= 0:
        return 0
    r = amplitude / (1.0 + amplitude)
    terms = max(1, math.ceil(math.log(TAIL) / math.log(r)))
    return int(math.ceil(3.0 * sigma_vox * math.sqrt(terms)))


def remove(block: np.ndarray, amplitude: float, sigma_vox: float, margin: int | None = None) -> np.ndarray:
    """``block`` less a halo of ``amplitude`` and reach ``sigma_vox``: the unsharp mask's exact inverse, applied
    in Fourier space on the block padded by its edge values (``margin`` voxels each side, default
    :func:`margin_vox`), so that its borders read as a volume's borders under ``mode="nearest"``.

    Returns
    -------
    numpy.ndarray
        float32, the shape of ``block``.
    """
    block = np.asarray(block, np.float32)
    if amplitude <= 0:
        return block.copy()
    m = margin_vox(amplitude, sigma_vox) if margin is None else int(margin)
    padded = np.pad(block, m, mode="edge")
    freqs = [np.fft.fftfreq(n) for n in padded.shape[:-1]] + [np.fft.rfftfreq(padded.shape[-1])]
    f2 = sum(f.reshape([-1 if i == j else 1 for j in range(padded.ndim)]) ** 2 for i, f in enumerate(freqs))
    gain = 1.0 / ((1.0 + amplitude) - amplitude * np.exp(-2.0 * np.pi**2 * sigma_vox**2 * f2))
    axes = tuple(range(padded.ndim))
    out = np.fft.irfftn(np.fft.rfftn(padded, axes=axes) * gain, s=padded.shape, axes=axes)
    return out[tuple(slice(m, m + n) for n in block.shape)].astype(np.float32)


class HaloFreeView:
    """A (z, y, x) grey-level dataset read less a halo: ``view[key]`` is :func:`remove` of ``dataset`` around
    ``key`` (read with :func:`margin_vox` voxels of context, clipped at the volume's borders), for keys of
    integers and unit-step slices."""

    def __init__(self, dataset, amplitude: float, sigma_vox: float):
        self.dataset, self.amplitude, self.sigma_vox = dataset, float(amplitude), float(sigma_vox)
        self.shape, self.dtype = tuple(dataset.shape), np.dtype(np.float32)
        self.margin = margin_vox(self.amplitude, self.sigma_vox)

    def __getitem__(self, key):
        regions, squeeze = view_regions(key, self.shape, "HaloFreeView")
        inner, outer = [], []
        for (start, stop), n in zip(regions, self.shape):
            lo, hi = max(0, start - self.margin), min(n, stop + self.margin)
            outer.append(slice(lo, hi))
            inner.append(slice(start - lo, stop - lo))
        if any(s.stop <= s.start for s in inner):
            return np.zeros([s.stop - s.start for s in inner], np.float32).squeeze(axis=squeeze)
        data = np.asarray(self.dataset[tuple(outer)], np.float32)
        # padded by its edge values: a side cut by the volume's border reads as the whole volume's would
        free = remove(data, self.amplitude, self.sigma_vox, margin=self.margin)[tuple(inner)]
        return free.squeeze(axis=squeeze) if squeeze else free


def view(dataset, phases_dataset):
    """``dataset`` read less the halo the map ``phases_dataset`` records (:data:`AMPLITUDE_ATTR`,
    :data:`REACH_ATTR`): a :class:`HaloFreeView`, or ``dataset`` itself where it records none."""
    amplitude = float(phases_dataset.attrs.get(AMPLITUDE_ATTR, 0.0))
    if not amplitude > 0:
        return dataset
    return HaloFreeView(dataset, amplitude, float(phases_dataset.attrs[REACH_ATTR]))


def recorded(phases_path) -> tuple[float, float] | None:
    """``(amplitude, reach in voxels)`` of the halo the map at ``phases_path`` was read less, or None."""
    import h5py

    with h5py.File(phases_path, "r") as f:
        attrs = f["phases"].attrs
        amplitude = float(attrs.get(AMPLITUDE_ATTR, 0.0))
        return (amplitude, float(attrs[REACH_ATTR])) if amplitude > 0 else None


def _block(shape) -> tuple[slice, ...]:
    """A central block of a volume of ``shape`` of at most :data:`FIT_VOXELS` voxels: every slice's whole
    plane where it fits, else a central square of it."""
    nz, ny, nx = shape
    side_y, side_x = ny, nx
    while side_y * side_x * min(nz, 16) > FIT_VOXELS and max(side_y, side_x) > 64:
        side_y, side_x = max(64, side_y * 3 // 4), max(64, side_x * 3 // 4)
    depth = max(1, min(nz, FIT_VOXELS // (side_y * side_x)))
    return tuple(slice((n - k) // 2, (n - k) // 2 + k) for n, k in zip(shape, (depth, side_y, side_x)))


def fit(codes: np.ndarray, grey: np.ndarray, z_factor: float = 1.0) -> HaloFit:
    """The halo (and point spread) that best explain ``grey`` near the edges of the map ``codes``.

    Each code's level is its voxels' median away from the edges (all its voxels where none are). For each
    σ of :data:`BLUR_GRID` (σ · ``z_factor`` along z) and reach ``h`` of :data:`REACH_GRID`, ``R`` = the levels
    blurred by σ and ``D = R - G_h R``; ``a`` and an offset by least squares of ``grey - R`` on ``D`` over the
    voxels within :data:`NEAR_VOX` steps of a change of code; the pair of least mean squared residual wins.

    Parameters
    ----------
    codes : numpy.ndarray
        (z, y, x) uint8 phase codes.
    grey : numpy.ndarray
        (z, y, x) grey levels the map was read from.
    z_factor : float, default 1
        The point spread's σ along z over its σ within the slices.

    Returns
    -------
    HaloFit
        Amplitude clipped to [0, :data:`MAX_AMPLITUDE`]; NaN everywhere where no voxel is near an edge.
    """
    codes = np.asarray(codes)
    grey = np.asarray(grey, np.float32)
    edges = ndimage.morphological_gradient(codes, size=3) > 0
    near = ndimage.binary_dilation(edges, iterations=NEAR_VOX)
    if not edges.any():
        return HaloFit(float("nan"), float("nan"), float("nan"), float("nan"))
    levels = np.zeros(int(codes.max()) + 1, np.float32)
    for c in np.unique(codes):
        inside = (codes == c) & ~near
        levels[c] = np.median(grey[inside if inside.any() else codes == c])
    base = levels[codes]
    g = grey[near].astype(np.float64)
    best = None
    for s in BLUR_GRID:
        blurred = ndimage.gaussian_filter(base, (s * z_factor, s, s), mode="nearest")
        r = g - blurred[near]
        for h in REACH_GRID:
            d = (blurred - ndimage.gaussian_filter(blurred, h, mode="nearest"))[near].astype(np.float64)
            design = np.stack([d, np.ones_like(d)], axis=1)
            coef, *_ = np.linalg.lstsq(design, r, rcond=None)
            a = float(np.clip(coef[0], 0.0, MAX_AMPLITUDE))
            res = float(np.mean((r - a * d - np.mean(r - a * d)) ** 2))
            if best is None or res < best.residual:
                best = HaloFit(a, float(h), float(s), res)
    return _refined(codes, grey, near, best, z_factor)


def _refined(codes: np.ndarray, grey: np.ndarray, near: np.ndarray, start: HaloFit, z_factor: float) -> HaloFit:
    """``start``'s amplitude fitted again with the codes' levels (least squares on the blurred indicators,
    alternating with the amplitude, :data:`REFINE_ROUNDS` rounds): the medians :func:`fit` starts from read
    thin phases (a CBD coat) where blur and halo move them."""
    s, h = start.blur_sigma_vox, start.sigma_vox
    present = np.unique(codes)
    blurred = [ndimage.gaussian_filter((codes == c).astype(np.float32), (s * z_factor, s, s), mode="nearest")
               for c in present]
    base = np.stack([b[near] for b in blurred], axis=1).astype(np.float64)
    mask = np.stack([(b - ndimage.gaussian_filter(b, h, mode="nearest"))[near] for b in blurred],
                    axis=1).astype(np.float64)
    g = grey[near].astype(np.float64)
    a = start.amplitude
    for _ in range(REFINE_ROUNDS):
        levels, *_ = np.linalg.lstsq(base + a * mask, g, rcond=None)
        d = mask @ levels
        r = g - base @ levels
        a = float(np.clip((r @ d) / (d @ d), 0.0, MAX_AMPLITUDE)) if d @ d > 0 else 0.0
    res = float(np.mean((g - (base + a * mask) @ levels) ** 2))
    return HaloFit(a, h, s, res)


def fit_map(phases_path, volume_path, z_factor: float = 1.0) -> HaloFit:
    """:func:`fit` on a central block (:data:`FIT_VOXELS`) of ``phases.h5`` and the grey levels it was read
    from (:func:`detachment.shading.open_flat`)."""
    from .shading import open_flat

    with open_flat(phases_path, volume_path) as (codes, grey):
        block = _block(codes.shape)
        return fit(codes[block], grey[block], z_factor)


def write_halo_free(volume_path, out_path, amplitude: float, sigma_vox: float, slab: int = 32) -> None:
    """Write the volume of ``volume_path`` less a halo (:class:`HaloFreeView`) to ``out_path`` (the volume
    contract, ``/volume`` float32 with the same attributes), atomically and slab by slab."""
    from . import io

    io.write_volume_view(volume_path, out_path, lambda src: HaloFreeView(src, amplitude, sigma_vox), slab)


def _halo_free_path(phases_path) -> Path:
    """The temporary halo-free volume beside ``phases_path``."""
    return Path(phases_path).with_name(Path(phases_path).stem + ".halo_free.h5")


def threshold_halo_free(volume_path, phases_path, settings, progress: bool = True, workers: int = 1):
    """:func:`detachment.shading.threshold_flattened`, and where ``settings.remove_halo`` is on and the map's
    edge halo (:func:`detachment.edge_halo.measure_map`) reaches :data:`TRIGGER_UNDERSHOOT`, the phases read
    again on the volume less the halo :func:`fit_map` finds (written beside ``phases_path``, removed after).
    A first map read under a strong halo misplaces the edges the fit rests on (and its forward model's z
    factor reads the halo as a sharper z), so the first fit takes the point spread as isotropic and the halo
    is fitted again on the map read without it, under that map's z factor, and where its amplitude moves by more than :data:`AMPLITUDE_TOLERANCE` the
    phases are read once more less that one. The map records the halo it was read less
    (:data:`AMPLITUDE_ATTR`, :data:`REACH_ATTR`). Returns what :func:`~detachment.shading.threshold_flattened`
    returns for the map written."""
    import h5py

    from . import edge_halo, shading

    _halo_free_path(phases_path).unlink(missing_ok=True)  # left by a run killed mid-way
    out = shading.threshold_flattened(volume_path, phases_path, settings, progress, workers)
    if not settings.remove_halo:
        return out
    halo = edge_halo.measure_map(phases_path, volume_path, out[0].fwhm)
    if not (np.isfinite(halo.undershoot) and halo.undershoot >= TRIGGER_UNDERSHOOT):
        return out
    # the first map's z factor is the halo's as much as the blur's (a halo reads as a sharper z): isotropic
    found = fit_map(phases_path, volume_path, 1.0)
    if not found.amplitude >= MIN_AMPLITUDE:
        log.info("edge halo: undershoot %.3f, but no halo fitted (amplitude %.3f): the grey levels are read as "
                 "they are", halo.undershoot, found.amplitude)
        return out
    fits = [found]
    while True:
        log.info("edge halo: undershoot %.3f; fitted amplitude %.3f over %.1f voxels (point spread %.1f voxels): "
                 "taken out and the phases read again", halo.undershoot, found.amplitude, found.sigma_vox,
                 found.blur_sigma_vox)
        out = _read_less(volume_path, phases_path, found, settings, progress, workers)
        if len(fits) > 1:
            break
        z_factor = out[0].refine_z_factor if np.isfinite(out[0].refine_z_factor) else 1.0
        again = fit_map(phases_path, volume_path, z_factor)  # on the map read without it; attrs not yet written
        fits.append(again)
        if not abs(again.amplitude - found.amplitude) > AMPLITUDE_TOLERANCE:
            break
        found = again
    with h5py.File(phases_path, "r+") as f:
        f["phases"].attrs[AMPLITUDE_ATTR] = found.amplitude
        f["phases"].attrs[REACH_ATTR] = found.sigma_vox
        f["phases"].attrs["halo_removed"] = (
            f"amplitude {found.amplitude:.3f} over {found.sigma_vox:.1f} vox (unsharp mask, fitted with a point "
            f"spread of {found.blur_sigma_vox:.1f} vox; fits: "
            f"{', '.join(f'{h.amplitude:.3f} over {h.sigma_vox:.1f}' for h in fits)}); edge undershoot before "
            f"{halo.undershoot:.3f}")
    return out


def _read_less(volume_path, phases_path, halo: HaloFit, settings, progress, workers):
    """:func:`detachment.shading.threshold_flattened` of the volume less ``halo`` (written beside
    ``phases_path`` and removed after)."""
    from . import shading

    free = _halo_free_path(phases_path)
    try:
        write_halo_free(volume_path, free, halo.amplitude, halo.sigma_vox)
        return shading.threshold_flattened(free, phases_path, settings, progress, workers)
    finally:
        free.unlink(missing_ok=True)
