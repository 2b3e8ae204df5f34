"""Phase codes refined against the blurred forward model of the volume.

A threshold decides each voxel on its own grey level. Under a point-spread function of σ voxels a
voxel's grey level is a blur of its neighbours' phases, so per-voxel decisions misread what the blur
mixes: electrolyte beside CBD or a particle reads as CBD, the edge of a high-density particle as low
density, the collector's face as CBD. Here the codes at the phase boundaries are moved to lower

    E(L) = (½ μᵀ H μ - μᵀ G g) / s² + β · (6-neighbour pairs with different codes)

(``g`` the grey levels, ``μ = μ[L]`` each voxel's phase level, ``G`` the Gaussian point-spread function
of σ, ``H = GᵀG`` its autocorrelation, ``s`` the noise's standard deviation, ``β`` a smoothness weight in
units of the noise's variance). The data term is ``‖g - G μ‖² / (2 s²)`` less a constant: the labelling
whose blurred image best explains the data, with a Potts prior against single-voxel noise. Beyond the
volume's faces the codes and ``G g`` are mirrored (scipy's "reflect") from the map the refinement
starts from, and never move.

The minimisation is iterated conditional modes (Besag 1986), voxel by voxel in raster order: a
voxel takes the code among its 6-neighbours' that lowers ``E`` most, the change of one move being exact
(``(½ d² H(0) - d c_v) / s²`` plus β times the change of unlike pairs, ``d`` the change of the voxel's
level and ``c = G g - H μ`` kept up to date by subtracting ``d H`` around each move), so ``E`` falls with
every move. ``H`` is truncated at 3 of its σ (σ√2); the sweeps end when nothing moves.

σ itself is best fitted by the same energy (:func:`fit_sigma`): the σ whose refined labelling leaves
the least ``E`` per voxel. The σ of an erf fitted to the mean edge profile along the image axes reads a
surface tilted by θ from the axis as σ / cos θ; on real (and sub-voxel rendered) particles it is biased
high, and a forward model blurred too widely moves boundaries that are right.

Moves are restricted to what the blur can hide: a voxel only takes a code one of its 6-neighbours has;
NMC low and high density are exchanged only on the particles' surface (a voxel with a neighbour outside
NMC), as inside a particle the densities are told apart on the domain means, not here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit
from scipy import ndimage, optimize

from .blur import spill_radius
from .phases import AL, NMC_HIGH, NMC_LOW, PHASE_NAMES

#: Range of :func:`fit_sigma`, as multiples of the σ it starts from (the edge profiles'): that σ reads
#: oblique surfaces and wide blurs too wide, sharp voxel-grid edges too narrow.
FIT_RANGE = (0.5, 1.6)
#: Most (slices, rows, columns) :func:`fit_sigma` refines at each σ it tries (:func:`fit_block`).
FIT_BLOCK = (48, 192, 192)
#: Tolerance of :func:`fit_sigma`'s σ, voxels.
FIT_TOLERANCE = 0.02


@dataclass
class RefineSettings:
    """How :func:`refine_codes` runs.

    Attributes
    ----------
    beta : float
        Smoothness weight: the energy of one pair of 6-neighbours with different codes, in units of the
        noise's variance (``E``'s data term is the squared residual over ``2 s²``).
    sweeps : int
        Most passes over the volume.
    """

    beta: float = 3.0
    sweeps: int = 4

    def __post_init__(self):
        if not np.isfinite(self.beta) or self.beta < 0:
            raise ValueError(f"threshold.psf_refine_beta: {self.beta!r} must be a number >= 0")
        if int(self.sweeps) != self.sweeps or self.sweeps < 0:
            raise ValueError(f"threshold.psf_refine_sweeps: {self.sweeps!r} must be an integer >= 0")
        self.sweeps = int(self.sweeps)


def refine_halo(sigma: float) -> int:
    """Slices read on either side of a streamed slab for :func:`refine_codes`.

    A voxel's move depends on the grey levels one blur reach away and on the codes one reach of ``H``
    away: ``spill_radius(σ) + len(autocorrelation(σ)) // 2 + 2``. Moves further out shift it a little
    through the moves between, so this halo makes the streamed result equal to the whole volume's on
    all but a few voxels (the test measures it), not bit for bit.
    """
    return spill_radius(sigma) + len(autocorrelation(sigma)) // 2 + 2


def autocorrelation(sigma: float) -> np.ndarray:
    """1D float64 ``H``: ``scipy.ndimage.gaussian_filter``'s discrete kernel at σ convolved with itself,
    truncated at 3 σ√2 (``H``'s own σ); ``H`` in 3D is its outer product."""
    r = spill_radius(sigma)
    delta = np.zeros(2 * r + 1)
    delta[r] = 1.0
    k = ndimage.gaussian_filter1d(delta, float(sigma), mode="constant")
    h = np.convolve(k, k)
    keep = min(2 * r, int(math.ceil(3.0 * math.sqrt(2.0) * float(sigma))))
    return h[2 * r - keep: 2 * r + keep + 1]


def _apply_h(mu: np.ndarray, h: np.ndarray) -> np.ndarray:
    """``H μ`` in float32, zero outside the volume."""
    out, h = np.asarray(mu, np.float32), h.astype(np.float32)
    for ax in range(out.ndim):
        out = ndimage.correlate1d(out, h, axis=ax, mode="constant", output=np.float32)
    return out


def mirrored(a: np.ndarray, pad: int, border: np.ndarray | None = None) -> np.ndarray:
    """``a`` with ``pad`` voxels on every side mirrored from ``border`` (default ``a``), as scipy's
    "reflect" (numpy's "symmetric")."""
    out = np.pad(a if border is None else border, pad, mode="symmetric")
    out[pad: pad + a.shape[0], pad: pad + a.shape[1], pad: pad + a.shape[2]] = a
    return out


def border_width(sigma: float) -> int:
    """Mirrored voxels around a refined block: the reach of ``G`` and of ``H``."""
    return max(spill_radius(sigma), len(autocorrelation(sigma)) // 2)


def energy(codes: np.ndarray, grey: np.ndarray, levels: np.ndarray, sigma: float, noise_sd: float,
           beta: float, border: np.ndarray | None = None) -> float:
    """``E`` of the module docstring as :func:`refine_codes` lowers it, float64, in units of the noise's
    variance: over the (z, y, x) ``codes`` with :func:`border_width` voxels mirrored beyond the faces from
    ``border`` (the map it started from; default ``codes``), ``levels`` the grey level per code (256)."""
    pad = border_width(sigma)
    mu = levels[mirrored(codes, pad, border)].astype(np.float64)
    b = mirrored(ndimage.gaussian_filter(np.asarray(grey, np.float64), float(sigma), mode="reflect"), pad)
    hmu, h = mu, autocorrelation(sigma)
    for ax in range(mu.ndim):
        hmu = ndimage.correlate1d(hmu, h, axis=ax, mode="constant")
    pairs = sum(int((np.diff(codes, axis=ax) != 0).sum()) for ax in range(codes.ndim))
    return float((0.5 * (mu * hmu).sum() - (mu * b).sum()) / noise_sd ** 2) + beta * pairs


@njit(cache=True, nogil=True)
def _best_code(nb, a, c_v, levels, known, h0, beta, inv_var, al_ok, low, high, al):
    """The code among the six neighbours' ``nb`` (255: none) that lowers ``E`` most for a voxel of code
    ``a`` (``c_v``: its ``G g - H μ``), or ``a`` where no move lowers it."""
    own, solid_nb = 0, 0
    for i in range(6):
        if nb[i] == a:
            own += 1
        if nb[i] == low or nb[i] == high:
            solid_nb += 1
    nmc = a == low or a == high
    best, best_k = 0.0, a
    for i in range(6):
        k = nb[i]
        if k == 255 or k == a or not known[k] or (k == al and not al_ok):
            continue
        if nmc and (k == low or k == high) and solid_nb == 6:
            continue  # densities are exchanged on the particle's surface only
        n_k, first = 0, True
        for j in range(6):
            if nb[j] == k:
                n_k += 1
                first = first and j >= i
        if not first:
            continue  # this code was weighed at an earlier neighbour
        d = levels[k] - levels[a]
        change = (0.5 * d * d * h0 - d * c_v) * inv_var + beta * (own - n_k)
        if change < best:
            best, best_k = change, k
    return best_k


@njit(cache=True, nogil=True)
def _stamp(c, d, h, z, y, x):
    """``c -= d H(· - v)`` around the voxel ``v = (z, y, x)`` whose level changed by ``d``."""
    mz, my, mx = c.shape
    r = (h.size - 1) // 2
    for dz in range(max(-r, -z), min(r, mz - 1 - z) + 1):
        wz = d * h[dz + r]
        for dy in range(max(-r, -y), min(r, my - 1 - y) + 1):
            wzy = wz * h[dy + r]
            for dx in range(max(-r, -x), min(r, mx - 1 - x) + 1):
                c[z + dz, y + dy, x + dx] -= np.float32(wzy * h[dx + r])


@njit(cache=True, nogil=True)
def _sweeps(codes, c, levels, known, h, beta, inv_var, sweeps, al_top, low, high, al, pad):
    """Iterated conditional modes in raster order (the module docstring) over ``codes`` less ``pad``
    voxels on every side (a mirrored border, never moved, no one's neighbour), at most ``sweeps``
    passes; ``c`` (``G g - H μ``, float32) is kept up to date. Returns the moves made."""
    mz, my, mx = codes.shape
    nz, ny, nx = mz - pad, my - pad, mx - pad
    r = (h.size - 1) // 2
    h0 = h[r] * h[r] * h[r]
    nb = np.empty(6, np.int64)
    total = 0
    for _ in range(sweeps):
        moved = 0
        for z in range(pad, nz):
            for y in range(pad, ny):
                for x in range(pad, nx):
                    a = codes[z, y, x]
                    if not known[a]:
                        continue
                    nb[0] = codes[z - 1, y, x] if z > pad else 255
                    nb[1] = codes[z + 1, y, x] if z < nz - 1 else 255
                    nb[2] = codes[z, y - 1, x] if y > pad else 255
                    nb[3] = codes[z, y + 1, x] if y < ny - 1 else 255
                    nb[4] = codes[z, y, x - 1] if x > pad else 255
                    nb[5] = codes[z, y, x + 1] if x < nx - 1 else 255
                    k = _best_code(nb, a, c[z, y, x], levels, known, h0, beta, inv_var, z - pad < al_top, low,
                                   high, al)
                    if k != a:
                        codes[z, y, x] = k
                        _stamp(c, levels[k] - levels[a], h, z, y, x)
                        moved += 1
        total += moved
        if moved == 0:
            break
    return total


def _level_table(levels: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
    """(256,) float64 grey level per code from ``levels`` (per phase name) and (256,) bool: the code has one."""
    codes_of = {n: c for c, n in PHASE_NAMES.items()}
    lv, known = np.zeros(256, np.float64), np.zeros(256, np.bool_)
    for name, g in levels.items():
        if np.isfinite(g):
            lv[codes_of[name]], known[codes_of[name]] = g, True
    return lv, known


def refine_codes(codes: np.ndarray, grey: np.ndarray, levels: dict[str, float], sigma: float, noise_sd: float,
                 settings: RefineSettings, al_below: int | None = None, z_first: int = 0) -> tuple[np.ndarray, int]:
    """Move the boundary codes of ``codes`` to lower ``E`` of the module docstring.

    Parameters
    ----------
    codes : numpy.ndarray
        (z, y, x) uint8 phase codes.
    grey : numpy.ndarray
        (z, y, x) grey levels the codes were read from.
    levels : dict
        Grey level of each phase name the map may hold (the phases' interior grey levels); codes of phases
        not listed (or NaN) are neither moved into nor out of.
    sigma : float
        The point-spread σ measured on the map, voxels; 0 or NaN returns a copy.
    noise_sd : float
        The noise's standard deviation, grey level (> 0; NaN returns a copy).
    settings : RefineSettings
        β and the most sweeps.
    al_below : int, optional
        Volume z of the first slice no voxel may become Al in (the collector's top); None: anywhere.
    z_first : int, default 0
        Volume z of ``codes[0]``.

    Returns
    -------
    tuple of (numpy.ndarray, int)
        The refined uint8 codes (a new array) and the number of voxels whose code changed.
    """
    out = np.array(codes, dtype=np.uint8)
    if not np.isfinite(sigma) or sigma <= 0 or not np.isfinite(noise_sd) or noise_sd <= 0 or settings.sweeps == 0:
        return out, 0
    lv, known = _level_table(levels)
    h = autocorrelation(sigma)
    # mirrored borders as wide as G's and H's reach: near the volume's faces H μ and G g then see what
    # scipy's "reflect" sees, and no face pulls its voxels toward brighter levels (H cut off there)
    pad = border_width(sigma)
    work = mirrored(out, pad)
    c = mirrored(ndimage.gaussian_filter(np.asarray(grey, np.float32), float(sigma), mode="reflect",
                                         output=np.float32), pad)
    c -= _apply_h(lv[work].astype(np.float32), h)  # in place: a streamed slab holds four float32 copies at most
    al_top = out.shape[0] if al_below is None else max(0, int(al_below) - int(z_first))
    _sweeps(work, c, lv, known, h, float(settings.beta), 1.0 / float(noise_sd) ** 2, settings.sweeps, al_top,
            NMC_LOW, NMC_HIGH, AL, pad)
    nz, ny, nx = out.shape
    out = work[pad: pad + nz, pad: pad + ny, pad: pad + nx].copy()
    return out, int((out != codes).sum())


def fit_block(solid_per_slice: np.ndarray, shape: tuple[int, int, int],
              block: tuple[int, int, int] = FIT_BLOCK) -> tuple[slice, slice, slice]:
    """The (z, y, x) block :func:`fit_sigma` reads: the run of at most ``block[0]`` slices holding the most
    solid voxels (``solid_per_slice``, (z,) counts; the first such run), rows and columns centred."""
    depth = min(int(shape[0]), block[0])
    window = np.convolve(np.asarray(solid_per_slice, np.float64), np.ones(depth), mode="valid")
    z0 = int(np.argmax(window))
    out = [slice(z0, z0 + depth)]
    for n, b in zip(shape[1:], block[1:]):
        a = (int(n) - min(int(n), b)) // 2
        out.append(slice(a, a + min(int(n), b)))
    return tuple(out)


def fitted_energy(codes: np.ndarray, grey: np.ndarray, levels: dict[str, float], sigma: float, noise_sd: float,
                  settings: RefineSettings, al_below: int | None = None, z_first: int = 0
                  ) -> tuple[float, np.ndarray]:
    """``E`` per voxel of ``codes`` refined at ``sigma`` (:func:`refine_codes`) and the refined codes.

    The data term is ``‖g - G μ‖² / (2 s²)`` with ``G μ`` blurred over the block's own map mirrored
    at its faces (scipy's "reflect"), so that blocks of different σ are weighed on the same voxels.
    """
    q, _ = refine_codes(codes, grey, levels, sigma, noise_sd, settings, al_below, z_first)
    lv = _level_table(levels)[0].astype(np.float32)
    model = ndimage.gaussian_filter(lv[q], float(sigma), mode="reflect", output=np.float32)
    resid = np.asarray(grey, np.float32) - model
    data = float(np.dot(resid.ravel().astype(np.float64), resid.ravel().astype(np.float64))) / (2 * noise_sd ** 2)
    pairs = sum(int((np.diff(q, axis=ax) != 0).sum()) for ax in range(q.ndim))
    return (data + settings.beta * pairs) / q.size, q


def fit_sigma(codes: np.ndarray, grey: np.ndarray, levels: dict[str, float], sigma_start: float, noise_sd: float,
              settings: RefineSettings, al_below: int | None = None, z_first: int = 0) -> float:
    """The point-spread σ whose refined labelling leaves the least ``E`` per voxel (:func:`fitted_energy`).

    Bounded Brent search over :data:`FIT_RANGE` times ``sigma_start`` to :data:`FIT_TOLERANCE` voxels:
    the σ of the energy :func:`refine_codes` lowers, profiled over the labelling. Arguments as
    :func:`refine_codes` (a block of the volume: :func:`fit_block`); ``sigma_start`` NaN or <= 0, or no
    valid noise, returns ``sigma_start``.
    """
    if not (np.isfinite(sigma_start) and sigma_start > 0 and np.isfinite(noise_sd) and noise_sd > 0):
        return float(sigma_start)
    lo, hi = FIT_RANGE[0] * sigma_start, FIT_RANGE[1] * sigma_start
    res = optimize.minimize_scalar(
        lambda sig: fitted_energy(codes, grey, levels, sig, noise_sd, settings, al_below, z_first)[0],
        bounds=(lo, hi), method="bounded", options={"xatol": FIT_TOLERANCE})
    return float(res.x)


def at_fit_bound(sigma: float, sigma_start: float) -> bool:
    """Whether :func:`fit_sigma`'s σ lies within twice its tolerance of an end of its range: the least
    energy may lie beyond it, and the σ it started from is then far from the data's."""
    if not (np.isfinite(sigma) and np.isfinite(sigma_start) and sigma_start > 0):
        return False
    return any(abs(sigma - f * sigma_start) <= 2 * FIT_TOLERANCE for f in FIT_RANGE)
