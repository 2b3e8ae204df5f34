"""Edge halos taken out of the grey levels before the phases are read from them.

Phase-contrast imaging leaves every edge overshooting (:mod:`detachment.edge_halo`: a Zernike ring's halo, a
propagation-based reconstruction's fringes, a sharpening filter). Here it is modelled as an unsharp mask acting
on the blurred object, ``v = (1 + a) u - a G_h u`` with ``G_h`` a Gaussian of ``h`` voxels, and undone with
its exact inverse, ``u = v / ((1 + a) - a Ĝ_h)`` in Fourier space. That inverse passes the low frequencies
and damps the high ones by up to ``1 / (1 + a)``: it never amplifies the noise, so it is taken out before
the phase model, the forward model and the contact reading, which all assume a point spread that is nowhere
negative.

The detector's noise enters after the halo, so the inverse damps it too, by up to ``1 / (1 + a)`` per voxel:
the volume reads less noisy than it was imaged. The contact reading and its checks are not calibrated for
that: on random phantoms read with the halo taken out this way, gaps read as CBD and the gap / CBD
separation passed the check where the same draw imaged without a halo reads well or stops (docs/results.md).
So the noise the inverse takes away is given back: white noise of the spread ``s`` the noise was imaged
with (:func:`imaged_noise`), filtered by ``c (1 - g)`` with ``g`` the inverse's gain and
``c = √(1 + 2 / a)``, is added. The noise is then ``s² (g² + c² (1 - g)²)`` in power: exactly ``s²`` at the
lowest and the highest frequencies, and at least ``(a + 2) / (2 a + 2)`` of it between (0.83 at a = 0.5,
0.75 at a = 1), over the band where the halo acts. The halo's gain in signal to noise at high frequencies is
given up, for readings and checks that hold. The added noise is drawn from a fixed seed per tile of voxels
(:func:`white_noise`), so every read of a voxel sees the same value and a run is deterministic.

``a`` and ``h`` are fitted to the volume (:func:`fit`): for each point spread σ and halo reach ``h`` on a grid,
the map's levels blurred by σ (``R``) and the grey levels ``v`` give ``a`` by least squares of
``v - R ≈ a (R - G_h R) + c`` over the voxels near the map's edges; the grid point of least residual wins.
The fit on the map read less the first halo takes σ from that map's forward model instead of the grid.
:func:`threshold_halo_free` reads the phases, measures the edge halo, and where it reaches
:data:`TRIGGER_UNDERSHOOT` reads them again on the volume less the fitted halo; the map then carries
``halo_amplitude``, ``halo_sigma_vox`` and ``halo_noise_sd`` and :func:`detachment.shading.flat_view` reads
its grey levels through :class:`HaloFreeView`. Axes (z, y, x).
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
#: Most voxels :class:`HaloFreeView` transforms at once, its context included (float32: 128 MiB a copy; a read
#: holds about five); a larger key is read in bands along y of at least :data:`MIN_BAND_ROWS` rows.
BLOCK_VOXELS, MIN_BAND_ROWS = 32 * 2**20, 16
#: Dataset attributes of the map that record the halo taken out, and the spread of the noise given back.
AMPLITUDE_ATTR, REACH_ATTR, NOISE_ATTR = "halo_amplitude", "halo_sigma_vox", "halo_noise_sd"
#: Seed of the noise given back, and the edge (voxels, within a slice) of the tiles it is drawn per.
NOISE_SEED, NOISE_TILE = 20261207, 64
#: Offset of the tiles' and slices' indices in the seed (a block's margin reaches before the volume's start).
_INDEX_OFFSET = 1 << 20


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


def remove(block: np.ndarray, amplitude: float, sigma_vox: float, margin: int | None = None,
           noise: np.ndarray | None = None) -> np.ndarray:
    """``block`` less a halo of ``amplitude`` and reach ``sigma_vox``: the unsharp mask's exact inverse, applied
    in Fourier space on the block padded by its edge values (``margin`` voxels each side, default
    :func:`margin_vox`), so that its borders read as a volume's borders under ``mode="nearest"``.

    ``noise``: white noise of the spread to give back (module docstring), the shape of the padded block
    (``margin`` more each side), filtered by ``c (1 - g)`` and added; None: the exact inverse alone.

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
    if noise is not None and noise.shape != padded.shape:
        raise ValueError(f"noise of shape {noise.shape} for a padded block of {padded.shape}")
    free = _inverse(padded, amplitude, sigma_vox, noise)[tuple(slice(m, m + n) for n in block.shape)]
    return np.ascontiguousarray(free)  # a copy: the padded block is let go, and the array is contiguous


def _inverse(padded: np.ndarray, amplitude: float, sigma_vox: float, noise: np.ndarray | None) -> np.ndarray:
    """The inverse of :func:`remove` on the whole of ``padded`` (float32), circular: only voxels
    :func:`margin_vox` or more from its borders are exact. With ``noise``, ``g F(v) + c (1 - g) F(n)`` is taken
    as ``g F(v - c n) + c n``: one transform pair, not two. Single precision throughout (scipy's FFT keeps
    float32 / complex64), the gain built and the spectrum filtered in place: a slab's read holds about five
    copies of the padded slab (``benchmarks/halo_view.py``)."""
    from scipy import fft

    c = np.float32(math.sqrt(1.0 + 2.0 / amplitude))
    x = padded
    if noise is not None:
        x = np.multiply(noise, -c, dtype=np.float32)
        x += padded
    spectrum = fft.rfftn(x)
    spectrum *= _gain(padded.shape, amplitude, sigma_vox)
    out = fft.irfftn(spectrum, s=padded.shape, overwrite_x=True)
    del spectrum
    if noise is not None:
        out += np.multiply(noise, c, out=x)
    return out.astype(np.float32, copy=False)


def _gain(shape, amplitude: float, sigma_vox: float) -> np.ndarray:
    """The inverse's gain ``1 / ((1 + a) - a Ĝ_h)`` on the real-FFT grid of a block of ``shape`` (float32; the
    Gaussian's transfer function is separable, so only the last product is of the whole grid)."""
    freqs = [np.fft.fftfreq(n) for n in shape[:-1]] + [np.fft.rfftfreq(shape[-1])]
    gain = np.ones([1] * len(shape), np.float32)
    for i, f in enumerate(freqs):
        decay = np.exp(-2.0 * np.pi**2 * sigma_vox**2 * f**2).astype(np.float32)
        gain = gain * decay.reshape([1] * i + [-1] + [1] * (len(shape) - 1 - i))
    gain *= np.float32(-amplitude)
    gain += np.float32(1.0 + amplitude)
    return np.reciprocal(gain, out=gain)


def white_noise(region) -> np.ndarray:
    """Standard normal noise (float32) at the voxels of ``region`` ((start, stop) per axis, volume coordinates,
    which may reach before 0 or past the volume's end): each slice's tiles of :data:`NOISE_TILE` voxels drawn
    from a generator seeded by :data:`NOISE_SEED` and the tile's indices, so a voxel reads the same value
    whatever block it is read in."""
    (z0, z1), (y0, y1), (x0, x1) = region
    out = np.empty((z1 - z0, y1 - y0, x1 - x0), np.float32)
    t = NOISE_TILE
    for z in range(z0, z1):
        for ty in range(y0 // t, -(-y1 // t)):
            for tx in range(x0 // t, -(-x1 // t)):
                tile = np.random.default_rng([NOISE_SEED, z + _INDEX_OFFSET, ty + _INDEX_OFFSET,
                                              tx + _INDEX_OFFSET]).standard_normal((t, t), np.float32)
                ya, yb = max(y0, ty * t), min(y1, (ty + 1) * t)
                xa, xb = max(x0, tx * t), min(x1, (tx + 1) * t)
                out[z - z0, ya - y0: yb - y0, xa - x0: xb - x0] = tile[ya - ty * t: yb - ty * t,
                                                                      xa - tx * t: xb - tx * t]
    return out


class HaloFreeView:
    """A (z, y, x) grey-level dataset read less a halo: ``view[key]`` is :func:`remove` of ``dataset`` around
    ``key`` (read with :func:`margin_vox` voxels of context, clipped at the volume's borders), for keys of
    integers and unit-step slices, with white noise of spread ``noise_sd`` given back (:func:`white_noise`;
    0: none). A key whose block with its context exceeds :data:`BLOCK_VOXELS` is read in bands along y."""

    def __init__(self, dataset, amplitude: float, sigma_vox: float, noise_sd: float = 0.0):
        self.dataset, self.amplitude, self.sigma_vox = dataset, float(amplitude), float(sigma_vox)
        self.noise_sd = float(noise_sd)
        self.shape, self.dtype = tuple(dataset.shape), np.dtype(np.float32)
        self.margin = margin_vox(self.amplitude, self.sigma_vox)

    def __getitem__(self, key):
        regions, squeeze = view_regions(key, self.shape, "HaloFreeView")
        free = self._read(regions)
        return free.squeeze(axis=squeeze) if squeeze else free

    def _read(self, regions) -> np.ndarray:
        """The voxels of ``regions`` ((start, stop) per axis) less the halo, float32."""
        m = self.margin
        (z0, z1), (y0, y1), (x0, x1) = regions
        rows = max(MIN_BAND_ROWS, BLOCK_VOXELS // max(1, (z1 - z0 + 2 * m) * (x1 - x0 + 2 * m)) - 2 * m)
        if y1 - y0 > rows:  # bands along y: each with its own context, so a band reads as the whole would
            return np.concatenate([self._read([(z0, z1), (a, min(a + rows, y1)), (x0, x1)])
                                   for a in range(y0, y1, rows)], axis=1)
        inner, outer, pads = [], [], []
        for (start, stop), n in zip(regions, self.shape):
            lo, hi = max(0, start - m), min(n, stop + m)
            # padded by its edge values only where the volume's border cuts the context: that side reads as the
            # whole volume's would; elsewhere the context is margin enough for the circular transform
            pad = (m if start - m < 0 else 0, m if stop + m > n else 0)
            outer.append(slice(lo, hi))
            pads.append(pad)
            inner.append(slice(start - lo + pad[0], stop - lo + pad[0]))
        if any(s.stop <= s.start for s in inner):
            return np.zeros([s.stop - s.start for s in inner], np.float32)
        padded = np.pad(np.asarray(self.dataset[tuple(outer)], np.float32), pads, mode="edge")
        noise = None
        if self.noise_sd > 0:
            noise = white_noise([(o.start - p0, o.stop + p1) for o, (p0, p1) in zip(outer, pads)])
            noise *= np.float32(self.noise_sd)
        return np.ascontiguousarray(_inverse(padded, self.amplitude, self.sigma_vox, noise)[tuple(inner)])


def view(dataset, phases_dataset):
    """``dataset`` read less the halo the map ``phases_dataset`` records (:data:`AMPLITUDE_ATTR`,
    :data:`REACH_ATTR`, with the noise of :data:`NOISE_ATTR` given back): a :class:`HaloFreeView`, or
    ``dataset`` itself where it records none."""
    amplitude = float(phases_dataset.attrs.get(AMPLITUDE_ATTR, 0.0))
    if not amplitude > 0:
        return dataset
    return HaloFreeView(dataset, amplitude, float(phases_dataset.attrs[REACH_ATTR]),
                        float(phases_dataset.attrs.get(NOISE_ATTR, 0.0)))


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


def fit(codes: np.ndarray, grey: np.ndarray, z_factor: float = 1.0, blur_sigma_vox: float | None = None
        ) -> HaloFit:
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
    blur_sigma_vox : float, optional
        The point spread's σ (voxels) where it is known: only it is tried, in place of :data:`BLUR_GRID`
        (a short-reach halo of a larger amplitude cannot then stand in for a wider blur). None or NaN: the grid.

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
    known = blur_sigma_vox is not None and np.isfinite(blur_sigma_vox) and blur_sigma_vox > 0
    for s in (float(blur_sigma_vox),) if known else BLUR_GRID:
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


def fit_map(phases_path, volume_path, z_factor: float = 1.0, blur_sigma_vox: float | None = None) -> HaloFit:
    """:func:`fit` on a central block (:data:`FIT_VOXELS`) of ``phases.h5`` and the grey levels it was read
    from (:func:`detachment.shading.open_flat`); ``blur_sigma_vox``: :func:`fit`'s."""
    from .shading import open_flat

    with open_flat(phases_path, volume_path) as (codes, grey):
        block = _block(codes.shape)
        return fit(codes[block], grey[block], z_factor, blur_sigma_vox)


def write_halo_free(volume_path, out_path, amplitude: float, sigma_vox: float, slab: int = 32,
                    noise_sd: float = 0.0) -> None:
    """Write the volume of ``volume_path`` less a halo (:class:`HaloFreeView`, ``noise_sd`` given back) to
    ``out_path`` (the volume contract, ``/volume`` float32 with the same attributes), atomically and slab by
    slab."""
    from . import io

    io.write_volume_view(volume_path, out_path, lambda src: HaloFreeView(src, amplitude, sigma_vox, noise_sd), slab)


def _halo_free_path(phases_path) -> Path:
    """The temporary halo-free volume beside ``phases_path``."""
    return Path(phases_path).with_name(Path(phases_path).stem + ".halo_free.h5")


def threshold_halo_free(volume_path, phases_path, settings, progress: bool = True, workers: int = 1):
    """:func:`detachment.shading.threshold_flattened`, and where ``settings.remove_halo`` is on and the map's
    edge halo (:func:`detachment.edge_halo.measure_map`) reaches :data:`TRIGGER_UNDERSHOOT`, the phases read
    again on the volume less the halo :func:`fit_map` finds (written beside ``phases_path``, removed after).
    A first map read under a strong halo misplaces the edges the fit rests on (and its forward model's z
    factor reads the halo as a sharper z), so the first fit takes the point spread as isotropic and the halo
    is fitted again on the map read without it, under that map's z factor and with the point spread its forward
    model found (fitted free, a wider blur and a short-reach halo of a larger amplitude explain edges that cut
    the voxels alike, and the amplitude can run to its bound); where its amplitude moves by more than :data:`AMPLITUDE_TOLERANCE` the phases are read
    once more less that one. The noise the removal damps is given back (:func:`imaged_noise`,
    module docstring). The map records the halo it was read less and the noise given back
    (:data:`AMPLITUDE_ATTR`, :data:`REACH_ATTR`, :data:`NOISE_ATTR`). Returns what :func:`~detachment.shading.threshold_flattened`
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
    fits, noise_sd = [found], imaged_noise(volume_path, phases_path, out[0].fwhm)
    while True:
        log.info("edge halo: undershoot %.3f; fitted amplitude %.3f over %.1f voxels (point spread %.1f voxels): "
                 "taken out, noise of spread %.4f given back, and the phases read again", halo.undershoot,
                 found.amplitude, found.sigma_vox, found.blur_sigma_vox, noise_sd)
        out = _read_less(volume_path, phases_path, found, noise_sd, settings, progress, workers)
        if len(fits) > 1:
            break
        z_factor = out[0].refine_z_factor if np.isfinite(out[0].refine_z_factor) else 1.0
        # on the map read without it (attrs not yet written), under the point spread its forward model found
        again = fit_map(phases_path, volume_path, z_factor, out[0].refine_sigma_vox)
        fits.append(again)
        if not abs(again.amplitude - found.amplitude) > AMPLITUDE_TOLERANCE:
            break
        found = again
    with h5py.File(phases_path, "r+") as f:
        f["phases"].attrs[AMPLITUDE_ATTR] = found.amplitude
        f["phases"].attrs[REACH_ATTR] = found.sigma_vox
        f["phases"].attrs[NOISE_ATTR] = noise_sd
        f["phases"].attrs["halo_removed"] = (
            f"amplitude {found.amplitude:.3f} over {found.sigma_vox:.1f} vox (unsharp mask, fitted with a point "
            f"spread of {found.blur_sigma_vox:.1f} vox; fits: "
            f"{', '.join(f'{h.amplitude:.3f} over {h.sigma_vox:.1f}' for h in fits)}); edge undershoot before "
            f"{halo.undershoot:.3f}; noise of spread {noise_sd:.4f} given back")
    return out


def imaged_noise(volume_path, phases_path, fwhm, slab: int = 32, min_pairs: int = 200) -> float:
    """Spread of the white noise as imaged, grey levels: :func:`detachment.contact_level.robust_sigma` of the
    differences of neighbours along x in the open electrolyte of the map at ``phases_path``
    (:func:`detachment.contact_level.open_electrolyte`), over √2, on every
    :data:`detachment.blur.SLICE_STEP`-th slice. Differences of neighbours leave out what varies slowly: a
    halo's tail that reaches into the open electrolyte, shading. Fewer than ``min_pairs`` pairs: the
    electrolyte's fitted FWHM over :data:`detachment.phases.FWHM_PER_SIGMA` (``fwhm``: ``phase_fwhm.csv``'s
    ``phase``, ``fwhm``), else 0."""
    import h5py

    from . import io
    from .blur import SLICE_STEP
    from .contact_level import OPEN_ELECTROLYTE_VOX, open_electrolyte, robust_sigma
    from .phases import FWHM_PER_SIGMA

    halo = OPEN_ELECTROLYTE_VOX + 1
    diffs = []
    with h5py.File(phases_path, "r") as f:
        dp = f["phases"]
        for z0, z1, grey in io.iter_volume_slabs(volume_path, slab, halo):
            a = max(0, z0 - halo)
            keep = np.arange(z0, z1) % SLICE_STEP == 0
            if not keep.any():
                continue
            inside = open_electrolyte(dp[a:a + len(grey)])[z0 - a: z1 - a][keep]
            g = grey[z0 - a: z1 - a][keep]
            diffs.append((g[..., 1:] - g[..., :-1])[inside[..., 1:] & inside[..., :-1]])
    d = np.concatenate(diffs) if diffs else np.zeros(0)
    sd = robust_sigma(d) / math.sqrt(2.0) if d.size >= min_pairs else float("nan")
    if not (np.isfinite(sd) and sd > 0):
        widths = dict(zip(fwhm["phase"], fwhm["fwhm"]))
        sd = float(widths.get("void", float("nan"))) / FWHM_PER_SIGMA
    if not (np.isfinite(sd) and sd > 0):
        log.warning("edge halo: no spread of the electrolyte's grey levels to give back as noise: the halo is "
                    "taken out with its exact inverse alone, which damps the noise")
        return 0.0
    return float(sd)


def _read_less(volume_path, phases_path, halo: HaloFit, noise_sd: float, settings, progress, workers):
    """:func:`detachment.shading.threshold_flattened` of the volume less ``halo``, ``noise_sd`` given back
    (written beside ``phases_path`` and removed after)."""
    from . import shading

    free = _halo_free_path(phases_path)
    try:
        write_halo_free(volume_path, free, halo.amplitude, halo.sigma_vox, noise_sd=noise_sd)
        return shading.threshold_flattened(free, phases_path, settings, progress, workers)
    finally:
        free.unlink(missing_ok=True)
