"""The point-spread function of a reconstruction, measured on the particles' own edges.

A blurred step is an error function whatever the contrast; averaged over many straight edges between
NMC and the background (electrolyte or CBD) of the phase map, the grey-level profile across the flat
edges with one phase beyond gives the blur σ (voxels), and across every edge how wide a step looks along
the grid.
The first decides whether gaps of one to three voxels can be seen at all (:mod:`detachment.plausibility`).
Axes (z, y, x); edges are taken along y and x, within slices.
Main entry point: :class:`EdgeProfiles`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from . import slab_kernels
from .phases import CBD, NMC_HIGH, NMC_LOW, PHASE_NAMES, VOID

#: Voxels of the same class required on each side of an edge (the profile is 2 x this long).
RUN = 3
#: Every this many slices (by volume z) give every edge's profile: it needs thousands of edges, not all. The
#: flat edges are fewer (hundreds to a few thousand in a phantom cell) and are read on every slice.
SLICE_STEP = 4
#: Fewest flat edges whose mean profile gives the point spread: the profile is a mean over edges whose
#: noise and surface positions average out, and small crops hold only a few hundred flat edges.
MIN_FLAT_EDGES = 100
#: Fewest edges whose mean profile gives the width of a step along the grid (:meth:`EdgeProfiles.sigma`).
MIN_EDGES = 200
#: Blocks of consecutive slices the point spread's standard error is taken over (:meth:`EdgeProfiles.psf_sigma_se`).
JACKKNIFE_BLOCKS = 8
#: Positions of a profile's voxels from the edge, voxels (NMC side negative).
PROFILE_X = np.arange(2 * RUN) - RUN + 0.5


class EdgeProfiles:
    """Mean grey-level profiles across straight NMC / background edges, accumulated slice by slice.

    Two profiles: over every edge found along the grid's lines, and over the flat ones only (one
    background phase, electrolyte or CBD, beyond the edge, and the same phases on the four neighbouring
    lines, :func:`detachment.slab_kernels.edge_profiles`). Where a
    surface meets a line at an angle θ from its normal, the line sees the step σ / cos θ wide; on a map
    whose surfaces follow the voxel faces this hardly matters, but where they cut voxels anywhere (partial
    volume) every slanted surface widens the first profile; and where the background is CBD for a voxel
    and electrolyte beyond (a coat), its step is not one step. So the flat edges measure the point spread
    (:meth:`psf_sigma`), and every edge measures how wide a step looks along the grid (:meth:`sigma`),
    which is what the steps reading grey levels along the grid (edge shells, spill, sharpening) undo.
    The profiles of each slice are summed apart and the slices added in z order, so the result does
    not depend on how the volume was cut into slabs or in which order they came.

    Attributes
    ----------
    slices : dict
        Volume z -> ((2 RUN,) float64 sum of the slice's profiles, int number of profiles).
    flat : dict
        The same over the flat edges, for every slice.
    """

    def __init__(self):
        self.slices: dict[int, tuple[np.ndarray, int]] = {}
        self.flat: dict[int, tuple[np.ndarray, int]] = {}

    @property
    def total(self) -> np.ndarray:
        """(2 RUN,) float64 sum of the profiles, NMC side first (positions -RUN + 0.5 .. RUN - 0.5 voxels
        from the edge), the slices added in z order."""
        return _sum_slices(self.slices)[0]

    @property
    def count(self) -> int:
        """Profiles summed."""
        return _sum_slices(self.slices)[1]

    @property
    def flat_total(self) -> np.ndarray:
        """(2 RUN,) float64 sum of the flat edges' profiles, as :attr:`total`."""
        return _sum_slices(self.flat)[0]

    @property
    def flat_count(self) -> int:
        """Flat edges' profiles summed."""
        return _sum_slices(self.flat)[1]

    def add(self, phases: np.ndarray, grey: np.ndarray, z0: int = 0, rows: slice | None = None) -> None:
        """Add the edges of one slab: every edge of its slices whose volume z is a multiple of
        :data:`SLICE_STEP`, and the flat edges of all its slices (:func:`detachment.slab_kernels.edge_profiles`).

        Parameters
        ----------
        phases : numpy.ndarray
            (z, y, x) uint8 phase codes: the slab, with a slice of context each side where it has one.
        grey : numpy.ndarray
            (z, y, x) grey levels, same shape.
        z0 : int, default 0
            Volume z of the slab's first slice (``phases[rows.start]``).
        rows : slice, optional
            The slab's own slices of ``phases`` (default: all); the others are read only to tell whether
            an edge is flat, so a volume added in slabs with their context gives the same sums as whole.
        """
        start, stop, _ = (rows or slice(None)).indices(len(phases))
        keep = np.arange(start, stop, dtype=np.int64)
        if not keep.size:
            return
        every = ((z0 + keep - start) % SLICE_STEP) == 0
        totals, counts = np.zeros((keep.size, 2 * RUN)), np.zeros(keep.size, np.int64)
        flat_totals, flat_counts = np.zeros((keep.size, 2 * RUN)), np.zeros(keep.size, np.int64)
        lo, hi = max(0, start - 1), min(len(phases), stop + 1)  # the slab and its slices of context
        slab_kernels.edge_profiles(np.ascontiguousarray(phases[lo:hi]), np.ascontiguousarray(grey[lo:hi], np.float32),
                                   keep - lo, every, (NMC_LOW, NMC_HIGH), (VOID, CBD), RUN, totals, counts,
                                   flat_totals, flat_counts, np.ones(2, np.bool_))
        for i, z in enumerate(keep):
            if every[i]:
                self.slices[z0 + int(z) - start] = (totals[i], int(counts[i]))
            self.flat[z0 + int(z) - start] = (flat_totals[i], int(flat_counts[i]))

    def merge(self, other: EdgeProfiles) -> None:
        """Take the slices of ``other`` (slabs added elsewhere, e.g. in another thread)."""
        self.slices.update(other.slices)
        self.flat.update(other.flat)

    def sigma(self, min_profiles: int = MIN_EDGES) -> float:
        """The width of a step along the grid's lines, voxels: an error function fitted to the mean profile
        of every edge; NaN with too few edges.

        Parameters
        ----------
        min_profiles : int, default :data:`MIN_EDGES`
            Fewest profiles to fit.

        Returns
        -------
        float
            σ of the Gaussian whose step fits (voxels, in-plane), or NaN.
        """
        return _fit_step(*_sum_slices(self.slices), min_profiles)

    def psf_sigma(self, min_profiles: int = MIN_FLAT_EDGES) -> float:
        """σ of the point-spread function, voxels: an error function fitted to the mean profile of the
        flat edges (one background phase beyond); NaN with fewer than ``min_profiles`` of them."""
        return _fit_step(*_sum_slices(self.flat), min_profiles)

    def psf_sigma_se(self, blocks: int = JACKKNIFE_BLOCKS, min_profiles: int = MIN_FLAT_EDGES) -> float:
        """Standard error of :meth:`psf_sigma`, voxels: the jackknife over ``blocks`` runs of consecutive slices
        holding about equal numbers of flat edges, each left out in turn (neighbouring slices share their
        surfaces, so runs of slices, not single ones). NaN with fewer than ``min_profiles`` flat edges, where
        they lie on fewer than ``blocks`` slices, or where a fit fails."""
        zs = [z for z in sorted(self.flat) if self.flat[z][1] > 0]
        total, count = _sum_slices(self.flat)
        if count < min_profiles or len(zs) < blocks:
            return float("nan")
        # block k takes the slices whose edges, counted up to them, reach past k / blocks of all
        upto = np.cumsum([self.flat[z][1] for z in zs])
        block = np.minimum((blocks * (upto - 1)) // count, blocks - 1)
        estimates = []
        for k in range(blocks):
            t, c = _sum_slices({z: self.flat[z] for z, b in zip(zs, block) if b == k})
            estimates.append(_fit_step(total - t, count - c, 1))
        estimates = np.asarray(estimates)
        if not np.isfinite(estimates).all():
            return float("nan")
        return float(np.sqrt((blocks - 1) / blocks * np.sum((estimates - estimates.mean()) ** 2)))

    def mean_profiles(self) -> dict[str, tuple[np.ndarray, int, StepFit | None]]:
        """``"flat"`` and ``"every"`` edge: (the (2 RUN,) mean grey-level profile, NMC side first, at
        :data:`PROFILE_X`; how many edges; the fitted step, None where too few) — what the σ's were read on."""
        out = {}
        for name, slices, least in (("flat", self.flat, MIN_FLAT_EDGES), ("every", self.slices, MIN_EDGES)):
            total, count = _sum_slices(slices)
            out[name] = (total / max(count, 1), count, fit_step(total, count, least))
        return out


def _sum_slices(slices: dict[int, tuple[np.ndarray, int]]) -> tuple[np.ndarray, int]:
    """The (2 RUN,) sum of the slices' profiles, added in z order, and their count."""
    out, n = np.zeros(2 * RUN), 0
    for z in sorted(slices):
        out += slices[z][0]
        n += slices[z][1]
    return out, n


#: Starting σ (voxels) of the step fit: the first, then the others where one fits the profile better.
FIT_STARTS = (1.0, 0.3, 2.0)
#: How much lower (relative) a later start's sum of squared residuals must be to replace the first's.
FIT_BETTER = 0.01


@dataclass(frozen=True)
class StepFit:
    """A blurred step fitted to a mean edge profile: ``high + (low - high) Φ((x - x0) / sigma)``.

    Attributes
    ----------
    x0, sigma : float
        The step's position and σ, voxels.
    high, low : float
        Grey levels far on the NMC side and far on the background side.
    """

    x0: float
    sigma: float
    high: float
    low: float

    def __call__(self, x) -> np.ndarray:
        """The step's grey level at positions ``x`` (voxels from the edge)."""
        return _step(np.asarray(x, float), self.x0, self.sigma, self.high, self.low)


def _step(x, x0, s, high, low):
    from scipy.special import erf

    return high + (low - high) * 0.5 * (1 + erf((x - x0) / (np.sqrt(2) * s)))


def fit_step(total: np.ndarray, count: int, min_profiles: int) -> StepFit | None:
    """The error function fitted to the mean profile ``total / count``; None with fewer than ``min_profiles``
    profiles or where the fit fails.

    A step within about a voxel can leave the fit started at σ 1 stalled at σ → 0, where the error
    function saturates and its gradient in σ vanishes; so it is started at each of :data:`FIT_STARTS`
    and the first start kept unless another fits the profile clearly better (:data:`FIT_BETTER`)."""
    from scipy.optimize import OptimizeWarning, curve_fit

    if count < min_profiles:
        return None
    mean = total / count
    best, best_sse = None, np.inf
    for start in FIT_STARTS:
        try:
            with warnings.catch_warnings():  # a step within one voxel leaves σ's variance undefined
                warnings.simplefilter("ignore", OptimizeWarning)
                p, _ = curve_fit(_step, PROFILE_X, mean, p0=(0.0, start, mean[0], mean[-1]), maxfev=5000)
        except (RuntimeError, ValueError):
            continue
        sse = float(np.sum((_step(PROFILE_X, *p) - mean) ** 2))
        if sse < best_sse * (1 - FIT_BETTER):
            best, best_sse = StepFit(float(p[0]), float(abs(p[1])), float(p[2]), float(p[3])), sse
    return best


def _fit_step(total: np.ndarray, count: int, min_profiles: int) -> float:
    """σ of :func:`fit_step` (voxels); NaN where it gives none."""
    fit = fit_step(total, count, min_profiles)
    return float("nan") if fit is None else fit.sigma


def face_spill(sigma: float) -> float:
    """Share of a voxel's grey level that comes from one face neighbour through a Gaussian PSF.

    The voxel and its neighbour are unit boxes along one axis; the share is the PSF's mass over the
    neighbour (0.5 .. 1.5 voxels away) averaged over the voxel: 0.19 at σ 0.5 voxel.

    Parameters
    ----------
    sigma : float
        σ of the point-spread function, voxels (> 0).

    Returns
    -------
    float
        The share, 0-0.5.
    """
    from scipy.special import ndtr

    x = np.linspace(-0.5, 0.5, 201)  # positions across the voxel
    return float(np.mean(ndtr((x - 0.5) / sigma) - ndtr((x - 1.5) / sigma)))


def edge_shell_cut(names, means, sigma: float) -> np.float32 | None:
    """Grey level below which a CBD voxel between NMC and electrolyte is electrolyte (:func:`reassign_edge_shells`).

    The blur lifts an electrolyte voxel beside a particle to ``s μ_NMC + (1 - s) μ_void`` and a CBD voxel
    there, with electrolyte on its other side, to ``s μ_NMC + (1 - 2 s) μ_CBD + s μ_void`` (``s`` =
    :func:`face_spill` of ``sigma``, ``μ`` the phase model's means, μ_NMC the mean of the resolved NMC
    classes); the cut is their midpoint.

    Parameters
    ----------
    names : sequence of str
        The phase model's resolved classes.
    means : sequence of float
        Their grey levels.
    sigma : float
        The measured blur σ, voxels.

    Returns
    -------
    numpy.float32 or None
        The cut, or None where it does not apply: σ unknown (NaN), or no void, CBD or NMC class.
    """
    levels = _edge_levels(names, means, sigma)
    if levels is None:
        return None
    s, mu, nmc, e_cbd = levels
    e_void = s * nmc + (1 - s) * mu["void"]
    return np.float32((e_void + e_cbd) / 2)


def _edge_levels(names, means, sigma: float):
    """``(s, μ by name, μ_NMC, e_CBD)`` of :func:`edge_shell_cut` and :func:`edge_nmc_cut`: the face spill,
    the model's means, the mean of its resolved NMC classes and what a CBD voxel between NMC and
    electrolyte reads; None where σ is unknown or a void, CBD or NMC class is missing."""
    mu = dict(zip(names, (float(m) for m in means)))
    nmc = [mu[n] for n in ("nmc_low", "nmc_high") if n in mu]
    if not np.isfinite(sigma) or sigma <= 0 or "void" not in mu or "cbd" not in mu or not nmc:
        return None
    s = face_spill(sigma)
    mu_nmc = float(np.mean(nmc))
    return s, mu, mu_nmc, s * mu_nmc + (1 - 2 * s) * mu["cbd"] + s * mu["void"]


@dataclass(frozen=True)
class NmcEdgeCut:
    """Where a CBD voxel between NMC and electrolyte is NMC's own blurred edge (:func:`edge_nmc_cut`).

    Attributes
    ----------
    cut : numpy.float32
        Grey level at and above which the voxel is NMC.
    high_from : numpy.float32 or None
        Grey level at and above which such a voxel is NMC high density (the model's NMC low / high
        threshold as read at an edge beside electrolyte); None where the model has one NMC class.
    """

    cut: np.float32
    high_from: np.float32 | None


def edge_nmc_cut(names, means, thresholds, sigma: float) -> NmcEdgeCut | None:
    """The cut above which a CBD voxel between NMC and electrolyte is NMC (:func:`reassign_edge_shells`).

    An NMC voxel on a particle's surface with electrolyte outside reads ``(1 - s) μ_NMC + s μ_void``; a CBD
    voxel between NMC and electrolyte ``s μ_NMC + (1 - 2 s) μ_CBD + s μ_void`` (``s``, ``μ`` as in
    :func:`edge_shell_cut`). The cut is their midpoint. Such an NMC voxel, whose own texture is low, falls
    in Al's grey range and is given to CBD by :func:`detachment.phases.remove_thin_collector` (the half
    height there is that of an NMC / CBD edge, higher than of an NMC / electrolyte one); read as CBD it
    would make a detached face attached.

    Parameters
    ----------
    names, means : sequence
        The phase model's resolved classes and their grey levels.
    thresholds : sequence of float
        The model's thresholds (``thresholds[i]`` between ``names[i]`` and ``names[i + 1]``).
    sigma : float
        The measured blur σ, voxels.

    Returns
    -------
    NmcEdgeCut or None
        None where it does not apply (as :func:`edge_shell_cut`).
    """
    levels = _edge_levels(names, means, sigma)
    if levels is None:
        return None
    s, mu, nmc, e_cbd = levels
    e_nmc = (1 - s) * nmc + s * mu["void"]
    high = None
    if {"nmc_low", "nmc_high"} <= set(mu):
        high = np.float32((1 - s) * float(thresholds[list(names).index("nmc_low")]) + s * mu["void"])
    return NmcEdgeCut(np.float32((e_nmc + e_cbd) / 2), high)


def edge_shell_codes(grey: np.ndarray, cut, nmc: NmcEdgeCut | None) -> np.ndarray:
    """New codes of edge-shell candidates from their grey levels: electrolyte below ``cut``, NMC at and
    above ``nmc.cut`` (high density from ``nmc.high_from``), CBD (unchanged) between.

    Parameters
    ----------
    grey : numpy.ndarray
        (n,) grey levels of the candidates (compared in float32).
    cut : numpy.float32 or None
        :func:`edge_shell_cut` (None: none goes to the electrolyte).
    nmc : NmcEdgeCut or None
        :func:`edge_nmc_cut` (None: none goes to NMC).

    Returns
    -------
    numpy.ndarray
        (n,) uint8 phase codes.
    """
    g = np.asarray(grey, np.float32)
    out = np.full(g.shape, CBD, np.uint8)
    if cut is not None:
        out[g < np.float32(cut)] = VOID
    if nmc is not None:
        solid = g >= nmc.cut
        out[solid] = NMC_LOW
        if nmc.high_from is not None:
            out[solid & (g >= nmc.high_from)] = NMC_HIGH
    return out


def edge_shell_candidates(phases: np.ndarray) -> np.ndarray:
    """CBD voxels with NMC (low or high density) on one side and electrolyte on the opposite side along
    the same axis: the voxels :func:`reassign_edge_shells` may move. Voxels outside the array are neither.

    Parameters
    ----------
    phases : numpy.ndarray
        (z, y, x) uint8 phase codes.

    Returns
    -------
    numpy.ndarray
        (z, y, x) bool.
    """
    nmc = (phases == NMC_LOW) | (phases == NMC_HIGH)
    void = phases == VOID
    between = np.zeros(phases.shape, bool)
    for axis in range(phases.ndim):
        lo, hi, mid = ([slice(None)] * phases.ndim for _ in range(3))
        lo[axis], hi[axis], mid[axis] = slice(0, -2), slice(2, None), slice(1, -1)
        lo, hi, mid = tuple(lo), tuple(hi), tuple(mid)
        between[mid] |= (nmc[lo] & void[hi]) | (void[lo] & nmc[hi])
    return (phases == CBD) & between


def reassign_edge_shells(phases: np.ndarray, grey: np.ndarray, cut, nmc: NmcEdgeCut | None = None
                         ) -> np.ndarray:
    """Electrolyte and NMC read as CBD at the particles' blurred edges, given back.

    A CBD voxel with NMC (low or high density) on one side and electrolyte on the opposite side along
    the same axis (:func:`edge_shell_candidates`) becomes electrolyte where its grey level is below
    ``cut`` (:func:`edge_shell_cut`), and NMC where it is at or above ``nmc.cut`` (:func:`edge_nmc_cut`):
    :func:`edge_shell_codes`. The rule reads the map as given, not its own changes.

    Parameters
    ----------
    phases : numpy.ndarray
        (z, y, x) uint8 phase codes.
    grey : numpy.ndarray
        (z, y, x) float32 grey levels.
    cut : numpy.float32 or None
        Grey level (compared in float32); None moves none to the electrolyte.
    nmc : NmcEdgeCut, optional
        Where candidates become NMC; None: none does.

    Returns
    -------
    numpy.ndarray
        (z, y, x) uint8 phase codes, a new array.
    """
    out = phases.copy()
    where = edge_shell_candidates(phases)
    out[where] = edge_shell_codes(grey[where], cut, nmc)
    return out


def spill_radius(sigma: float) -> int:
    """Voxels the Gaussian of :func:`solid_spill` reaches on either side (``scipy.ndimage``'s, truncated at
    4 σ): the halo a streamed slab needs for it."""
    return int(4.0 * float(sigma) + 0.5)


def solid_spill(phases: np.ndarray, names, means, sigma: float, background: float) -> np.ndarray:
    """Grey level the solid phases (NMC low and high density, Al) put into every voxel through the blur.

    ``G_σ * Σ_c (μ_c - background) · [phases == c]`` over the solid classes the phase model resolves, ``μ``
    its means (``names``, ``means``): a blurred particle lifts the electrolyte beside it toward CBD's grey
    level, over as many voxels as σ reaches, not only the one beside its face.

    Parameters
    ----------
    phases : numpy.ndarray
        (z, y, x) uint8 phase codes.
    names, means : sequence
        The phase model's resolved classes and their grey levels.
    sigma : float
        The blur σ, voxels (> 0).
    background : float
        Grey level the excess is counted from.

    Returns
    -------
    numpy.ndarray
        (z, y, x) float32 grey levels.
    """
    mu = dict(zip(names, (float(m) for m in means)))
    codes = {n: c for c, n in PHASE_NAMES.items()}
    excess = np.zeros(max(codes.values()) + 1, np.float32)  # float32: half the memory of a streamed slab
    for name in ("nmc_low", "nmc_high", "al"):
        if name in mu:
            excess[codes[name]] = mu[name] - background
    return ndimage.gaussian_filter(excess[phases], float(sigma), mode="reflect", output=np.float32)


def void_cbd_threshold(names, thresholds) -> float | None:
    """The phase model's threshold between electrolyte and CBD (None where it lacks either or they are not
    neighbours in its order)."""
    names = list(names)
    if "void" not in names or "cbd" not in names or names.index("cbd") != names.index("void") + 1:
        return None
    return float(thresholds[names.index("void")])


def reassign_by_spill(phases: np.ndarray, grey: np.ndarray, names, means, thresholds, sigma: float
                      ) -> np.ndarray:
    """Electrolyte and CBD told apart on the grey levels less the solid phases' spill.

    Every electrolyte or CBD voxel is electrolyte where ``grey - solid_spill`` (counted from the model's
    void/CBD threshold ``t``) is below ``t``, CBD elsewhere. A voxel of level μ beside a solid of level
    μ_s reads ``μ + k (μ_s - μ)`` for the share ``k`` < 1 of the solid's blur it receives; less
    ``k (μ_s - t)`` it reads ``μ + k (t - μ)``, on the same side of ``t`` as μ for any k: the electrolyte
    that a blurred particle lifts into CBD's grey levels goes back to the electrolyte, and a coat of CBD
    stays. Far from the solid (k = 0) every voxel keeps its code. Where σ is unknown or the model lacks
    the classes, the map is returned unchanged.

    Parameters
    ----------
    phases : numpy.ndarray
        (z, y, x) uint8 phase codes.
    grey : numpy.ndarray
        (z, y, x) grey levels the map was classified on.
    names, means, thresholds : sequence
        The phase model's resolved classes, grey levels and thresholds.
    sigma : float
        The blur σ measured on the map, voxels.

    Returns
    -------
    numpy.ndarray
        (z, y, x) uint8 phase codes, a new array.
    """
    out = phases.copy()
    t = void_cbd_threshold(names, thresholds)
    if t is None or not np.isfinite(sigma) or sigma <= 0:
        return out
    spill = solid_spill(phases, names, means, sigma, t)
    background = (phases == VOID) | (phases == CBD)
    out[background] = np.where(grey[background] - spill[background] < t, VOID, CBD)
    return out
