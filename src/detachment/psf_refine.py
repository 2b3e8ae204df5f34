"""Phase codes refined against the blurred forward model of the volume.

A threshold decides each voxel on its own grey level. Under a point-spread function of σ voxels a
voxel's grey level is a blur of its neighbours' phases, so per-voxel decisions misread what the blur
mixes: electrolyte beside CBD or a particle reads as CBD, the edge of a high-density particle as low
density, the collector's face as CBD. Here the codes at the phase boundaries are moved to lower

    E(L) = Σ_v (g_v - (G_σ * μ[L])_v)² / (2 s²) + β · (6-neighbour pairs with different codes)

(``g`` the grey levels, ``μ`` the phases' grey levels, ``G_σ`` the Gaussian point-spread function,
``s`` the noise's standard deviation, ``β`` a smoothness weight in units of the noise's variance):
the labelling whose blurred image best explains the data, with a Potts prior against single-voxel
noise. The minimisation is iterated conditional modes (Besag 1986) over the eight interleaved
sub-lattices of the voxel grid (parities of z, y, x): in one step every voxel of a sub-lattice takes
the code among its 6-neighbours' that lowers ``E`` most, with the other sub-lattices held. A step that
raises ``E`` (the simultaneous moves of one sub-lattice interact through the blur) is undone, so ``E``
never rises; the sweeps end when nothing moves.

Moves are restricted to what the blur can hide: a voxel only takes a code one of its 6-neighbours has;
NMC low and high density are exchanged only on the particles' surface (a voxel with a neighbour outside
NMC), as inside a particle the densities are told apart on the domain means, not here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .phases import AL, NMC_HIGH, NMC_LOW, PHASE_NAMES

#: The eight sub-lattices (parities of z, y, x), in the order they are visited.
SUBLATTICES = tuple((a, b, c) for a in (0, 1) for b in (0, 1) for c in (0, 1))

_NEIGHBOURS = ((-1, 0, 0), (1, 0, 0), (0, -1, 0), (0, 1, 0), (0, 0, -1), (0, 0, 1))
_NO_CODE = 255  # pads the map: a neighbour outside the volume has no code


@dataclass
class RefineSettings:
    """How :func:`refine_codes` runs.

    Attributes
    ----------
    beta : float
        Smoothness weight: the energy of one pair of 6-neighbours with different codes, in units of the
        noise's variance (``E``'s data term is the squared residual over ``2 s²``).
    sweeps : int
        Most passes over the eight sub-lattices.
    """

    beta: float = 3.0
    sweeps: int = 4

    def __post_init__(self):
        if not np.isfinite(self.beta) or self.beta < 0:
            raise ValueError(f"threshold.psf_refine_beta: {self.beta!r} must be a number >= 0")
        if int(self.sweeps) != self.sweeps or self.sweeps < 0:
            raise ValueError(f"threshold.psf_refine_sweeps: {self.sweeps!r} must be an integer >= 0")
        self.sweeps = int(self.sweeps)


def blur_reach(sigma: float) -> int:
    """Voxels ``scipy.ndimage.gaussian_filter`` reaches on either side at σ (truncated at 4 σ)."""
    return int(4.0 * float(sigma) + 0.5)


def refine_halo(sigma: float) -> int:
    """Slices read on either side of a streamed slab for :func:`refine_codes`.

    A voxel's move depends on the codes and grey levels two blur reaches away (the prediction, then its
    residual blurred again) and on its neighbours: ``2 blur_reach(σ) + 2``. Later steps reach further,
    but each by less than the first, so this halo makes the streamed result equal to the whole volume's
    on all but a few voxels (the test measures it), not bit for bit.
    """
    return 2 * blur_reach(sigma) + 2


def kernel_energy(sigma: float) -> float:
    """``Σ G²`` of ``scipy.ndimage.gaussian_filter``'s discrete kernel at σ (3D): the data-term change per
    unit change of one voxel's level squared."""
    r = blur_reach(sigma)
    delta = np.zeros((2 * r + 1,) * 3)
    delta[r, r, r] = 1.0
    return float((ndimage.gaussian_filter(delta, float(sigma), mode="constant") ** 2).sum())


def _blurred(levels: np.ndarray, codes: np.ndarray, sigma: float) -> np.ndarray:
    """``G_σ * μ[codes]``: the grey levels the codes predict, float32."""
    return ndimage.gaussian_filter(levels[codes], float(sigma), mode="reflect", output=np.float32)


def _data_term(grey: np.ndarray, pred: np.ndarray, noise_sd: float) -> float:
    """``Σ (g - pred)² / (2 s²)``, summed in float64."""
    r = grey - pred
    np.square(r, out=r)
    return float(r.sum(dtype=np.float64)) / (2.0 * noise_sd ** 2)


def _pairs(codes: np.ndarray) -> int:
    """6-neighbour pairs with different codes."""
    return sum(int((np.diff(codes, axis=ax) != 0).sum()) for ax in range(codes.ndim))


def energy(codes: np.ndarray, grey: np.ndarray, levels: np.ndarray, sigma: float, noise_sd: float,
           beta: float) -> float:
    """``E`` of the module docstring for the (z, y, x) ``codes`` given the grey levels (``levels``: grey
    level per code), in units of the noise's variance."""
    return _data_term(np.asarray(grey, np.float32), _blurred(levels, codes, sigma), noise_sd) + beta * _pairs(codes)


def _neighbour_views(padded: np.ndarray, lattice: tuple[int, int, int]):
    """The six neighbours' codes of the sub-lattice ``lattice`` of the map ``padded`` (padded by one)."""
    out = []
    for dz, dy, dx in _NEIGHBOURS:
        out.append(padded[1 + lattice[0] + dz::2, 1 + lattice[1] + dy::2, 1 + lattice[2] + dx::2]
                   [: (padded.shape[0] - 2 - lattice[0] + 1) // 2,
                    : (padded.shape[1] - 2 - lattice[1] + 1) // 2,
                    : (padded.shape[2] - 2 - lattice[2] + 1) // 2])
    return out


def _moves(codes_s: np.ndarray, corr_s: np.ndarray, neighbours, levels: np.ndarray, present, kernel: float,
           noise_var: float, beta: float, al_allowed: np.ndarray | None):
    """The best code for each voxel of one sub-lattice (``codes_s``; ``corr_s`` the blurred residual
    there), the voxel's own code where no move lowers ``E``, and the change of the pairs with different
    codes (exact: no two voxels of a sub-lattice are 6-neighbours)."""
    counts = {k: sum((n == k).astype(np.int8) for n in neighbours) for k in present}
    own = np.zeros(codes_s.shape, np.int8)
    for k in present:
        own[codes_s == k] = counts[k][codes_s == k]
    nmc = np.isin(codes_s, (NMC_LOW, NMC_HIGH))
    surface = (6 - counts.get(NMC_LOW, 0) - counts.get(NMC_HIGH, 0)) > 0
    best, best_code = np.zeros(codes_s.shape, np.float32), codes_s.copy()
    mu = levels[codes_s]
    for k in present:
        d = levels[k] - mu
        change = (d * d * kernel - 2.0 * d * corr_s) / (2.0 * noise_var) + beta * (own - counts[k])
        ok = (counts[k] > 0) & (codes_s != k) & (change < best)
        if k in (NMC_LOW, NMC_HIGH):
            ok &= ~nmc | surface
        if k == AL and al_allowed is not None:
            ok &= al_allowed
        best[ok], best_code[ok] = change[ok], k
    pairs = 0
    for k in present:
        moved = (best_code == k) & (codes_s != k)
        pairs += int((own[moved] - counts[k][moved]).sum())
    return best_code, pairs


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
        not listed are never moved into.
    sigma : float
        The point-spread σ measured on the map, voxels; 0 or NaN returns a copy.
    noise_sd : float
        The noise's standard deviation, grey level (> 0).
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
    if not np.isfinite(sigma) or sigma <= 0 or not np.isfinite(noise_sd) or noise_sd <= 0:
        return out, 0
    names = {n: c for c, n in PHASE_NAMES.items()}
    lv = np.zeros(256, np.float32)
    present = []
    for name, g in levels.items():
        if np.isfinite(g):
            lv[names[name]] = g
            present.append(names[name])
    present = sorted(present)
    grey = np.asarray(grey, np.float32)
    kernel, var, beta = kernel_energy(sigma), float(noise_sd) ** 2, float(settings.beta)
    al_z = None if al_below is None else (np.arange(out.shape[0]) + z_first) < al_below
    pred = _blurred(lv, out, sigma)
    data, pairs = _data_term(grey, pred, noise_sd), _pairs(out)
    for _ in range(settings.sweeps):
        moved = 0
        for lattice in SUBLATTICES:
            sub = tuple(slice(p, None, 2) for p in lattice)
            corr = ndimage.gaussian_filter(grey - pred, float(sigma), mode="reflect", output=np.float32)
            views = _neighbour_views(np.pad(out, 1, constant_values=_NO_CODE), lattice)
            al_ok = None if al_z is None else np.broadcast_to(al_z[sub[0], None, None], out[sub].shape)
            new, d_pairs = _moves(out[sub], corr[sub], views, lv, present, kernel, var, beta, al_ok)
            step = new != out[sub]
            if not step.any():
                continue
            before = out[sub].copy()
            out[sub] = new
            new_pred = _blurred(lv, out, sigma)
            new_data = _data_term(grey, new_pred, noise_sd)
            if new_data + beta * (pairs + d_pairs) > data + beta * pairs:
                out[sub] = before  # the sub-lattice's moves interacted through the blur: undone
                continue
            pred, data, pairs = new_pred, new_data, pairs + d_pairs
            moved += int(step.sum())
        if moved == 0:
            break
    return out, int((out != codes).sum())
