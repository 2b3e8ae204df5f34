"""Phase codes refined against the blurred forward model of the volume.

A threshold decides each voxel on its own grey level. Under a point-spread function of σ voxels a
voxel's grey level is a blur of its neighbours' phases, so per-voxel decisions misread what the blur
mixes: electrolyte beside CBD or a particle reads as CBD, the edge of a high-density particle as low
density, the collector's face as CBD. Here the codes at the phase boundaries are moved to lower

    E(L) = Σ_v [ r_v² / (2 s²[L_v]) + ½ log(s²[L_v] / s₀²) ] + β · (6-neighbour pairs with different codes)

with ``r = g - G μ[L]`` (``g`` the grey levels, ``μ[L]`` each voxel's phase level, ``G`` the Gaussian
point-spread function of σ within the slices and ``z_factor`` σ along z, each cut at 3 times its own σ),
``s[L]`` the standard deviation of the grey levels about the
blurred map in phase ``L`` (the noise, and a textured phase's own spread on top of it), ``s₀`` the
narrowest of them and ``β`` a smoothness weight in units of that variance: the negative log-likelihood of
the labelling whose blurred image explains the data, each voxel's residual weighed by its own phase's
spread, with a Potts prior against single-voxel noise. A textured phase (NMC's density variations,
porous CBD) spreads its voxels' grey levels several times as widely as the electrolyte's noise; weighed
by the electrolyte's noise alone, that texture moves boundaries as if it were signal. With one ``s`` for
every phase ``E`` is ``‖g - G μ‖² / (2 s²)`` plus the prior. Only the volume's own voxels carry a
residual; beyond its faces the codes are mirrored (scipy's "reflect") from the map the refinement starts
from and never move.

The minimisation is iterated conditional modes (Besag 1986), voxel by voxel in raster order: a voxel
takes the code among its 6-neighbours' that lowers ``E`` most. The change of one move is exact: with
``A = Σ_u G(u - v) r_u / s²_u`` and ``B = Σ_u G(u - v)² / s²_u`` over the voxels ``u`` the kernel reaches,
a level change ``d`` with the variance going from ``s²_a`` to ``s²_k`` changes ``E`` by
``-d A + ½ d² B + ½ r'_v² (1/s²_k - 1/s²_a) + ½ log(s²_k / s²_a)`` plus β times the change of unlike
pairs (``r'_v = r_v - d G(0)``), and ``r`` is kept up to date by subtracting ``d G`` around each move, so
``E`` falls with every move. A voxel is read again only when a move within the kernel's reach of its
neighbourhood changed what it sees; the sweeps end when nothing moves.

σ itself is best fitted by the same energy (:func:`fit_sigma`): the σ whose refined labelling leaves
the least ``E`` per voxel; and σ along z apart from it (:func:`fit_spread`), as a reconstruction can be
blurrier or sharper along z than within its slices (a drift during the scan, slices binned or
interpolated, a volume resampled from a coarser grid). The σ of an erf fitted to the mean edge profile along the image axes reads a
surface tilted by θ from the axis as σ / cos θ; on real (and sub-voxel rendered) particles it is biased
high, and a forward model blurred too widely moves boundaries that are right.

NMC's density texture is read as a local level, not as noise (:func:`texture_offsets`,
``RefineSettings.texture_sigma`` > 0): a voxel coded NMC has level ``μ[L] + t_v``, ``t_v`` the
Gaussian-weighted mean residual of the voxels around it that the start map codes NMC and whose six
neighbours are NMC too (its own left out), fixed while the codes move, and NMC's ``s`` is then the spread left about those levels
(:func:`fit_texture_sigma`, which also picks the σ of the weighing). Weighed by NMC's whole spread instead,
a voxel of a one-voxel CBD coat in a notch of the particle costs little to code NMC, and the prior takes
it: the contact reads detached.

Moves are restricted to what the blur can hide: a voxel only takes a code one of its 6-neighbours has;
NMC low and high density are exchanged only on the particles' surface (a voxel with a neighbour outside
NMC), as inside a particle the densities are told apart on the domain means, not here.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
from numba import njit
from scipy import ndimage, optimize

from .phases import AL, NMC_HIGH, NMC_LOW, PHASE_NAMES

#: Range of :func:`fit_sigma`, as multiples of the σ it starts from (the edge profiles'): that σ reads
#: oblique surfaces and wide blurs too wide, sharp voxel-grid edges too narrow.
FIT_RANGE = (0.5, 1.6)
#: Range of :func:`fit_spread`'s σ along z, as multiples of the σ within the slices it starts from: a
#: point spread from half as wide to twice as wide along z (a scan's drift, slices binned or interpolated)
#: lies well inside it.
Z_FIT_RANGE = (0.4, 2.5)
#: σ (voxels) at or below which :func:`psf_kernel` is nearly a delta: its neighbours' weight is below 0.4 %.
SHARP_SIGMA = 0.3
#: Most (slices, rows, columns) :func:`fit_sigma` refines at each σ it tries (:func:`fit_block`).
FIT_BLOCK = (48, 192, 192)
#: Tolerance of :func:`fit_sigma`'s σ, voxels.
FIT_TOLERANCE = 0.02
#: Edge of the blocks of voxels :func:`refine_codes` marks to be read again after a move nearby.
DIRTY_BLOCK = 4
#: Largest share of a plane boundary's contrast the point spread may still carry into the voxels
#: :func:`deep_levels` reads a phase's grey level on.
DEEP_SPILL = 0.02
#: Fewest voxels :func:`deep_levels` reads a phase's grey level on; a phase with fewer keeps the level given.
DEEP_MIN_VOXELS = 1000
#: Residuals beyond this many of their code's spread (1.4826 × the median absolute deviation over its
#: voxels) are left out of :func:`texture_offsets`: voxels the start map codes NMC wrongly.
TEXTURE_CLIP = 3.0
#: The texture σs, voxels, :func:`fit_texture_sigma` tries.
TEXTURE_GRID = (0.3, 0.5, 0.7, 1.0, 1.5, 2.0, 3.0)
#: Least relative fall of NMC's pooled variance for :func:`fit_texture_sigma` to read a texture: white
#: texture, which no neighbour predicts, moves it by less than this with any σ.
TEXTURE_MIN_GAIN = 0.01


@dataclass
class RefineSettings:
    """How :func:`refine_codes` runs.

    Attributes
    ----------
    beta : float
        Smoothness weight: the energy of one pair of 6-neighbours with different codes, in units of the
        narrowest phase's variance (``E``'s data term is the squared residual over ``2 s²``).
    sweeps : int
        Most passes over the volume.
    texture_sigma : float
        σ (voxels) of the Gaussian over which NMC's local level is read (:func:`texture_offsets`); 0: one
        level per NMC code.
    z_factor : float
        The point spread's σ along z over its σ within the slices (the σ :func:`refine_codes` is given);
        1: isotropic.
    """

    beta: float = 3.0
    sweeps: int = 4
    texture_sigma: float = 0.0
    z_factor: float = 1.0

    def __post_init__(self):
        if not np.isfinite(self.z_factor) or self.z_factor <= 0:
            raise ValueError(f"threshold.psf_refine_z_factor: {self.z_factor!r} must be a number > 0")
        self.z_factor = float(self.z_factor)
        if not np.isfinite(self.texture_sigma) or self.texture_sigma < 0:
            raise ValueError(f"threshold.psf_refine_texture_vox: {self.texture_sigma!r} must be a number >= 0")
        self.texture_sigma = float(self.texture_sigma)
        if not np.isfinite(self.beta) or self.beta < 0:
            raise ValueError(f"threshold.psf_refine_beta: {self.beta!r} must be a number >= 0")
        if int(self.sweeps) != self.sweeps or self.sweeps < 0:
            raise ValueError(f"threshold.psf_refine_sweeps: {self.sweeps!r} must be an integer >= 0")
        self.sweeps = int(self.sweeps)


def data_radius(sigma: float) -> int:
    """Voxels the point-spread kernel of :func:`psf_kernel` reaches on either side: ``ceil(3 σ)``, at least 1."""
    return max(1, int(math.ceil(3.0 * float(sigma))))


def psf_kernel(sigma: float) -> np.ndarray:
    """1D float64 Gaussian of σ voxels sampled at the integers within :func:`data_radius` and normalised to
    sum 1 (scipy.ndimage's construction, cut at 3 σ instead of 4 σ); ``G`` in 3D is its outer product."""
    r = data_radius(sigma)
    x = np.arange(-r, r + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / float(sigma)) ** 2)
    return k / k.sum()


def psf_kernels(sigma: float, z_factor: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """The 1D kernels of ``G`` along z and within the slices (y and x): :func:`psf_kernel` of
    ``z_factor · σ`` and of ``σ``, the shorter padded with zeros to the length of the longer
    (:func:`border_width`), so that one reach serves every axis; ``G`` in 3D is ``kz ⊗ k ⊗ k``."""
    kz, k = psf_kernel(float(sigma) * float(z_factor)), psf_kernel(sigma)
    n = max(kz.size, k.size)
    return tuple(np.pad(a, (n - a.size) // 2) for a in (kz, k))


def border_width(sigma: float, z_factor: float = 1.0) -> int:
    """Mirrored voxels around a refined block: the reach of ``G`` (the longer of its two kernels)."""
    return max(data_radius(sigma), data_radius(float(sigma) * float(z_factor)))


def refine_halo(sigma: float, texture_sigma: float = 0.0, z_factor: float = 1.0) -> int:
    """Slices read on either side of a streamed slab for :func:`refine_codes`.

    A voxel's move depends on the residuals one kernel reach away along z, and those on the codes one
    reach further: ``2 · data_radius(z_factor · σ) + 2``, and with NMC's texture read (``texture_sigma`` >
    0) the reach of :func:`texture_offsets` more. Moves further out shift it a little through the moves
    between, so this halo makes the streamed result equal to the whole volume's on all but a few voxels
    (the test measures it), not bit for bit.
    """
    reach = data_radius(float(sigma) * float(z_factor))
    return 2 * reach + 2 + (data_radius(texture_sigma) if texture_sigma > 0 else 0)


def deep_depth(sigma: float) -> int:
    """6-connected erosions after which the spill of a plane boundary under a Gaussian of σ voxels,
    ``Φ(-(k + ½) / σ)`` of the contrast, is below :data:`DEEP_SPILL`: the smallest such ``k``, at least 1
    (1 where σ is not a number > 0)."""
    if not (np.isfinite(sigma) and sigma > 0):
        return 1
    from scipy.stats import norm

    return max(1, int(math.floor(-norm.ppf(DEEP_SPILL) * float(sigma) - 0.5)) + 1)


def deep_levels(codes: np.ndarray, grey: np.ndarray, levels: dict[str, float], sigma: float) -> dict[str, float]:
    """Each phase's grey level read where the blur of its boundaries has faded.

    A voxel whose six neighbours share its code (a phase's interior, where :func:`refine_codes`' levels
    are read by default) still holds ``Φ(-1.5 / σ)`` of the contrast across the nearest boundary: at σ 1,
    7 %, so a small or thin phase (high-density NMC domains, a porous CBD matrix) reads several hundredths
    towards its neighbours, and the forward model, with levels too close together, moves boundaries to
    explain the difference. Here each phase's level is the median grey level of its voxels at least
    :func:`deep_depth` 6-connected steps from any other code and from the block's faces, where σ asks for
    more than one step and the phase has :data:`DEEP_MIN_VOXELS` such voxels; the level given elsewhere.

    Parameters
    ----------
    codes : numpy.ndarray
        (z, y, x) uint8 phase codes of a block.
    grey : numpy.ndarray
        (z, y, x) its grey levels.
    levels : dict
        Phase name to grey level (those returned where no deeper reading is made).
    sigma : float
        Point-spread σ, voxels (the edge profiles' measure: biased high, so the depth errs deep).

    Returns
    -------
    dict
        Phase name to grey level, the same names as ``levels``.
    """
    out = dict(levels)
    depth = deep_depth(sigma)
    if depth <= 1:
        return out
    codes_of = {n: c for c, n in PHASE_NAMES.items()}
    ball = ndimage.generate_binary_structure(3, 1)
    grey = np.asarray(grey)
    for name in levels:
        inside = ndimage.binary_erosion(codes == codes_of[name], ball, iterations=depth, border_value=0)
        if int(inside.sum()) >= DEEP_MIN_VOXELS:
            out[name] = float(np.median(grey[inside]))
    return out


def blurred_levels(mu: np.ndarray, sigma: float, z_factor: float = 1.0) -> np.ndarray:
    """``G μ`` in float64 over the (z, y, x) levels ``mu``, zero beyond its faces (pad it first); ``G``'s σ
    is ``z_factor · sigma`` along z."""
    out = np.asarray(mu, np.float64)
    for ax, k in enumerate(_axis_kernels(*psf_kernels(sigma, z_factor))):
        out = ndimage.correlate1d(out, k, axis=ax, mode="constant")
    return out


def _axis_kernels(kz: np.ndarray, k: np.ndarray, dtype=np.float64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The (z, y, x) kernels of :func:`psf_kernels`' pair, as ``dtype``."""
    return kz.astype(dtype), k.astype(dtype), k.astype(dtype)


def mirrored(a: np.ndarray, pad: int, border: np.ndarray | None = None) -> np.ndarray:
    """``a`` with ``pad`` voxels on every side mirrored from ``border`` (default ``a``), as scipy's
    "reflect" (numpy's "symmetric")."""
    out = np.pad(a if border is None else border, pad, mode="symmetric")
    out[pad: pad + a.shape[0], pad: pad + a.shape[1], pad: pad + a.shape[2]] = a
    return out


def energy(codes: np.ndarray, grey: np.ndarray, levels: np.ndarray, sigma: float, noise_sd,
           beta: float, border: np.ndarray | None = None, z_factor: float = 1.0) -> float:
    """``E`` of the module docstring as :func:`refine_codes` lowers it, float64 (each residual over its own
    phase's variance, so dimensionless): over the (z, y, x) ``codes`` with :func:`border_width` voxels mirrored beyond the faces
    from ``border`` (the map it started from; default ``codes``), ``levels`` the grey level per code (256),
    ``noise_sd`` as :func:`refine_codes` takes it (or one per code, (256,)); ``G``'s σ is ``z_factor · sigma``
    along z."""
    pad = border_width(sigma, z_factor)
    model = blurred_levels(levels[mirrored(codes, pad, border)], sigma, z_factor)
    nz, ny, nx = codes.shape
    r = np.asarray(grey, np.float64) - model[pad: pad + nz, pad: pad + ny, pad: pad + nx]
    var = _variance_table(noise_sd)
    w = var[codes]
    data = float((r * r / (2.0 * w) + 0.5 * np.log(w / var.min())).sum())
    pairs = sum(int((np.diff(codes, axis=ax) != 0).sum()) for ax in range(codes.ndim))
    return data + beta * pairs


def _variance_table(noise_sd) -> np.ndarray:
    """(256,) float64 variance per code from ``noise_sd`` as :func:`noise_table` reads it (or a (256,) array),
    the narrowest given where a code has none."""
    sd = noise_table(noise_sd)
    good = np.isfinite(sd)
    sd[~good] = sd[good].min() if good.any() else 1.0
    return sd * sd


@njit(cache=True, nogil=True)
def _best_code(nb, a, A, B, r_v, g0, levels, t_v, inv_var, log_var, known, beta, al_ok, low, high, al):
    """The code among the six neighbours' ``nb`` (255: none) that lowers ``E`` most for a voxel of code
    ``a`` (``A``, ``B``, its residual ``r_v``: the module docstring), or ``a`` where no move lowers it."""
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
        if (k == low or k == high) != nmc:
            d += t_v if not nmc else -t_v  # NMC's level here carries its local texture
        rn = r_v - d * g0
        change = (-d * A + 0.5 * d * d * B + 0.5 * rn * rn * (inv_var[k] - inv_var[a])
                  + 0.5 * (log_var[k] - log_var[a]) + beta * (own - n_k))
        if change < best:
            best, best_k = change, k
    return best_k


@njit(cache=True, nogil=True)
def _has_candidate(nb, a, known, al_ok, al):
    """Whether a neighbour's code is one the voxel of code ``a`` may take."""
    for i in range(6):
        k = nb[i]
        if k != 255 and k != a and known[k] and (k != al or al_ok):
            return True
    return False


@njit(cache=True, nogil=True)
def _weighed(q, kz, k, z, y, x, lo, hi):
    """``A`` of the module docstring at (z, y, x): ``Σ_u G(u - v) q_u`` with ``q = r / s²`` over the voxels
    within the kernel's reach inside ``lo``-``hi`` (per axis, inclusive-exclusive); ``G = kz ⊗ k ⊗ k``
    (:func:`psf_kernels`)."""
    rad = (k.size - 1) // 2
    A = 0.0
    x0, x1 = max(-rad, lo[2] - x), min(rad, hi[2] - 1 - x) + 1
    for dz in range(max(-rad, lo[0] - z), min(rad, hi[0] - 1 - z) + 1):
        wz = kz[dz + rad]
        for dy in range(max(-rad, lo[1] - y), min(rad, hi[1] - 1 - y) + 1):
            row = 0.0
            for dx in range(x0, x1):
                row += k[dx + rad] * q[z + dz, y + dy, x + dx]
            A += wz * k[dy + rad] * row
    return A


@njit(cache=True, nogil=True)
def _moved(r, q, b_sum, inv_w, dirty, d, inv_old, inv_new, kz, k, z, y, x, lo, hi):
    """After the voxel ``v = (z, y, x)`` changed level by ``d`` and inverse variance from ``inv_old`` to
    ``inv_new``: ``r -= d G(· - v)``, ``q = r / s²`` and ``B`` (``b_sum``) brought up to date inside
    ``lo``-``hi``, and the blocks of :data:`DIRTY_BLOCK` voxels within twice the kernel's reach marked
    ``dirty``."""
    rad = (k.size - 1) // 2
    inv_w[z, y, x] = inv_new
    dinv = inv_new - inv_old
    for dz in range(max(-rad, lo[0] - z), min(rad, hi[0] - 1 - z) + 1):
        wz = kz[dz + rad]
        for dy in range(max(-rad, lo[1] - y), min(rad, hi[1] - 1 - y) + 1):
            wzy = wz * k[dy + rad]
            for dx in range(max(-rad, lo[2] - x), min(rad, hi[2] - 1 - x) + 1):
                g = wzy * k[dx + rad]
                u = (z + dz, y + dy, x + dx)
                r[u] -= np.float32(d * g)
                q[u] = r[u] * inv_w[u]
                if dinv != 0.0:
                    b_sum[u] += g * g * dinv
    reach, b = 2 * rad + 1, DIRTY_BLOCK
    dirty[max(0, z - reach) // b: (z + reach) // b + 1, max(0, y - reach) // b: (y + reach) // b + 1,
          max(0, x - reach) // b: (x + reach) // b + 1] = True


@njit(cache=True, nogil=True)
def _sweeps(codes, r, q, b_sum, inv_w, levels, tex, inv_var, log_var, known, kz, k, beta, sweeps, al_top, low, high,
            al, pad):
    """Iterated conditional modes in raster order (the module docstring) over ``codes`` less ``pad``
    voxels on every side (a mirrored border, never moved, no one's neighbour, no residual), at most
    ``sweeps`` passes; ``r`` (``g - G μ``, float32, the volume's own voxels) is kept up to date, with
    ``q = r / s²``, ``B`` and ``1 / s²`` per voxel beside it (:func:`_weights`). Returns the moves made."""
    mz, my, mx = codes.shape
    lo = np.array([pad, pad, pad])
    hi = np.array([mz - pad, my - pad, mx - pad])
    nz, ny, nx = hi[0], hi[1], hi[2]
    g0 = kz[(k.size - 1) // 2] * k[(k.size - 1) // 2] ** 2
    nb = np.empty(6, np.int64)
    b = DIRTY_BLOCK
    shape_b = ((mz + b - 1) // b, (my + b - 1) // b, (mx + b - 1) // b)
    # a voxel is read where a move within twice the kernel's reach may have changed what it sees since
    # it was last read: its block was marked in the previous sweep (``now``) or in this one (``later``)
    now, later = np.ones(shape_b, np.bool_), np.zeros(shape_b, np.bool_)
    total = 0
    for _ in range(sweeps):
        moved = 0
        for z in range(pad, nz):
            for y in range(pad, ny):
                for x in range(pad, nx):
                    a = codes[z, y, x]
                    if not known[a] or not (now[z // b, y // b, x // b] or later[z // b, y // b, x // b]):
                        continue
                    nb[0] = codes[z - 1, y, x] if z > pad else 255
                    nb[1] = codes[z + 1, y, x] if z < nz - 1 else 255
                    nb[2] = codes[z, y - 1, x] if y > pad else 255
                    nb[3] = codes[z, y + 1, x] if y < ny - 1 else 255
                    nb[4] = codes[z, y, x - 1] if x > pad else 255
                    nb[5] = codes[z, y, x + 1] if x < nx - 1 else 255
                    al_ok = z - pad < al_top[y - pad, x - pad]
                    if not _has_candidate(nb, a, known, al_ok, al):
                        continue
                    A = _weighed(q, kz, k, z, y, x, lo, hi)
                    t_v = tex[z, y, x]
                    best = _best_code(nb, a, A, b_sum[z, y, x], r[z, y, x], g0, levels, t_v, inv_var, log_var,
                                      known, beta, al_ok, low, high, al)
                    if best != a:
                        codes[z, y, x] = best
                        d = levels[best] - levels[a]
                        if (best == low or best == high) != (a == low or a == high):
                            d += t_v if (best == low or best == high) else -t_v
                        _moved(r, q, b_sum, inv_w, later, d, inv_var[a], inv_var[best], kz, k, z, y, x, lo, hi)
                        moved += 1
        total += moved
        if moved == 0:
            break
        now[:] = later
        later[:] = False
    return total


def _level_table(levels: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
    """(256,) float64 grey level per code from ``levels`` (per phase name) and (256,) bool: the code has one."""
    codes_of = {n: c for c, n in PHASE_NAMES.items()}
    lv, known = np.zeros(256, np.float64), np.zeros(256, np.bool_)
    for name, g in levels.items():
        if np.isfinite(g):
            lv[codes_of[name]], known[codes_of[name]] = g, True
    return lv, known


def noise_table(noise_sd) -> np.ndarray:
    """(256,) float64 standard deviation per code from one number (every phase) or a dict per phase name;
    NaN where none is given or the value is not a number > 0."""
    out = np.full(256, np.nan)
    if isinstance(noise_sd, np.ndarray) and noise_sd.shape == (256,):
        out[:] = noise_sd
    elif isinstance(noise_sd, dict):
        codes_of = {n: c for c, n in PHASE_NAMES.items()}
        for name, sd in noise_sd.items():
            out[codes_of[name]] = sd
    else:
        out[:] = float(noise_sd)
    out[~(np.isfinite(out) & (out > 0))] = np.nan
    return out


def _valid_noise(noise_sd) -> bool:
    """Whether ``noise_sd`` (as :func:`noise_table` reads it) gives at least one standard deviation > 0."""
    return bool(np.isfinite(noise_table(noise_sd)).any())


def refine_codes(codes: np.ndarray, grey: np.ndarray, levels: dict[str, float], sigma: float,
                 noise_sd: float | dict[str, float], settings: RefineSettings,
                 al_below: int | np.ndarray | None = None,
                 z_first: int = 0) -> tuple[np.ndarray, int]:
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
    noise_sd : float or dict
        Standard deviation of the grey levels about the blurred map, grey level: one for every phase, or
        one per phase name (a phase without one, or NaN, gets the narrowest given); none valid returns a
        copy.
    settings : RefineSettings
        β and the most sweeps.
    al_below : int or numpy.ndarray, optional
        Volume z of the first slice no voxel may become Al in (the collector's top): for every column, or
        (y, x) per column of ``codes``; None: anywhere.
    z_first : int, default 0
        Volume z of ``codes[0]``.

    Returns
    -------
    tuple of (numpy.ndarray, int)
        The refined uint8 codes (a new array) and the number of voxels whose code changed.
    """
    out = np.array(codes, dtype=np.uint8)
    if not np.isfinite(sigma) or sigma <= 0 or not _valid_noise(noise_sd) or settings.sweeps == 0:
        return out, 0
    lv, known = _level_table(levels)
    var = _variance_table(noise_sd)
    kz, k = psf_kernels(sigma, settings.z_factor)
    # codes mirrored beyond the faces as far as G reaches: near the volume's faces G μ then sees what
    # scipy's "reflect" sees, and no face pulls its voxels toward brighter levels
    pad = border_width(sigma, settings.z_factor)
    work = mirrored(out, pad)
    nz, ny, nx = out.shape
    # float32 and one temporary at a time: a streamed slab holds about five float32 copies at most
    r = padded_residual(work, grey, lv, k, pad, kz)
    top = out.shape[0] + int(z_first) if al_below is None else al_below
    al_top = np.ascontiguousarray(np.broadcast_to(np.maximum(np.asarray(top, np.int64) - int(z_first), 0),
                                                  out.shape[1:]))
    tex = np.zeros(work.shape, np.float32)
    if settings.texture_sigma > 0:
        tex = _texture_removed(work, r, k, pad, settings.texture_sigma, kz)
    q, b_sum, inv_w = _weights(work, r, 1.0 / var, k, pad, kz)
    _sweeps(work, r, q, b_sum, inv_w, lv, tex, 1.0 / var, np.log(var / var.min()), known, kz, k, float(settings.beta),
            settings.sweeps, al_top, NMC_LOW, NMC_HIGH, AL, pad)
    out = work[pad: pad + nz, pad: pad + ny, pad: pad + nx].copy()
    return out, int((out != codes).sum())


def texture_offsets(work: np.ndarray, r: np.ndarray, texture_sigma: float, pad: int) -> np.ndarray:
    """NMC's local level about each NMC code's level, per voxel of the padded map ``work`` (float32).

    NMC's density varies within a particle over a few voxels. With one level per code that texture is
    residual, a voxel coded NMC is weighed by NMC's wide spread, and a voxel of a thin CBD coat costs little
    to code NMC. Here the texture at each voxel is read from its neighbours' residuals ``r`` (``g - G μ`` of
    the map ``work``; the volume's own voxels, zero on the ``pad`` border): their mean over the voxels coded
    NMC whose six neighbours are NMC too, weighed by a Gaussian of ``texture_sigma`` voxels cut at 3 σ,
    leaving out the voxel itself (a voxel's own grey level never explains itself) and voxels whose residual
    lies beyond :data:`TEXTURE_CLIP` spreads of their code's. Zero where no such voxel is within reach.
    """
    inner = _inner(work.shape, pad)
    # only voxels whose six neighbours are NMC too: a surface voxel's grey level mixes in what lies beyond
    # wherever the surface cuts it, and would pull the level at the surface towards the electrolyte's
    solid = ndimage.binary_erosion((work == NMC_LOW) | (work == NMC_HIGH), ndimage.generate_binary_structure(3, 1),
                                   border_value=1)
    m = np.zeros(work.shape, np.float32)
    for c in (NMC_LOW, NMC_HIGH):
        mine = np.zeros(work.shape, bool)
        mine[inner] = work[inner] == c
        if not mine.any():
            continue
        m[mine & solid] = (np.abs(r) <= TEXTURE_CLIP * _robust_sd(r[mine]))[mine & solid]
    kt = psf_kernel(texture_sigma).astype(np.float32)
    w0 = np.float32(float(kt[(kt.size - 1) // 2]) ** 3)
    num, den = m * r, m.copy()
    for ax in range(3):
        num = ndimage.correlate1d(num, kt, axis=ax, mode="constant", output=np.float32)
        den = ndimage.correlate1d(den, kt, axis=ax, mode="constant", output=np.float32)
    num -= w0 * m * r
    den -= w0 * m
    out = np.zeros(work.shape, np.float32)
    ok = den > 1e-3
    out[ok] = num[ok] / den[ok]
    return out


def _inner(shape, pad: int) -> tuple[slice, slice, slice]:
    """The volume's own voxels of a map padded by ``pad`` on every side."""
    return tuple(slice(pad, n - pad) for n in shape)


def _texture_removed(work: np.ndarray, r: np.ndarray, k: np.ndarray, pad: int, texture_sigma: float,
                     kz: np.ndarray | None = None) -> np.ndarray:
    """:func:`texture_offsets` of ``work`` and ``r``, with ``r`` brought to the textured levels in place
    (less ``G`` of the offsets on the voxels coded NMC; ``kz`` along z, default ``k``)."""
    tex = texture_offsets(work, r, texture_sigma, pad)
    g = tex * ((work == NMC_LOW) | (work == NMC_HIGH))
    for ax, kk in enumerate(_axis_kernels(k if kz is None else kz, k, np.float32)):
        g = ndimage.correlate1d(g, kk, axis=ax, mode="constant", output=np.float32)
    inner = _inner(work.shape, pad)
    r[inner] -= g[inner]
    return tex


def nmc_spread(work: np.ndarray, r: np.ndarray, pad: int) -> dict[str, float]:
    """Each NMC code's spread of the residuals ``r`` over its voxels of the padded map ``work``: 1.4826 ×
    the median absolute deviation, for codes with at least :data:`DEEP_MIN_VOXELS` voxels."""
    inner = _inner(work.shape, pad)
    out = {}
    for c in (NMC_LOW, NMC_HIGH):
        vals = r[inner][work[inner] == c]
        if vals.size >= DEEP_MIN_VOXELS:
            out[PHASE_NAMES[c]] = _robust_sd(vals)
    return out


def _robust_sd(values: np.ndarray) -> float:
    """1.4826 × the median absolute deviation of ``values``: their standard deviation where they are normal,
    unmoved by a few far out."""
    return float(1.4826 * np.median(np.abs(values - np.median(values))))


def fit_texture_sigma(codes: np.ndarray, grey: np.ndarray, levels: dict[str, float], sigma: float,
                      grid: tuple[float, ...] = TEXTURE_GRID, or_none: bool = True, z_factor: float = 1.0
                      ) -> tuple[float, dict[str, float], dict[str, float]]:
    """The texture σ of :func:`texture_offsets` that leaves NMC's residuals least spread, that spread, and
    the spread with one level per code.

    Over the (z, y, x) block ``codes`` / ``grey`` (a block of the volume: :func:`fit_block`) with the
    levels and point-spread σ of :func:`refine_codes`: for each σ of ``grid`` and for none (0), each NMC
    code's spread about the textured levels (:func:`nmc_spread`), pooled over the codes as the voxel-weighted
    mean variance; the σ with the least. A leave-one-out prediction of each voxel's texture from its
    neighbours', so white texture (nothing to predict) keeps 0, and a smooth one takes the σ that
    predicts it best (``or_none`` False: the best of ``grid`` even where none lowers the spread). Returns
    (0, {}, {}) where the block has too few NMC voxels or ``sigma`` is not > 0; the spreads are each NMC
    code's (phase name to grey level; the same where the σ is 0). ``G``'s σ is ``z_factor · sigma`` along z.
    """
    if not (np.isfinite(sigma) and sigma > 0):
        return 0.0, {}, {}
    lv, _ = _level_table(levels)
    kz, k = psf_kernels(sigma, z_factor)
    pad = border_width(sigma, z_factor)
    work = mirrored(np.asarray(codes, np.uint8), pad)
    r0 = padded_residual(work, grey, lv, k, pad, kz)
    n = {PHASE_NAMES[c]: int((codes == c).sum()) for c in (NMC_LOW, NMC_HIGH)}

    def pooled(sd: dict[str, float]) -> float:
        return sum(n[c] * v * v for c, v in sd.items()) / max(1, sum(n[c] for c in sd))

    none = nmc_spread(work, r0, pad)
    if not none:
        return 0.0, {}, {}
    # each voxel's residual less its texture read from its neighbours alone: the forward model's G of the
    # offsets would also hand each voxel a share of its own residual back through theirs
    tried = {float(ts): nmc_spread(work, r0 - texture_offsets(work, r0, ts, pad), pad) for ts in grid}
    best = min(tried, key=lambda ts: pooled(tried[ts]))
    if or_none and pooled(tried[best]) > (1.0 - TEXTURE_MIN_GAIN) * pooled(none):
        return 0.0, none, none
    return best, tried[best], none


def padded_residual(work: np.ndarray, grey: np.ndarray, lv: np.ndarray, k: np.ndarray, pad: int,
                    kz: np.ndarray | None = None) -> np.ndarray:
    """``r = g - G μ`` (float32) over the map ``work`` padded by ``pad`` voxels on every side (:func:`mirrored`),
    ``lv`` the grey level per code (256,), ``k`` the 1D kernel within the slices and ``kz`` along z (default
    ``k``; :func:`psf_kernels`) and ``grey`` the volume's own voxels; zero on the border."""
    r = lv.astype(np.float32)[work]
    for ax, kk in enumerate(_axis_kernels(k if kz is None else kz, k, np.float32)):
        r = ndimage.correlate1d(r, kk, axis=ax, mode="constant", output=np.float32)
    nz, ny, nx = (n - 2 * pad for n in work.shape)
    inside = r[pad: pad + nz, pad: pad + ny, pad: pad + nx]
    np.subtract(np.asarray(grey, np.float32), inside, out=inside)
    r[:pad], r[pad + nz:], r[:, :pad], r[:, pad + ny:], r[:, :, :pad], r[:, :, pad + nx:] = 0, 0, 0, 0, 0, 0
    return r


def _weights(work: np.ndarray, r: np.ndarray, inv_var: np.ndarray, k: np.ndarray, pad: int,
             kz: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``q = r / s²``, ``B = Σ_u G(u - v)² / s²_u`` and ``1 / s²`` per voxel of the padded map ``work`` (float32),
    zero on its ``pad`` border (no residual there); ``G = kz ⊗ k ⊗ k`` (``kz`` default ``k``)."""
    inside = _inner(work.shape, pad)
    inv_w = np.zeros(work.shape, np.float32)
    inv_w[inside] = inv_var[work[inside]]
    b_sum, kz = inv_w, k if kz is None else kz
    for ax, k2 in enumerate(_axis_kernels(kz * kz, k * k, np.float32)):
        b_sum = ndimage.correlate1d(b_sum, k2, axis=ax, mode="constant", output=np.float32)
    return r * inv_w, b_sum, inv_w


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


def fitted_energy(codes: np.ndarray, grey: np.ndarray, levels: dict[str, float], sigma: float,
                  noise_sd: float | dict[str, float], settings: RefineSettings,
                  al_below: int | np.ndarray | None = None, z_first: int = 0) -> tuple[float, np.ndarray]:
    """``E`` per voxel of ``codes`` refined at ``sigma`` (:func:`refine_codes`) and the refined codes.

    ``E`` (:func:`energy`) has ``G μ`` blurred over the refined block's own map mirrored at its faces
    (scipy's "reflect"), so that blocks of different σ are weighed on the same voxels; one level per NMC
    code (``settings.texture_sigma`` is not used).
    """
    settings = dataclasses.replace(settings, texture_sigma=0.0)
    q, _ = refine_codes(codes, grey, levels, sigma, noise_sd, settings, al_below, z_first)
    e = energy(q, grey, _level_table(levels)[0], sigma, noise_sd, settings.beta, z_factor=settings.z_factor)
    return e / q.size, q


def fit_sigma(codes: np.ndarray, grey: np.ndarray, levels: dict[str, float], sigma_start: float,
              noise_sd: float | dict[str, float], settings: RefineSettings,
              al_below: int | np.ndarray | None = None, z_first: int = 0) -> float:
    """The point-spread σ whose refined labelling leaves the least ``E`` per voxel (:func:`fitted_energy`).

    Bounded Brent search over :data:`FIT_RANGE` times ``sigma_start`` to :data:`FIT_TOLERANCE` voxels:
    the σ of the energy :func:`refine_codes` lowers, profiled over the labelling. Arguments as
    :func:`refine_codes` (a block of the volume: :func:`fit_block`); ``sigma_start`` NaN or <= 0, or no
    valid noise, returns ``sigma_start``.
    """
    if not (np.isfinite(sigma_start) and sigma_start > 0 and _valid_noise(noise_sd)):
        return float(sigma_start)
    lo, hi = FIT_RANGE[0] * sigma_start, FIT_RANGE[1] * sigma_start
    res = optimize.minimize_scalar(
        lambda sig: fitted_energy(codes, grey, levels, sig, noise_sd, settings, al_below, z_first)[0],
        bounds=(lo, hi), method="bounded", options={"xatol": FIT_TOLERANCE})
    return float(res.x)


def fit_spread(codes: np.ndarray, grey: np.ndarray, levels: dict[str, float], sigma_start: float,
               noise_sd: float | dict[str, float], settings: RefineSettings,
               al_below: int | np.ndarray | None = None, z_first: int = 0, sigma: float | None = None
               ) -> tuple[float, float]:
    """The point spread's σ within the slices and its z factor (σ along z over it) whose refined labelling
    leaves the least ``E`` per voxel (:func:`fitted_energy`).

    Coordinate descent on (σ, σ along z), each a bounded Brent search to :data:`FIT_TOLERANCE` voxels: σ
    isotropic (:func:`fit_sigma`, started from ``sigma_start``), σ along z at that σ (over
    :data:`Z_FIT_RANGE` times it), σ again (over :data:`FIT_RANGE` times ``sigma_start``) at that σ along
    z, and σ along z again. The two axes are nearly independent there (steps along z against steps
    within the slices), so one round comes close to the joint minimum. Given ``sigma`` (a σ set in the
    config), only σ along z is fitted, at that σ. Arguments otherwise as :func:`fit_sigma`; an invalid
    start returns (``sigma_start``, 1).
    """
    if sigma is None and not (np.isfinite(sigma_start) and sigma_start > 0 and _valid_noise(noise_sd)):
        return float(sigma_start), 1.0
    if sigma is not None and not (np.isfinite(sigma) and sigma > 0 and _valid_noise(noise_sd)):
        return float(sigma), 1.0

    def e(sig: float, sig_z: float) -> float:
        s = dataclasses.replace(settings, z_factor=sig_z / sig)
        return fitted_energy(codes, grey, levels, sig, noise_sd, s, al_below, z_first)[0]

    fixed = sigma is not None
    if not fixed:
        sigma = fit_sigma(codes, grey, levels, sigma_start, noise_sd, dataclasses.replace(settings, z_factor=1.0),
                          al_below, z_first)
    sig_z = _bounded_min(lambda v: e(sigma, v), Z_FIT_RANGE[0] * sigma, Z_FIT_RANGE[1] * sigma)
    if not fixed:
        sigma = _bounded_min(lambda v: e(v, sig_z), FIT_RANGE[0] * sigma_start, FIT_RANGE[1] * sigma_start)
        sig_z = _bounded_min(lambda v: e(sigma, v), Z_FIT_RANGE[0] * sigma, Z_FIT_RANGE[1] * sigma)
    return float(sigma), float(sig_z / sigma)


def _bounded_min(fun, lo: float, hi: float) -> float:
    """The argument of ``fun``'s least value on [``lo``, ``hi``] (bounded Brent, :data:`FIT_TOLERANCE`)."""
    return float(optimize.minimize_scalar(fun, bounds=(lo, hi), method="bounded",
                                          options={"xatol": FIT_TOLERANCE}).x)


def at_z_fit_bound(z_factor: float, sigma: float) -> bool:
    """Whether :func:`fit_spread`'s z factor lies within twice its tolerance of an end of
    :data:`Z_FIT_RANGE` (σ ``sigma`` within the slices), where the least energy may lie beyond it. Not at
    the lower end where σ along z is :data:`SHARP_SIGMA` or less there: such a kernel is nearly a delta,
    so every σ below it gives the same energy."""
    if not (np.isfinite(z_factor) and np.isfinite(sigma) and sigma > 0):
        return False
    lo, hi = Z_FIT_RANGE
    return (abs(z_factor - hi) * sigma <= 2 * FIT_TOLERANCE
            or (abs(z_factor - lo) * sigma <= 2 * FIT_TOLERANCE and lo * sigma > SHARP_SIGMA))


def at_fit_bound(sigma: float, sigma_start: float) -> bool:
    """Whether :func:`fit_sigma`'s σ lies within twice its tolerance of an end of its range: the least
    energy may lie beyond it, and the σ it started from is then far from the data's."""
    if not (np.isfinite(sigma) and np.isfinite(sigma_start) and sigma_start > 0):
        return False
    return any(abs(sigma - f * sigma_start) <= 2 * FIT_TOLERANCE for f in FIT_RANGE)
