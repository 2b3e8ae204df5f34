"""Phase classification of a slab, voxel for voxel equal to :func:`detachment.threshold.classify_slab`.

:class:`SlabClassifier` computes the phase codes of :mod:`detachment.phases` (per-voxel thresholds,
removal of thin Al, NMC domain refinement) faster: float32 threshold comparisons and the NMC
refinement in compiled loops (:mod:`detachment.slab_kernels`), the refinement screened in float32
with an error bound and recomputed exactly where the bound cannot decide, and morphology by the
6-neighbour cross, compiled on slabs (:func:`opening6`) and as shifted boolean ANDs on small crops
(:func:`erode6`) (docs/methods.md, "Streamed thresholding"). ``tests/test_threshold.py`` checks the
equality against the reference on phantoms, random volumes and unusual settings.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from . import phases, slab_kernels
from .binning import ceil_float32

#: relative rounding of one float32 operation
_U32 = 2.0**-24
#: default of :attr:`SlabClassifier.max_exact`
_MAX_EXACT_VOXELS = 100_000


def _shift_pairs(ndim: int, axis: int):
    """Index pairs (a, b) selecting each voxel and its +1 neighbour along ``axis``."""
    a = [slice(None)] * ndim
    b = [slice(None)] * ndim
    a[axis], b[axis] = slice(None, -1), slice(1, None)
    return tuple(a), tuple(b)


def erode6(mask: np.ndarray) -> np.ndarray:
    """Binary erosion by the 6-neighbour cross, voxels outside the array counting as set.

    Equal to ``ndimage.binary_erosion(mask, generate_binary_structure(3, 1), border_value=1)``.

    Parameters
    ----------
    mask : numpy.ndarray
        (z, y, x) bool mask.

    Returns
    -------
    numpy.ndarray
        (z, y, x) bool, a new array.
    """
    out = mask.copy()
    for axis in range(mask.ndim):
        a, b = _shift_pairs(mask.ndim, axis)
        out[a] &= mask[b]
        out[b] &= mask[a]
    return out


def opening6(mask: np.ndarray, iterations: int) -> np.ndarray:
    """``ndimage.binary_opening(mask, cross, iterations, border_value=1)``: erosions, then dilations.

    Compiled (:func:`detachment.slab_kernels.opening6`): one pass over the slab per erosion or dilation,
    where shifted numpy ANDs / ORs make a dozen.

    Parameters
    ----------
    mask : numpy.ndarray
        (z, y, x) bool mask.
    iterations : int
        Erosions (then as many dilations) by the 6-neighbour cross.

    Returns
    -------
    numpy.ndarray
        (z, y, x) bool (``mask`` itself for 0 iterations).
    """
    if iterations == 0:
        return mask
    m = np.ascontiguousarray(mask).view(np.uint8)
    out = np.empty_like(m)
    slab_kernels.opening6(m, iterations, np.empty_like(m), out)
    return out.view(bool)


def gaussian_kernel(sigma: float) -> np.ndarray:
    """The 1D Gaussian weights scipy.ndimage.gaussian_filter uses (truncate 4), as float64.

    Parameters
    ----------
    sigma : float
        Standard deviation, voxels (> 0).

    Returns
    -------
    numpy.ndarray
        (2 R + 1,) float64 weights summing to 1, ``R = int(4 sigma + 0.5)``.
    """
    radius = int(4.0 * sigma + 0.5)
    x = np.arange(-radius, radius + 1)
    k = np.exp(-0.5 / (sigma * sigma) * x**2)
    return k / k.sum()


class SlabClassifier:
    """Phase codes of float32 (z, y, x) slabs, equal to :func:`detachment.threshold.classify_slab`.

    Parameters
    ----------
    model : detachment.phases.PhaseModel
        The phase model (thresholds, means, class order).
    collector_min_thickness_vox : int
        Al structures thinner than this (voxels) are reassigned
        (:func:`detachment.phases.remove_thin_collector`); 1 or less turns it off.
    domain_sigma_vox : float
        σ (voxels) of the NMC domain refinement; 0 turns it off.
    screen : bool, default True
        Decide the NMC refinement from the float32 bound where it is certain (False: recompute every
        NMC voxel exactly, for tests).
    value_range : tuple of float, optional
        Bounds ``(lo, hi)`` of every grey level that will be passed, if known (else each slab's
        minimum and maximum); they size the error bound.
    collector_top : int or numpy.ndarray, optional
        First slice above the collector slab (volume z), for every column or (y, x) per column: Al above
        it is reassigned (:func:`detachment.phases.confine_collector`); None keeps it.

    Attributes
    ----------
    max_exact : int
        Above this many undecided voxels in a slab, the refinement is recomputed whole by
        :func:`detachment.phases.refine_nmc_domains`.
    refines : bool
        Whether the NMC refinement runs (the model has ``nmc_low`` and ``nmc_high`` and σ > 0).
    screen : bool
        Whether the float32 screening is used: ``screen``, and off where the reference's
        ``max(den, 1e-6)`` could apply (a very small σ).
    """

    #: above this many undecided voxels in a slab, the refinement is recomputed whole by the reference
    max_exact = _MAX_EXACT_VOXELS

    def __init__(self, model: phases.PhaseModel, collector_min_thickness_vox: int, domain_sigma_vox: float,
                 screen: bool = True, value_range: tuple[float, float] | None = None,
                 collector_top: int | np.ndarray | None = None):
        self.model = model
        self.collector_top = collector_top
        self.value_range = value_range
        self.thickness = collector_min_thickness_vox
        self.sigma = domain_sigma_vox
        self.screen = screen
        self.t32 = ceil_float32(np.sort(model.thresholds))
        codes = model.codes.astype(np.int64)
        self.first = np.uint8(codes[0])
        # codes[i] = first + sum(steps[:i]) modulo 256; padded to four thresholds (+inf never reached)
        self.steps = np.zeros(4, np.uint8)
        self.steps[: len(codes) - 1] = (codes[1:] - codes[:-1]) % 256
        self.t4 = np.full(4, np.inf, np.float32)
        self.t4[: len(self.t32)] = self.t32
        self.refines = {"nmc_low", "nmc_high"} <= set(model.names) and domain_sigma_vox > 0
        if self.refines:
            self.thr = model.thresholds[model.names.index("nmc_low")]
            k = gaussian_kernel(domain_sigma_vox)
            self.k32 = k.astype(np.float32)
            self.radius = len(k) // 2
            # den >= 0.05 k0^3 at an NMC voxel: the reference's max(den, 1e-6) never applies above 2e-6
            self.screen = screen and 0.05 * k[self.radius] ** 3 > 2e-6

    def codes_of(self, data: np.ndarray) -> np.ndarray:
        """Per-voxel phase codes, as :func:`detachment.phases.classify`.

        Parameters
        ----------
        data : numpy.ndarray
            (z, y, x) float32 grey levels.

        Returns
        -------
        numpy.ndarray
            (z, y, x) uint8 phase codes.
        """
        p = np.empty(data.shape, np.uint8)
        slab_kernels.phase_codes(np.ascontiguousarray(data).reshape(-1), self.t4, self.first, self.steps,
                                 p.reshape(-1))
        return p

    def clean_collector(self, data: np.ndarray, p: np.ndarray, z_first: int = 0) -> None:
        """:func:`detachment.phases.remove_thin_collector`, then :func:`~detachment.phases.confine_collector`,
        in place on ``p``.

        Parameters
        ----------
        data : numpy.ndarray
            (z, y, x) float32 grey levels.
        p : numpy.ndarray
            (z, y, x) uint8 phase codes of ``data`` (contiguous), changed in place.
        z_first : int, default 0
            Volume z of ``data[0]``, for the confinement.
        """
        m = self.model
        if "al" not in m.names:
            return
        iterations = max(1, self.thickness // 2) if self.thickness > 1 else 0
        top = len(p) + z_first if self.collector_top is None else self.collector_top
        start = np.broadcast_to(np.maximum(np.asarray(top, np.int64) - z_first, 0), p.shape[1:])
        if iterations == 0 and start.min() >= len(p):
            return
        k = m.names.index("al")
        below = m.codes[k - 1] if k > 0 else m.codes[k + 1]
        above = m.codes[k + 1] if k + 1 < len(m.names) else m.codes[k - 1]
        al = p == phases.AL
        kept = opening6(al, iterations) if iterations else al
        slab_kernels.reassign_al(p, np.ascontiguousarray(data), al, kept, np.ascontiguousarray(start),
                                 phases.al_edge_cut(m), below, above)

    def __call__(self, data: np.ndarray, rows: slice = slice(None), z_first: int = 0) -> np.ndarray:
        """Phase codes of the rows ``rows`` of a slab, computed with the whole slab as context.

        Parameters
        ----------
        data : numpy.ndarray
            (z, y, x) float32 grey levels of the slab (denoised as configured).
        rows : slice, default all
            z rows of the slab to return (step 1); the result there equals
            ``threshold.classify_slab(data, ...)[rows]``.
        z_first : int, default 0
            Volume z of ``data[0]``, for the collector confinement.

        Returns
        -------
        numpy.ndarray
            uint8 phase codes, shape ``data[rows].shape``.

        Raises
        ------
        TypeError
            When ``data`` is not float32.
        """
        if data.dtype != np.float32:
            raise TypeError(f"SlabClassifier needs float32 grey levels, got {data.dtype}")
        p = self.codes_of(data)
        self.clean_collector(data, p, z_first)
        z0, z1, _ = rows.indices(data.shape[0])
        if self.refines:
            self.refine(data, p, z0, z1)
        return p[z0:z1]

    def refine(self, data: np.ndarray, p: np.ndarray, z0: int, z1: int) -> None:
        """:func:`detachment.phases.refine_nmc_domains` on rows ``z0:z1`` of ``p``, in place.

        Parameters
        ----------
        data : numpy.ndarray
            (z, y, x) float32 grey levels of the slab.
        p : numpy.ndarray
            (z, y, x) uint8 phase codes of the slab after the thin-collector clean-up, changed in
            place; rows outside ``z0:z1`` are left as they are.
        z0, z1 : int
            The rows to refine, ``[z0, z1)`` (slab indices).
        """
        bound = self._bound(data) if self.screen else np.inf  # +inf: every NMC voxel undecided
        undecided = np.empty((min(self.max_exact, p[z0:z1].size), 3), np.int64)
        n = slab_kernels.nmc_refine(np.ascontiguousarray(data), p, z0, z1, phases.NMC_LOW, phases.NMC_HIGH,
                                    np.float32(self.thr), self.k32, bound, undecided)
        if n == 0:
            return
        if n > self.max_exact:
            p[z0:z1] = phases.refine_nmc_domains(data, p, self.model, self.sigma)[z0:z1]
            return
        voxels = undecided[:n]
        # the masks only where the crops reach (R planes around the voxels), one plane more for the erosion
        a = max(0, int(voxels[:, 0].min()) - self.radius - 1)
        b = min(len(p), int(voxels[:, 0].max()) + self.radius + 2)
        nmc, interior = np.zeros(p.shape, bool), np.zeros(p.shape, bool)
        nmc[a:b] = (p[a:b] == phases.NMC_LOW) | (p[a:b] == phases.NMC_HIGH)
        interior[a:b] = erode6(nmc[a:b])
        local = self.exact_local(data, nmc, interior, voxels)
        p[tuple(voxels.T)] = np.where(local >= self.thr, phases.NMC_HIGH, phases.NMC_LOW)

    def exact_local(self, data: np.ndarray, nmc: np.ndarray, interior: np.ndarray, voxels: np.ndarray
                    ) -> np.ndarray:
        """The reference's ``local`` (float64) at some voxels, from crops of radius R around them.

        Along each axis the separable filter reads R voxels either side, clamped at the slab's faces;
        the crops are indexed with the same clamping, so the three passes repeat the reference's float64
        operations on the same values at each crop's centre.

        Parameters
        ----------
        data : numpy.ndarray
            (z, y, x) float32 grey levels of the slab.
        nmc, interior : numpy.ndarray
            (z, y, x) bool: NMC voxels, and those not on an NMC surface.
        voxels : numpy.ndarray
            (m, 3) int (z, y, x) indices into the slab.

        Returns
        -------
        numpy.ndarray
            (m,) float64 ``num / max(den, 1e-6)`` of :func:`detachment.phases.refine_nmc_domains`,
            grey level.
        """
        r, out = self.radius, np.empty(len(voxels))
        offsets = np.arange(-r, r + 1)
        for i in range(0, len(voxels), 2048):  # bounded memory: 2048 crops of (2R + 1)^3 voxels
            v = voxels[i: i + 2048]
            crop = tuple(np.clip(v[:, k, None] + offsets, 0, n - 1) for k, n in enumerate(data.shape))
            crop = (crop[0][:, :, None, None], crop[1][:, None, :, None], crop[2][:, None, None, :])
            w = interior[crop].astype(np.float32) + 0.05 * nmc[crop]
            num, den = data[crop] * w, w
            for axis in (1, 2, 3):  # the axes gaussian_filter runs through, in its order
                num = ndimage.gaussian_filter1d(num, self.sigma, axis=axis, mode="nearest")
                den = ndimage.gaussian_filter1d(den, self.sigma, axis=axis, mode="nearest")
            out[i: i + 2048] = num[:, r, r, r] / np.maximum(den[:, r, r, r], 1e-6)
        return out

    def _bound(self, data: np.ndarray) -> float:
        """Bound on |screened - exact| of ``G * ((v - thr) w)``, doubled, plus a float64 margin.

        Each term passes through at most ``3 (R + 3) + 6`` float32 roundings (three passes of R + 2
        additions / products and a rounded weight; the difference, the product and the weight w), so
        the error is at most ``gamma * sum G |v - thr| w <= gamma * M * 1.05 * sum(G)``, plus the
        rounding of ``thr`` to float32 times ``sum G w``. A margin of ``1e-12 (M + |thr| + 1)``
        covers the reference's own float64 rounding of ``num / den``.
        """
        thr = float(self.thr)
        lo, hi = self.value_range or (float(data.min()), float(data.max()))
        m = max(abs(hi - thr), abs(lo - thr))
        c = 3 * (self.radius + 3) + 6
        gamma = c * _U32 / (1 - c * _U32)
        gsum = float(self.k32.astype(np.float64).sum()) ** 3
        err = 1.05 * gsum * (gamma * m + abs(float(np.float32(thr)) - thr))
        return 2 * err + 1e-12 * (m + abs(thr) + 1)
