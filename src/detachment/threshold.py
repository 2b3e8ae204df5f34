"""Phase thresholding of a volume file, streamed slab by slab (memory ~ a few slabs + halos).

:func:`threshold_volume` reads the grey-level histogram, fits the phase model
(:mod:`detachment.phases`), classifies each slab with a halo, writes ``phases.h5`` and accumulates
the per-phase interior histograms for the FWHMs and the edge profiles of the blur. It gives exactly
what :func:`classify_slab` (the plain composition of :mod:`detachment.phases`) and numpy.histogram
give, faster (:class:`detachment.slab_phases.SlabClassifier`, :class:`detachment.binning.UniformBins`,
compiled loops; docs/methods.md, "Streamed thresholding"), and the same with any number of threads
(``workers``). Settings: :class:`ThresholdSettings`; the histogram table: :func:`histogram_table`.
"""

from __future__ import annotations

import collections
import functools
import logging
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
from tqdm import tqdm

from . import (
    blur,
    collector_surface,
    h5chunks,
    io,
    phase_fit,
    phases,
    psf_refine,
    shading,
    slab_kernels,
    slab_phases,
)
from .binning import UniformBins

log = logging.getLogger(__name__)


@dataclass
class ThresholdSettings:
    """Settings of the ``threshold`` config section (see workflow/schemas/config.schema.yaml).

    Attributes
    ----------
    method : {"informed", "gmm", "multiotsu"}
        Phase-model fit: ``"informed"`` measures Al on the collector slab and fits the other phases with
        as many components as the histogram resolves (:func:`detachment.phase_fit.fit_informed_model`);
        ``"gmm"`` and ``"multiotsu"`` fit one class per phase on the histogram
        (:func:`detachment.phases.fit_phase_model`).
    thresholds : tuple of float or None
        Manual thresholds between the phases of ``order`` (4 increasing grey levels); when given they
        replace the fitted ones (``method`` is then not used).
    bins : int
        Bins of the grey-level histogram the model is fitted on; the FWHM histograms have 4x as many.
    order : tuple of str
        The five phase names by increasing grey level (a list is turned into a tuple).
    denoise : {"none", "gaussian", "median"}
        Denoising before classification (:func:`detachment.phases.denoise`).
    denoise_sigma_vox : float
        Gaussian σ, or median radius, of the denoising, voxels.
    collector_min_thickness_vox : int
        Al structures thinner than this are reassigned (:func:`detachment.phases.remove_thin_collector`),
        voxels; 1 or less turns it off.
    domain_sigma_vox : float or "auto"
        σ of the NMC low / high refinement (:func:`detachment.phases.refine_nmc_domains`), voxels;
        0 turns it off; ``"auto"`` chooses it from the fitted model's NMC spread over the noise
        (:func:`detachment.phases.nmc_domain_sigma`; :func:`threshold_volume` resolves it before use).
    edge_shells : bool
        Give electrolyte read as CBD at the particles' blurred edges back to the electrolyte
        (:func:`detachment.blur.reassign_edge_shells`, with the blur σ measured on the map).
    edge_spill : bool
        With ``edge_shells``: then tell electrolyte from CBD everywhere on the grey levels less the solid
        phases' spill through the measured blur (:func:`detachment.blur.reassign_by_spill`).
    psf_refine : bool
        With ``edge_shells``: last, move the codes at the phase boundaries to the labelling whose blur
        best explains the grey levels (:func:`detachment.psf_refine.refine_codes`).
    psf_refine_sigma : {"fit", "edge"} or float
        The point-spread σ of that forward model: ``"fit"`` the σ whose refined labelling leaves the least
        energy on a block of the volume (:func:`detachment.psf_refine.fit_sigma`, started from the edges'
        σ), ``"edge"`` the σ measured on the particles' edge profiles, a number that σ in voxels.
    psf_refine_beta, psf_refine_sweeps : float, int
        Its smoothness weight and most sweeps (:class:`detachment.psf_refine.RefineSettings`).
    psf_refine_texture_vox : "fit" or float
        σ (voxels) over which that forward model reads NMC's local level from its neighbours
        (:func:`detachment.psf_refine.texture_offsets`): ``"fit"`` the σ that leaves NMC's residuals least
        spread on the σ fit's block, or none where no σ lowers it
        (:func:`detachment.psf_refine.fit_texture_sigma`); 0 one level per NMC code.
    psf_refine_z_factor : "fit" or float
        That forward model's σ along z over its σ within the slices (the point spread's anisotropy,
        :class:`detachment.psf_refine.RefineSettings`): ``"fit"`` the factor whose refined labelling leaves
        the least energy on the σ fit's block (:func:`detachment.psf_refine.fit_spread`), a number that
        factor (1: isotropic).
    flatten_shading : bool
        Where the electrolyte's grey level wanders across the volume beyond the phase check's bound
        (:func:`detachment.shading.threshold_flattened`), read the phases again on the volume less that
        shading field; off, the check stops such a volume.
    remove_halo : bool
        Where the electrolyte beside the particles reads darker than the open electrolyte (an edge halo,
        :mod:`detachment.edge_halo`), fit the halo as an unsharp mask and read the phases again on the volume
        less it (:func:`detachment.halo_removal.threshold_halo_free`); off, the halo check stops such a
        volume.
    nmc_domain_split : bool
        Where the grey-level histogram does not resolve NMC high from low density, try again on the
        domain-averaged NMC grey levels (:func:`detachment.phase_fit.split_nmc_domains`; needs
        ``domain_sigma_vox`` > 0).
    slab : int
        Most slices classified at a time by one thread (the volume is cut into even slabs, as many as a
        multiple of the threads).

    Raises
    ------
    ValueError
        When ``method`` or ``denoise`` is unknown, or ``order`` does not list each phase once.
    """

    method: str = "informed"
    thresholds: tuple[float, ...] | None = None
    bins: int = 256
    order: tuple[str, ...] = phases.DEFAULT_ORDER
    denoise: str = "none"
    denoise_sigma_vox: float = 1.0
    collector_min_thickness_vox: int = 3
    domain_sigma_vox: float | str = "auto"
    edge_shells: bool = True
    edge_spill: bool = True
    psf_refine: bool = True
    psf_refine_sigma: str | float = "fit"
    psf_refine_beta: float = 3.0
    psf_refine_sweeps: int = 4
    psf_refine_texture_vox: str | float = "fit"
    psf_refine_z_factor: str | float = "fit"
    flatten_shading: bool = True
    remove_halo: bool = True
    nmc_domain_split: bool = True
    slab: int = 32

    def __post_init__(self):
        self.order = tuple(self.order)
        if self.method not in ("informed", "gmm", "multiotsu"):
            raise ValueError(f"threshold.method: {self.method!r} is not 'informed', 'gmm' or 'multiotsu'")
        if self.thresholds is not None:
            self.thresholds = tuple(float(t) for t in self.thresholds)
            if len(self.thresholds) != len(self.order) - 1 or np.any(np.diff(self.thresholds) <= 0):
                raise ValueError(f"threshold.thresholds: {list(self.thresholds)} must be {len(self.order) - 1} "
                                 f"increasing grey levels, one between each two phases of {list(self.order)}")
        if self.denoise not in ("none", "gaussian", "median"):
            raise ValueError(f"threshold.denoise: {self.denoise!r} is not 'none', 'gaussian' or 'median'")
        self.psf_refine_z_factor = _z_factor_setting(self.psf_refine_z_factor)
        psf_refine.RefineSettings(self.psf_refine_beta, self.psf_refine_sweeps)  # raises on bad values
        self.psf_refine_sigma = _refine_sigma_setting(self.psf_refine_sigma)
        self.psf_refine_texture_vox = _sigma_setting("psf_refine_texture_vox", self.psf_refine_texture_vox,
                                                     ("fit",), 0.0, 10.0, zero_allowed=True)
        self.domain_sigma_vox = _domain_sigma_setting(self.domain_sigma_vox)
        if sorted(self.order) != sorted(phases.PHASE_NAMES.values()):
            raise ValueError(f"threshold.order: {list(self.order)} must list each of "
                             f"{sorted(phases.PHASE_NAMES.values())} once")

    @property
    def halo(self) -> int:
        """Slices read on either side of a slab for the local clean-ups and the denoising, int.

        ``max(collector_min_thickness_vox + 1, ceil(3 domain_sigma_vox) + 2)`` (for ``"auto"`` the largest
        σ it may choose), plus ``ceil(3 denoise_sigma_vox) + 1`` when denoising.
        """
        h = self.collector_min_thickness_vox + 1
        domain = phases.AUTO_DOMAIN_SIGMA[1] if self.domain_sigma_vox == "auto" else self.domain_sigma_vox
        h = max(h, math.ceil(3 * domain) + 2)
        if self.denoise != "none":
            h += math.ceil(3 * self.denoise_sigma_vox) + 1
        return h


def _domain_sigma_setting(value) -> str | float:
    """``threshold.domain_sigma_vox`` checked: ``"auto"`` or a σ in voxels, 0 <= σ <= 10 (a float)."""
    return _sigma_setting("domain_sigma_vox", value, ("auto",), 0.0, 10.0, zero_allowed=True)


def _refine_sigma_setting(value) -> str | float:
    """``threshold.psf_refine_sigma`` checked: ``"fit"``, ``"edge"`` or a σ > 0 in voxels (a float)."""
    return _sigma_setting("psf_refine_sigma", value, ("fit", "edge"), 0.0, 20.0, zero_allowed=False)


def _z_factor_setting(value) -> str | float:
    """``threshold.psf_refine_z_factor`` checked: ``"fit"`` or a factor 0.1 <= f <= 10 (a float)."""
    return _sigma_setting("psf_refine_z_factor", value, ("fit",), 0.1, 10.0, zero_allowed=True,
                          noun="a factor (σ along z over σ within the slices; 1 for an isotropic point spread)", symbol="f")


def _sigma_setting(field: str, value, words: tuple[str, ...], lo: float, hi: float, zero_allowed: bool,
                   noun: str = "a σ in voxels", symbol: str = "σ") -> str | float:
    """``threshold.<field>`` checked: one of ``words``, or a number from ``lo`` (included where
    ``zero_allowed``) to ``hi`` returned as a float; a ValueError naming the field (and ``noun``, what the
    number is, ``symbol`` in its range) otherwise."""
    if isinstance(value, str) and value in words:
        return value
    if not isinstance(value, (str, bool)):
        try:
            sigma = float(value)
        except (TypeError, ValueError):
            sigma = float("nan")
        if (lo <= sigma if zero_allowed else lo < sigma) and sigma <= hi:
            return sigma
    named = ", ".join(repr(w) for w in words)
    raise ValueError(f"threshold.{field}: {value!r} is not {named} or {noun} "
                     f"({lo:g} {'<=' if zero_allowed else '<'} {symbol} <= {hi:g})")


@dataclass
class ThresholdResult:
    """What :func:`threshold_volume` found, besides the phase map it wrote.

    Attributes
    ----------
    model : detachment.phases.PhaseModel
        The phase model fitted on ``histogram``.
    histogram : detachment.phases.Histogram
        Grey-level histogram of the whole volume (after denoising), ``bins`` bins over its range.
    fwhm : pandas.DataFrame
        One row per phase: ``phase``, ``code``, ``centre`` and ``fwhm`` (grey level, of its interior
        voxels in the map before the edge-shell rule), ``interior_voxels``, ``volume_fraction`` (0-1), ``model_mean`` and ``model_fwhm``
        (grey level, of the phase model), ``threshold_below`` and ``threshold_above`` (grey level,
        NaN at the ends).
    fractions : dict
        Phase name -> volume fraction (0-1) in the written map.
    counts_per_slice : numpy.ndarray
        (z, 5) int64 voxel counts of each phase code (columns 0..4) in each slice of the written map.
    unresolved : tuple of str
        Phases the model does not separate from a neighbour (their voxels carry the neighbour's code).
    collector : detachment.phase_fit.CollectorSlab or None
        The collector slab found at z = 0 in the grey levels.
    blur_sigma_vox : float
        σ of the point-spread function measured on the particles' flat edges (every edge where
        too few are flat; :func:`measured_blur`), voxels; NaN where too few edges were found.
    domain_split : detachment.phase_fit.DomainSplit or None
        The NMC split tried on domain-averaged grey levels where the histogram left ``nmc_high``
        unresolved (:attr:`ThresholdSettings.nmc_domain_split`); None where it was not tried.
    layer : detachment.phase_fit.ElectrolyteLayer or None
        The electrolyte layer found at the far face (``found`` False where the electrode reaches it).
    refine_sigma_vox : float
        σ of the forward model ``psf_refine`` refined the map with (``psf_refine_sigma``), voxels; NaN
        where it did not run.
    domain_sigma_vox : float
        σ of the NMC domain refinement the map was classified with (``domain_sigma_vox``, ``"auto"``
        resolved), voxels.
    edge_width_vox : float
        σ of a step along the grid's lines, over every particle edge (:meth:`detachment.blur.EdgeProfiles.sigma`;
        slanted surfaces widen it), voxels; the map's attribute ``edge_width_vox``; NaN as above.
    blur_sigma_se_vox : float
        Standard error of ``blur_sigma_vox`` (:meth:`detachment.blur.EdgeProfiles.psf_sigma_se`), voxels; NaN
        where it fell back to every edge or could not be taken.
    edges : detachment.blur.EdgeProfiles or None
        The edge profiles both σ's were read on (:func:`detachment.plots.phase_figure` draws them).
    collector_plane : detachment.collector_surface.CollectorPlane or None
        The collector's top surface fitted column by column (:func:`collector_plane`); where it is tilted,
        Al is confined below it column by column instead of below a flat slab. None where Al was not
        confined to the collector.
    refine_z_factor : float
        The forward model's σ along z over ``refine_sigma_vox`` (``psf_refine_z_factor``); NaN where it did
        not run.
    """

    model: phases.PhaseModel
    histogram: phases.Histogram
    fwhm: pd.DataFrame
    fractions: dict
    counts_per_slice: np.ndarray
    unresolved: tuple = ()
    collector: phase_fit.CollectorSlab | None = None
    blur_sigma_vox: float = float("nan")
    domain_split: phase_fit.DomainSplit | None = None
    layer: phase_fit.ElectrolyteLayer | None = None
    refine_sigma_vox: float = float("nan")
    domain_sigma_vox: float = float("nan")
    edge_width_vox: float = float("nan")
    blur_sigma_se_vox: float = float("nan")
    edges: blur.EdgeProfiles | None = None
    collector_plane: collector_surface.CollectorPlane | None = None
    refine_z_factor: float = float("nan")

    @property
    def collector_tilt_deg(self) -> float | None:
        """The collector's tilt, degrees, where Al was confined below a tilted plane; None elsewhere."""
        return self.collector_plane.tilt_deg if self.tilted_collector_top is not None else None

    def collector_heights(self, y: int, nx: int) -> np.ndarray | None:
        """(x,) height of the collector's top along row ``y`` of a volume ``nx`` voxels wide, voxels: a tilted
        collector's plane, else the flat slab's thickness; None where Al was not confined to a collector."""
        if collector_top(self.model, self.collector, self.collector_plane) is None:
            return None
        if self.tilted_collector_top is not None:
            return self.collector_plane.height(y, np.arange(nx))
        return np.full(nx, float(self.collector.thickness))

    @property
    def tilted_collector_top(self) -> int | None:
        """Where Al was confined below a tilted collector plane, the highest first slice above it over the
        columns; None elsewhere."""
        top = collector_top(self.model, self.collector, self.collector_plane)
        return int(np.max(top)) if np.ndim(top) else None

    @property
    def nmc_split(self) -> str:
        """How NMC high density was told from low (:func:`nmc_split`)."""
        return nmc_split(self.model, self.domain_split)

    @property
    def solid_per_slice(self) -> np.ndarray:
        """NMC voxels (low + high density) in each z slice, (z,) int64."""
        return self.counts_per_slice[:, phases.NMC_LOW] + self.counts_per_slice[:, phases.NMC_HIGH]

    @property
    def most_solid_slice(self) -> int:
        """Index of the z slice with the most NMC voxels (through the particle layer), int."""
        return int(np.argmax(self.solid_per_slice))


def classify_slab(data: np.ndarray, model: phases.PhaseModel, s: ThresholdSettings,
                  collector_top: int | np.ndarray | None = None, z_first: int = 0) -> np.ndarray:
    """Phase codes of one (z, y, x) slab (already denoised), with the local clean-ups.

    The plain composition of :mod:`detachment.phases` (:func:`~detachment.phases.classify`,
    :func:`~detachment.phases.remove_thin_collector`, :func:`~detachment.phases.refine_nmc_domains`);
    :func:`threshold_volume` computes the same codes with :class:`detachment.slab_phases.SlabClassifier`.

    Parameters
    ----------
    data : numpy.ndarray
        (z, y, x) grey levels (float32 for the equality with the streamed result).
    model : detachment.phases.PhaseModel
        The phase model.
    s : ThresholdSettings
        Settings; ``collector_min_thickness_vox`` and ``domain_sigma_vox`` are used (``"auto"`` resolved on
        ``model``: :func:`detachment.phases.nmc_domain_sigma`; :func:`threshold_volume` resolves it on the
        histogram's model, before a split on domain means, so pass its ``domain_sigma_vox`` where NMC high
        came from one).
    collector_top : int or numpy.ndarray, optional
        First slice above the collector slab (volume z), for every column or (y, x) per column
        (:func:`collector_top`); Al above it is reassigned (:func:`~detachment.phases.confine_collector`).
        None keeps it.
    z_first : int, default 0
        Volume z of ``data[0]``.

    Returns
    -------
    numpy.ndarray
        (z, y, x) uint8 phase codes.
    """
    p = phases.classify(data, model)
    p = phases.remove_thin_collector(p, data, model, s.collector_min_thickness_vox)
    p = phases.confine_collector(p, data, model, collector_top, z_first)
    return phases.refine_nmc_domains(data, p, model, phases.nmc_domain_sigma(model, s.domain_sigma_vox))


def _slabs(volume_path, s: ThresholdSettings, depth: int, halo: int, desc: str, progress: bool, workers: int = 1):
    """Yield ``(z0, z1, a, data)``: the slab ``[z0, z1)`` and its denoised float32 slices from ``a``.

    ``data`` covers ``[a, z1 + halo)``, ``a = z0 - halo``, both clipped to the volume; it is overwritten
    ``workers + 2`` slabs later (:func:`_pipelined` holds at most ``workers + 1``). The slabs are at
    most ``s.slab`` slices, as even as can be and as many as a multiple of ``workers``, so that the
    threads finish together.
    """
    count = workers * math.ceil(depth / (workers * s.slab))
    slab = math.ceil(depth / count)
    it = io.iter_volume_slabs(volume_path, slab, halo, buffers=workers + 2)
    for z0, z1, data in tqdm(it, total=math.ceil(depth / slab), desc=desc, disable=not progress, unit="slab"):
        yield z0, z1, max(0, z0 - halo), phases.denoise(data, s.denoise, s.denoise_sigma_vox)


def _uniform_bins(lo, hi, n: int, edge_type) -> UniformBins | None:
    """Fast bins equal to ``np.histogram(v, n, range=(lo, hi))`` for float32 ``v``, or None where not built.

    ``edge_type`` is the type numpy.histogram compares in: float32 for Python-float ``lo, hi``, float64
    for numpy float64 ones. Equality with numpy.histogram is checked on the edges and the float32 values
    beside them; where it fails (or the range is degenerate) the caller uses numpy.histogram.
    """
    try:
        bins = UniformBins(np.linspace(lo, hi, n + 1, dtype=edge_type))
    except ValueError:
        return None
    e = np.linspace(lo, hi, n + 1, dtype=edge_type).astype(np.float32)
    probe = np.concatenate([e, np.nextafter(e, np.float32(-np.inf)), np.nextafter(e, np.float32(np.inf))])
    probe = probe[(probe >= np.float32(lo)) & (probe <= np.float32(hi))]
    if not np.array_equal(bins.counts(probe), np.histogram(probe, bins=n, range=(lo, hi))[0]):
        return None
    return bins


def _grey_histogram(volume_path, s: ThresholdSettings, depth: int, progress: bool, workers: int = 1
                    ) -> tuple[phases.Histogram, np.ndarray]:
    """The grey-level histogram of ``s.bins`` bins over the volume's range (Supp. Fig. 1), and its slices'.

    The range is the volume's ``grey_range`` attribute where it has one and no denoising changes the
    grey levels, checked against the minimum and maximum the histogram pass reads; otherwise (or
    where they differ) a first pass reads the range. Returns the volume's histogram and the (z, bins)
    int64 histograms of its slices.
    """
    hint = io.read_grey_range(volume_path) if s.denoise == "none" else None
    if hint is not None:
        found = _histogram_pass(volume_path, s, depth, hint, progress, workers)
        if found is not None:
            return found
        log.info("%s: grey_range attribute %s differs from the grey levels read; reading the range",
                 volume_path, hint)
    halo = s.halo if s.denoise != "none" else 0  # without denoising, a slab's core needs no neighbours
    lo, hi = np.inf, -np.inf
    for z0, z1, a, data in _slabs(volume_path, s, depth, halo, "range", progress):
        core = data[z0 - a: z1 - a]
        lo, hi = min(lo, float(core.min())), max(hi, float(core.max()))
    return _histogram_pass(volume_path, s, depth, (lo, hi), progress, workers)


def _histogram_pass(volume_path, s: ThresholdSettings, depth: int, value_range: tuple[float, float],
                    progress: bool, workers: int) -> tuple[phases.Histogram, np.ndarray] | None:
    """Histograms of the volume and of its slices over ``value_range``; None where that is not its range."""
    lo, hi = value_range
    halo = s.halo if s.denoise != "none" else 0
    bins = _uniform_bins(lo, hi, s.bins, np.float32)
    per_slice = np.zeros((depth, s.bins), np.int64)
    seen_lo, seen_hi = np.inf, -np.inf

    def count(values, z0):
        out = []
        for v in values:
            out.append(bins.counts_and_range(v) if bins is not None
                       else (np.histogram(v, bins=s.bins, range=(lo, hi))[0], v.min(), v.max()))
        return z0, out

    jobs = (functools.partial(count, data[z0 - a: z1 - a], z0)
            for z0, z1, a, data in _slabs(volume_path, s, depth, halo, "histogram", progress, workers))
    for z0, found in _pipelined(jobs, workers):
        for z, (counts, v_lo, v_hi) in enumerate(found, start=z0):
            per_slice[z] = counts
            seen_lo, seen_hi = min(seen_lo, float(v_lo)), max(seen_hi, float(v_hi))
    if (seen_lo, seen_hi) != (lo, hi):
        return None
    return phases.Histogram(per_slice.sum(0), np.linspace(lo, hi, s.bins + 1)), per_slice


def fit_model(hist: phases.Histogram, slice_counts: np.ndarray, s: ThresholdSettings
              ) -> tuple[phases.PhaseModel, tuple[str, ...], phase_fit.CollectorSlab, phase_fit.ElectrolyteLayer]:
    """The phase model of a volume by the settings: manual thresholds, ``informed``, ``gmm`` or ``multiotsu``.

    Parameters
    ----------
    hist : detachment.phases.Histogram
        The volume's grey-level histogram.
    slice_counts : numpy.ndarray
        (z, bins) int64 histograms of its slices on the same bins (z = 0 at the collector).
    s : ThresholdSettings
        ``thresholds``, ``method`` and ``order`` are used.

    Returns
    -------
    model : detachment.phases.PhaseModel
        Thresholds and class Gaussians (the resolved phases only, for ``informed``).
    unresolved : tuple of str
        Phases of ``s.order`` the model does not separate (``informed`` only).
    collector : detachment.phase_fit.CollectorSlab
        The collector slab found at z = 0 (``thickness`` 0 where none is).
    layer : detachment.phase_fit.ElectrolyteLayer
        The electrolyte layer found at the far face (``thickness`` 0 where none is); the ``informed``
        model measures the electrolyte on it.

    Raises
    ------
    detachment.phase_fit.PhaseModelError
        From :func:`detachment.phase_fit.fit_informed_model` (no collector slab, nothing resolved).
    """
    if s.thresholds is None and s.method == "informed":
        fit = phase_fit.fit_informed_model(slice_counts, hist.edges, s.order)
        for note in fit.notes:
            log.info("not resolved: %s", note)
        return fit.model, fit.unresolved, fit.slab, fit.layer
    collector = phase_fit.find_collector_slab(slice_counts, hist.edges)
    layer = phase_fit.find_electrolyte_layer(slice_counts, hist.edges)
    if s.thresholds is not None:
        return phases.model_from_thresholds(hist, np.asarray(s.thresholds), s.order, "manual"), (), collector, layer
    return phases.fit_phase_model(hist, s.method, s.order), (), collector, layer


#: the codes (cbd, void, nmc_a, nmc_b) of :func:`detachment.slab_kernels.interior_counts`; ``NO_SHELLS`` finds none
SHELL_CODES = np.array([phases.CBD, phases.VOID, phases.NMC_LOW, phases.NMC_HIGH], np.int64)
NO_SHELLS = np.array([255, phases.VOID, phases.NMC_LOW, phases.NMC_HIGH], np.int64)


@dataclass
class ShellCandidates:
    """The edge-shell candidates of a slab (:func:`detachment.blur.edge_shell_candidates`): flat indices
    ``index`` (int64, C order) into the slab's counted rows, which start at volume z ``z0``, and their
    float32 grey levels ``grey``."""

    z0: int
    index: np.ndarray
    grey: np.ndarray


def _slab_counts(values: np.ndarray, p: np.ndarray, rows: slice, fine: UniformBins, shells: bool = False
                 ) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """Fine histograms of the interior voxels of each phase code, per-slice voxel counts and edge-shell
    candidates of ``p[rows]``.

    Parameters
    ----------
    values : numpy.ndarray
        (z, y, x) float32 grey levels of ``p[rows]``.
    p : numpy.ndarray
        (z, y, x) uint8 phase codes; the rows beside ``rows`` decide which voxels are interior and which
        are candidates.
    rows : slice
        The z rows counted.
    fine : UniformBins
        The fine bins.
    shells : bool, default False
        Find the edge-shell candidates (else none are).

    Returns
    -------
    interior : numpy.ndarray
        (5, fine.n) int64, as :func:`detachment.phases.interior_histograms` with ``keep`` = ``rows``.
    per_slice : numpy.ndarray
        (z, 5) int64 voxels of each code (columns 0..4) in each slice.
    candidates : tuple of numpy.ndarray
        Flat indices into ``p[rows]`` (int64, C order) and float32 grey levels of the candidates.
    """
    n = len(phases.PHASE_NAMES)
    interior = np.zeros((n, fine.n), np.int64)
    z0, z1, _ = rows.indices(len(p))
    per_slice = np.zeros((z1 - z0, n), np.int64)
    values, p = np.ascontiguousarray(values), np.ascontiguousarray(p)
    room = values.size // 8 if shells else 0  # candidates lie on particle surfaces: far fewer
    while True:
        where, grey = np.empty(room, np.int64), np.empty(room, np.float32)
        found = slab_kernels.interior_counts(values, p, z0, z1, fine.lo, fine.scale, fine.lut, fine.edge_in,
                                             interior, per_slice, SHELL_CODES if shells else NO_SHELLS, where,
                                             grey)
        if found <= room:
            return interior, per_slice, (where[:found].copy(), grey[:found].copy())
        room = found  # counted again with room for all (the counts start from 0 again)
        interior[:], per_slice[:] = 0, 0


def _reference_counts(values: np.ndarray, p: np.ndarray, rows: slice, fine_edges: np.ndarray, shells: bool = False
                      ) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """:func:`_slab_counts` by the reference functions, where the fast bins could not be built."""
    keep = np.zeros(len(p), bool)
    keep[rows] = True
    where = np.flatnonzero(blur.edge_shell_candidates(p)[rows]) if shells else np.zeros(0, np.int64)
    grey = values[rows].reshape(-1)[where].astype(np.float32)
    return phases.interior_histograms(values, p, fine_edges, keep=keep), _slice_counts(p[rows]), (where, grey)


def _slice_counts(core: np.ndarray) -> np.ndarray:
    """Voxels of each phase code (columns 0..4) in each z slice of ``core`` (uint8 codes, z, y, x)."""
    flat = core.reshape(core.shape[0], -1)
    return np.stack([np.count_nonzero(flat == code, axis=1) for code in phases.PHASE_NAMES], axis=1)


def threshold_volume(volume_path, phases_path, settings: ThresholdSettings, progress: bool = True,
                     workers: int = 1, shading_field: tuple[np.ndarray, int] | None = None) -> ThresholdResult:
    """Classify every voxel of ``volume_path`` and write ``/phases`` (uint8) to ``phases_path`` atomically.

    Parameters
    ----------
    volume_path, phases_path : str or os.PathLike
        Volume file (``/volume`` float32, (z, y, x)) and the phase map to write: ``/phases`` (z, y, x)
        uint8 codes with the attributes of docs/outputs.md.
    settings, progress : ThresholdSettings, bool (default True)
        The ``threshold`` config section; show progress bars.
    workers : int, default 1
        Threads of the histogram and classification passes: with 2 or more, slabs are counted,
        classified and compressed side by side (the same result, faster on two cores).
    shading_field : tuple of (numpy.ndarray, int), optional
        The field and block edge ``volume_path`` was flattened by, kept with the map (:func:`shading.write_field`).

    Returns
    -------
    ThresholdResult
        Phase model, grey-level histogram, interior FWHMs, volume fractions, per-slice code counts.

    Raises
    ------
    detachment.io.InputError
        When the volume file is missing or refused (:func:`detachment.io.read_volume_info`).
    detachment.phase_fit.PhaseModelError
        When the ``informed`` model does not fit the volume (:func:`fit_model`); nothing is written.
    """
    s = settings
    shape, voxel = io.read_volume_info(volume_path)
    hist, slice_counts = _grey_histogram(volume_path, s, shape[0], progress, workers)
    lo, hi = float(hist.edges[0]), float(hist.edges[-1])
    model, unresolved, collector, layer = fit_model(hist, slice_counts, s)
    plane = collector_plane(volume_path, s, model, collector)
    top = collector_top(model, collector, plane)
    split_settings, s = _domain_sigmas(model, s)
    model, unresolved, split = _domain_split(volume_path, split_settings, shape[0], model, unresolved, top,
                                             (lo, hi), progress, workers)
    log.info("%s thresholds %s between %s", model.method, np.round(model.thresholds, 4), model.names)
    fine_edges = np.linspace(lo, hi, 4 * s.bins + 1)
    fine = _uniform_bins(fine_edges[0], fine_edges[-1], 4 * s.bins, np.float64)
    classifier = _slab_classifier(model, top, s, (lo, hi))
    with io.atomic_output(phases_path) as tmp, h5py.File(tmp, "w") as f:
        d = f.create_dataset("phases", shape=shape, dtype=np.uint8, chunks=io.slab_chunks(shape),
                             compression="gzip", compression_opts=1)
        writer = h5chunks.GzipChunkWriter(d)
        tally = _classify(volume_path, s, shape, tmp, classifier, writer, model, fine, fine_edges, workers, progress)
        _write_attrs(d, voxel, model, unresolved, nmc_split(model, split), s.domain_sigma_vox)
        psf, psf_se, width = measured_blur(tally.edges)  # the width along the grid is what the contact reading undoes
        d.attrs.update(electrolyte_layer=layer.describe(), psf_refine=tally.refined,
                       psf_refine_sigma_vox=tally.refine_sigma, psf_refine_z_factor=tally.refine_z_factor,
                       edge_width_vox=width, **(plane.attrs() if plane is not None else {}))
        if shading_field is not None:
            shading.write_field(f, *shading_field)
    frac = tally.per_slice.sum(0)
    return ThresholdResult(model, hist, _fwhm_table(model, tally.interior, fine_edges, frac, nmc_split(model, split)),
                           {phases.PHASE_NAMES[c]: frac[c] / frac.sum() for c in phases.PHASE_NAMES},
                           tally.per_slice, unresolved, collector, psf, split, layer,
                           tally.refine_sigma, s.domain_sigma_vox, width, psf_se, tally.edges, plane, tally.refine_z_factor)


def _classify(volume_path, s: ThresholdSettings, shape, tmp, classifier: slab_phases.SlabClassifier,
              writer: h5chunks.GzipChunkWriter, model: phases.PhaseModel, fine, fine_edges, workers: int,
              progress: bool) -> _SlabTally:
    """The classification passes of :func:`threshold_volume`: with the edge-shell rule where it applies
    (``s.edge_shells``, electrolyte, CBD and NMC resolved), else the plain pass."""
    names = set(model.names)
    if s.edge_shells and {"void", "cbd"} <= names and names & {"nmc_low", "nmc_high"}:
        return _classify_with_shells(volume_path, s, shape, tmp, classifier, writer, model, fine, fine_edges,
                                     workers, progress)
    return _classify_pass(volume_path, s, shape[0], classifier, writer, fine, fine_edges, workers, progress)


def measured_blur(edges: blur.EdgeProfiles) -> tuple[float, float, float]:
    """The point-spread σ (on the flat edges, one phase beyond; on every edge where fewer than
    :data:`detachment.blur.MIN_FLAT_EDGES` are flat, which can only read it wider), its standard error (NaN
    with the fallback) and a step's width along the grid (every edge) of ``edges``, voxels."""
    width, psf, se = edges.sigma(), edges.psf_sigma(), edges.psf_sigma_se()
    log.info("point spread σ %.3f ± %.3f voxels on %d flat edges; steps along the grid %.3f voxels wide "
             "(%d edges)", psf, se, edges.flat_count, width, edges.count)
    if not np.isfinite(psf):
        log.warning("fewer than %d flat particle edges: the point spread is taken as the width of every "
                    "edge, %.3f voxels, which slanted surfaces widen", blur.MIN_FLAT_EDGES, width)
        psf, se = width, float("nan")
    return psf, se, width


def _slab_classifier(model: phases.PhaseModel, top: int | np.ndarray | None, s: ThresholdSettings,
                     value_range: tuple[float, float]) -> slab_phases.SlabClassifier:
    """The classifier of :func:`threshold_volume`'s passes (``s.domain_sigma_vox`` resolved; ``value_range``
    the histogram's, used only without denoising; ``top`` from :func:`collector_top`)."""
    return slab_phases.SlabClassifier(model, s.collector_min_thickness_vox, s.domain_sigma_vox,
                                      value_range=value_range if s.denoise == "none" else None, collector_top=top)


def nmc_split(model: phases.PhaseModel, split: phase_fit.DomainSplit | None) -> str:
    """How NMC high density was told from low: ``"histogram"``, ``"domain means"`` or ``"not resolved"``."""
    if "nmc_high" not in model.names:
        return "not resolved"
    return "domain means" if split is not None and split.resolved else "histogram"


def _domain_sigmas(model: phases.PhaseModel, s: ThresholdSettings) -> tuple[ThresholdSettings, ThresholdSettings]:
    """``s`` with ``domain_sigma_vox`` resolved on the histogram's ``model`` for the NMC domain split
    (``"auto"``: :data:`detachment.phases.AUTO_SPLIT_SIGMA`) and for the classification
    (:func:`detachment.phases.nmc_domain_sigma`)."""
    sigma = phases.nmc_domain_sigma(model, s.domain_sigma_vox)
    split = phases.AUTO_SPLIT_SIGMA if s.domain_sigma_vox == "auto" else sigma
    log.info("NMC low / high density decided on local means of σ %.2f vox (domain_sigma_vox: %s)", sigma,
             s.domain_sigma_vox)
    return replace(s, domain_sigma_vox=split), replace(s, domain_sigma_vox=sigma)


def _tries_domain_split(model: phases.PhaseModel, unresolved: tuple[str, ...], s: ThresholdSettings) -> bool:
    """Whether NMC high is to be looked for on domain means: on, σ > 0, ``nmc_high`` unresolved and
    merged into ``nmc_low`` (its neighbour in the order)."""
    order = s.order
    return (s.nmc_domain_split and s.domain_sigma_vox > 0 and "nmc_high" in unresolved and "nmc_low" in model.names
            and order.index("nmc_high") == order.index("nmc_low") + 1)


def _domain_split(volume_path, s: ThresholdSettings, depth: int, model: phases.PhaseModel,
                  unresolved: tuple[str, ...], top: int | np.ndarray | None,
                  value_range: tuple[float, float], progress: bool, workers: int):
    """Where :func:`_tries_domain_split`: :func:`detachment.phase_fit.split_nmc_domains` on the histogram of
    the interior NMC voxels' local means (:func:`detachment.phases.nmc_domain_means`), over ``nmc_low``'s
    grey-level range (one NMC class), in a pass of its own. Returns the model and the unresolved phases
    (:func:`_with_domain_split`) and the split (None where not tried)."""
    if not _tries_domain_split(model, unresolved, s):
        return model, unresolved, None
    classifier = slab_phases.SlabClassifier(model, s.collector_min_thickness_vox, 0.0, collector_top=top)
    k = model.names.index("nmc_low")
    lo = model.thresholds[k - 1] if k > 0 else value_range[0]
    hi = model.thresholds[k] if k < len(model.thresholds) else value_range[1]

    def job(data, a, z0, z1):
        p = classifier(data, z_first=a)
        nmc, interior, local = phases.nmc_domain_means(data, p, s.domain_sigma_vox)
        interior[: z0 - a], interior[z1 - a:] = False, False  # the slab's own rows only
        return np.histogram(local[interior[nmc]], s.bins, range=(lo, hi))[0]

    jobs = (functools.partial(job, data, a, z0, z1)
            for z0, z1, a, data in _slabs(volume_path, s, depth, s.halo, "NMC domains", progress, workers))
    counts = sum(_pipelined(jobs, workers), np.zeros(s.bins, np.int64))
    split = phase_fit.split_nmc_domains(phases.Histogram(counts, np.linspace(lo, hi, s.bins + 1)))
    return *_with_domain_split(model, unresolved, split), split


def _with_domain_split(model: phases.PhaseModel, unresolved: tuple[str, ...], split: phase_fit.DomainSplit
                       ) -> tuple[phases.PhaseModel, tuple[str, ...]]:
    """The model with ``nmc_high`` split off ``nmc_low`` where ``split`` resolved two densities."""
    if not split.resolved:
        log.info("NMC high density not resolved on the domain means either: %s", "; ".join(split.mixture.tried))
        return model, unresolved
    mix = split.mixture
    share = float(mix.weights[1] / mix.weights.sum())
    try:
        model = phases.with_nmc_high(model, split.threshold, mix.means[1], mix.sigmas[1], share, mix.means[0],
                                     mix.sigmas[0])
    except ValueError as e:
        log.warning("NMC domain split not used: %s", e)
        return model, unresolved
    log.info("NMC high density resolved on the domain means: low %.4g, high %.4g (share %.2f), split at %.4g",
             mix.means[0], mix.means[1], share, split.threshold)
    return model, tuple(n for n in unresolved if n != "nmc_high")


class _SlabTally:
    """What the classification pass counts, merged slab by slab in z order: interior histograms and
    per-slice code counts (``interior``, ``per_slice``: see :func:`_slab_counts`), edge profiles
    (``edges``) and each slab's edge-shell candidates (``shells``, :class:`ShellCandidates`)."""

    def __init__(self, depth: int, fine_edges: np.ndarray):
        self.interior = np.zeros((len(phases.PHASE_NAMES), len(fine_edges) - 1), np.int64)
        self.per_slice = np.zeros((depth, len(phases.PHASE_NAMES)), np.int64)
        self.edges = blur.EdgeProfiles()
        self.shells: list[ShellCandidates] = []
        self.refined = "off"  # what the forward-model pass did (phases.h5 attribute ``psf_refine``)
        self.refine_sigma = float("nan")  # the σ it refined with, voxels
        self.refine_z_factor = float("nan")  # and its σ along z over that σ

    def merge(self, z0: int, interior: np.ndarray, per_slice: np.ndarray, candidates, edges: blur.EdgeProfiles
              ) -> None:
        """Add one slab's counts (its first slice at volume z ``z0``)."""
        self.interior += interior
        self.per_slice[z0: z0 + len(per_slice)] = per_slice
        self.shells.append(ShellCandidates(z0, *candidates))
        self.edges.merge(edges)


def _classify_with_shells(volume_path, s: ThresholdSettings, shape, tmp, classifier: slab_phases.SlabClassifier,
                          writer: h5chunks.GzipChunkWriter, model: phases.PhaseModel, fine: UniformBins | None,
                          fine_edges: np.ndarray, workers: int, progress: bool) -> _SlabTally:
    """The classification pass into an uncompressed scratch map beside ``tmp``, counting the map and
    listing the edge-shell candidates with their grey levels; then the edge-shell pass, which moves the
    candidates below the cut (it needs the blur measured on the whole map), the spill pass, which
    tells electrolyte from CBD less the solid's spill, and (``psf_refine``) the forward-model pass; the
    last of them writes the final map."""
    scratch = Path(tmp).with_name(Path(tmp).name + ".map")  # swept with the output's leftovers if killed
    spilled = Path(tmp).with_name(Path(tmp).name + ".spill")
    try:
        raw = np.lib.format.open_memmap(scratch, mode="w+", dtype=np.uint8, shape=tuple(shape))
        tally = _classify_pass(volume_path, s, shape[0], classifier, writer, fine, fine_edges, workers, progress,
                               raw=raw)
        sigma = tally.edges.sigma()
        cut = blur.edge_shell_cut(model.names, model.means, sigma)
        nmc = blur.edge_nmc_cut(model.names, model.means, model.thresholds, sigma)
        _shell_pass(raw, cut, nmc, tally, workers, progress)
        spill_sigma = sigma if s.edge_spill else float("nan")
        if not (s.psf_refine and np.isfinite(sigma) and sigma > 0):
            _spill_pass(volume_path, s, raw, writer, model, spill_sigma, tally, workers, progress)
            tally.refined = "not run: no blur measured" if s.psf_refine else "off"
            return tally
        out = np.lib.format.open_memmap(spilled, mode="w+", dtype=np.uint8, shape=tuple(shape))
        _spill_pass(volume_path, s, raw, writer, model, spill_sigma, tally, workers, progress, out=out)
        levels, noise = refine_levels(model, tally.interior, fine_edges)
        block = grey = None
        if (s.psf_refine_sigma == "fit" or s.psf_refine_z_factor == "fit" or psf_refine.deep_depth(sigma) > 1
                or s.psf_refine_texture_vox != 0):  # all read the σ fit's block
            solid = tally.per_slice[:, [phases.CBD, phases.NMC_LOW, phases.NMC_HIGH]].sum(axis=1)
            block = psf_refine.fit_block(solid, out.shape)
            grey = _denoised_block(volume_path, s, block, out.shape)
            levels = _deep_levels(np.asarray(out[block]), grey, levels, sigma)
        fitted, z_factor, where = _refine_sigma(s, out, block, grey, levels, sigma, noise, classifier.collector_top)
        texture, noise, texture_words = _refine_texture(s, out, block, grey, levels, fitted, noise, z_factor)
        _refine_pass(volume_path, s, out, writer, levels, fitted, noise, classifier.collector_top, tally, workers,
                     progress, texture, z_factor)
        tally.refine_sigma, tally.refine_z_factor = fitted, z_factor
        tally.refined = f"{tally.refined}; sigma {where}; NMC texture {texture_words}"
        return tally
    finally:
        scratch.unlink(missing_ok=True)
        spilled.unlink(missing_ok=True)


def refine_levels(model: phases.PhaseModel, interior: np.ndarray, fine_edges: np.ndarray
                  ) -> tuple[dict[str, float], dict[str, float]]:
    """Grey levels and standard deviations per phase for :func:`detachment.psf_refine.refine_codes`.

    Each resolved phase's level is the centre of its interior voxels' histogram (``interior``: counts per
    code on ``fine_edges``; all six neighbours of the same phase, so less mixed by the blur than the
    model's mean) where that fit lies within one model FWHM of the model's mean, the model's mean
    elsewhere (a class of a few hundred interior voxels can give a Gaussian fit far off its grey levels).
    Its standard deviation is that fit's FWHM over 2.355 (the noise, and a textured phase's own spread on
    top of it), at least the noise's: the electrolyte's fit where it has one (it carries the noise and no
    texture; a fit to a class of a few voxels can come out far narrower than the noise), else the
    narrowest; a phase without a fit gets the noise's. None valid: an empty dict. Under a wide point spread
    the levels are read deeper afterwards, on the σ fit's block (:func:`detachment.psf_refine.deep_levels`).
    """
    levels, widths = {}, {}
    for name, mean, sd in zip(model.names, model.means, model.sigmas):
        centre, fwhm = phases.fit_fwhm(interior[phases.PHASE_CODES[name]], fine_edges)
        sane = phases.fit_near_model(centre, mean, sd * phases.FWHM_PER_SIGMA)
        levels[name] = float(centre) if sane else float(mean)
        if sane and np.isfinite(fwhm) and fwhm > 0:
            widths[name] = float(fwhm) / phases.FWHM_PER_SIGMA
    if not widths:
        return levels, {}
    noise = widths.get("void", min(widths.values()))
    return levels, {name: max(widths.get(name, noise), noise) for name in levels}


def _noise_words(noise: dict[str, float]) -> str:
    """The per-phase standard deviations of the forward model, in words for the log and the map's attribute."""
    return "noise sd " + (", ".join(f"{k} {v:.3g}" for k, v in noise.items()) if noise else "none")


def _classify_pass(volume_path, s: ThresholdSettings, depth: int, classifier: slab_phases.SlabClassifier,
                   writer: h5chunks.GzipChunkWriter, fine: UniformBins | None, fine_edges: np.ndarray,
                   workers: int, progress: bool, raw: np.ndarray | None = None) -> _SlabTally:
    """The classification pass: classify each slab, take its edge profiles, count its codes, and write
    them, or, given ``raw``, put them there and list the edge-shell candidates.

    With ``workers`` > 1 that many threads classify, compress and count slabs side by side (compiled
    code and ISA-L, without Python's GIL) while this one reads the next slabs and writes the finished
    ones; the counts are merged in z order, so the results do not depend on ``workers``.
    """

    def job(data, a, z0, z1):
        # one extra slice each side: the erosion of the interior and the candidates' neighbours are exact
        # at slab seams
        b0, b1 = max(0, z0 - 1) - a, min(depth, z1 + 1) - a
        p = classifier(data, slice(b0, b1), z_first=a)
        rows, grey = slice(z0 - a - b0, z1 - a - b0), data[b0:b1]
        edges = blur.EdgeProfiles()
        edges.add(p, grey, z0, rows)  # the slices of context tell flat edges at the seams
        counts = _counts(grey, p, rows, fine, fine_edges, shells=raw is not None)
        if raw is not None:
            raw[z0:z1] = p[rows]
            return [], z0, *counts, edges
        return writer.compress(p[rows], z0), z0, *counts, edges

    jobs = (functools.partial(job, data, a, z0, z1)
            for z0, z1, a, data in _slabs(volume_path, s, depth, s.halo, "classify", progress, workers))
    tally = _SlabTally(depth, fine_edges)
    for chunks, *counts in _pipelined(jobs, workers):
        writer.store(chunks)  # HDF5 is only called from this thread
        tally.merge(*counts)
    return tally


def _counts(grey: np.ndarray, p: np.ndarray, rows: slice, fine: UniformBins | None, fine_edges: np.ndarray,
            shells: bool = False):
    """:func:`_slab_counts` of ``p[rows]`` (grey levels ``grey``, the rows of ``p``), or its reference."""
    return (_slab_counts(grey[rows], p, rows, fine, shells) if fine is not None
            else _reference_counts(grey, p, rows, fine_edges, shells))


def _shell_pass(raw: np.ndarray, cut, nmc: blur.NmcEdgeCut | None, tally: _SlabTally, workers: int,
                progress: bool) -> None:
    """In the classified map ``raw``: move the edge-shell candidates of ``tally.shells`` whose grey level
    is below ``cut`` (None: none) to the electrolyte and those at or above ``nmc`` to NMC
    (:func:`detachment.blur.edge_shell_codes`), and update ``tally.per_slice``.

    The interior histograms (the FWHMs) stay those of the map before the rule, so that this pass needs no
    grey levels beyond the candidates': a candidate touches NMC, so it is interior neither before nor
    after; only its CBD and electrolyte neighbours could count otherwise. The edge profiles do not change
    (CBD and electrolyte are both background to them).
    """
    plane = int(np.prod(raw.shape[1:]))

    n_codes = len(phases.PHASE_NAMES)

    def job(c: ShellCandidates, z1: int):
        q = np.array(raw[c.z0: z1])
        codes = blur.edge_shell_codes(c.grey, cut, nmc)
        moved = codes != phases.CBD
        q.reshape(-1)[c.index[moved]] = codes[moved]
        # per slice and code, the candidates that left CBD
        per_z = np.bincount((c.index[moved] // plane) * n_codes + codes[moved],
                            minlength=(z1 - c.z0) * n_codes).reshape(z1 - c.z0, n_codes)
        return q, c.z0, per_z

    ends = [c.z0 for c in tally.shells[1:]] + [len(raw)]
    jobs = (functools.partial(job, c, z1) for c, z1 in zip(tally.shells, ends))
    for q, z0, per_z in tqdm(_pipelined(jobs, workers), total=len(ends), desc="edge shells",
                             disable=not progress, unit="slab"):
        raw[z0: z0 + len(q)] = q  # slabs do not overlap: each reads only its own rows
        tally.per_slice[z0: z0 + len(per_z)] += per_z
        tally.per_slice[z0: z0 + len(per_z), phases.CBD] -= per_z.sum(1)


def _spill_pass(volume_path, s: ThresholdSettings, raw: np.ndarray, writer: h5chunks.GzipChunkWriter,
                model: phases.PhaseModel, sigma: float, tally: _SlabTally, workers: int, progress: bool,
                out: np.ndarray | None = None) -> None:
    """From the map ``raw`` (edge shells given back): electrolyte and CBD told apart on the grey levels
    less the solid phases' spill through the blur ``sigma``
    (:func:`detachment.blur.reassign_by_spill`; NaN: the map as it is), written slab by slab, with
    ``tally.per_slice`` updated. Each slab reads the map :func:`detachment.blur.spill_radius` slices
    beyond it, so the result is that of the whole volume; the solid's codes do not change here. Given
    ``out`` (a map of ``raw``'s shape), the result goes there instead of to ``writer``."""
    depth = len(raw)
    t = blur.void_cbd_threshold(model.names, model.thresholds)
    applies = t is not None and np.isfinite(sigma) and sigma > 0
    h = blur.spill_radius(sigma) if applies else 0

    def job(data, a, z0, z1):
        q = np.array(raw[z0:z1])
        before = np.stack([(q == c).sum(axis=(1, 2)) for c in (phases.VOID, phases.CBD)], axis=1)
        if applies:
            b0, b1 = max(0, z0 - h), min(depth, z1 + h)
            spill = blur.solid_spill(np.asarray(raw[b0:b1]), model.names, model.means, sigma, t)[z0 - b0: z1 - b0]
            grey = data[z0 - a: z1 - a]
            background = (q == phases.VOID) | (q == phases.CBD)
            q[background] = np.where(grey[background] - spill[background] < t, phases.VOID, phases.CBD)
        after = np.stack([(q == c).sum(axis=(1, 2)) for c in (phases.VOID, phases.CBD)], axis=1)
        if out is not None:
            out[z0:z1] = q
            return [], z0, after - before
        return writer.compress(q, z0), z0, after - before

    halo = s.halo if s.denoise != "none" else 0  # as the classification read it (denoised on slab + halo)
    jobs = (functools.partial(job, data, a, z0, z1)
            for z0, z1, a, data in _slabs(volume_path, s, depth, halo, "electrolyte / CBD", progress, workers))
    for chunks, z0, delta in _pipelined(jobs, workers):
        writer.store(chunks)
        tally.per_slice[z0: z0 + len(delta), phases.VOID] += delta[:, 0]
        tally.per_slice[z0: z0 + len(delta), phases.CBD] += delta[:, 1]


def _deep_levels(codes: np.ndarray, grey: np.ndarray, levels: dict[str, float], edge_sigma: float) -> dict[str, float]:
    """:func:`detachment.psf_refine.deep_levels` on the block ``codes`` / ``grey``, with a log line saying which
    levels moved."""
    deep = psf_refine.deep_levels(codes, grey, levels, edge_sigma)
    moved = {k: (levels[k], v) for k, v in deep.items() if v != levels[k]}
    if moved:
        log.info("forward model: levels read %d voxels deep (edge profiles' sigma %.3g): %s",
                 psf_refine.deep_depth(edge_sigma), edge_sigma,
                 ", ".join(f"{k} {a:.4g} -> {b:.4g}" for k, (a, b) in moved.items()))
    return deep


def _refine_sigma(s: ThresholdSettings, codes: np.ndarray, block: tuple[slice, slice, slice] | None,
                  grey: np.ndarray | None, levels: dict[str, float], edge_sigma: float, noise: dict[str, float],
                  al_below: int | np.ndarray | None) -> tuple[float, float, str]:
    """The forward model's σ within the slices (``s.psf_refine_sigma``), its z factor
    (``s.psf_refine_z_factor``) and where they came from, in words.

    ``"fit"``: :func:`detachment.psf_refine.fit_spread` (or :func:`detachment.psf_refine.fit_sigma` where the
    z factor is set) on ``block`` of ``codes`` (the slices with the most CBD and NMC,
    :func:`detachment.psf_refine.fit_block`) and its grey levels ``grey``, denoised as the classification read
    them; started from ``edge_sigma``. ``block`` and ``grey`` are read only where a fit or the deep levels use
    them (None otherwise).
    """
    fit_z = s.psf_refine_z_factor == "fit"
    z_factor = 1.0 if fit_z else float(s.psf_refine_z_factor)
    if s.psf_refine_sigma == "edge":
        sigma, where = edge_sigma, "measured on the edge profiles"
    elif s.psf_refine_sigma != "fit":
        sigma, where = float(s.psf_refine_sigma), "set in the config"
    else:
        sigma, where = float("nan"), ""
    if not fit_z and s.psf_refine_sigma != "fit":
        return sigma, z_factor, where + f"; z factor {z_factor:g} set in the config"
    rs = psf_refine.RefineSettings(s.psf_refine_beta, s.psf_refine_sweeps, z_factor=z_factor)
    if np.ndim(al_below):
        al_below = al_below[block[1], block[2]]
    args = (np.asarray(codes[block]), grey, levels, edge_sigma, noise, rs, al_below, block[0].start)
    if fit_z:
        sigma, z_factor = psf_refine.fit_spread(*args, sigma=None if s.psf_refine_sigma == "fit" else sigma)
    else:
        sigma = psf_refine.fit_sigma(*args)
    z, y, x = block
    on = f"on the block z {z.start}-{z.stop - 1}, y {y.start}-{y.stop - 1}, x {x.start}-{x.stop - 1}"
    if s.psf_refine_sigma == "fit":
        where = f"fitted {on} (edge profiles: {edge_sigma:.3g})"
    where += f"; z factor {z_factor:.3g} " + (f"fitted {on}" if fit_z else "set in the config")
    warn = []
    if s.psf_refine_sigma == "fit" and psf_refine.at_fit_bound(sigma, edge_sigma):
        lo, hi = (f * edge_sigma for f in psf_refine.FIT_RANGE)
        warn.append(f"σ AT THE END of its range {lo:.3g}-{hi:.3g}: the edge profiles' σ is far from the one the "
                    "grey levels fit; look at fig1_phases.png and set threshold.psf_refine_sigma if you know the blur")
    if fit_z and psf_refine.at_z_fit_bound(z_factor, sigma):
        lo, hi = psf_refine.Z_FIT_RANGE
        warn.append(f"z factor AT THE END of its range {lo:g}-{hi:g}: set threshold.psf_refine_z_factor if you "
                    "know the blur along z")
    if warn:
        where += ", " + "; ".join(warn)
        log.warning("forward model: sigma %.3g vox %s", sigma, where)
    else:
        log.info("forward model: sigma %.3g vox, %s", sigma, where)
    return sigma, z_factor, where


def _refine_texture(s: ThresholdSettings, codes: np.ndarray, block: tuple[slice, slice, slice] | None,
                    grey: np.ndarray | None, levels: dict[str, float], sigma: float, noise: dict[str, float],
                    z_factor: float = 1.0) -> tuple[float, dict[str, float], str]:
    """The forward model's NMC texture σ (``s.psf_refine_texture_vox``), its noise with each NMC code's spread
    scaled by the fall the texture brings (:func:`detachment.psf_refine.fit_texture_sigma` on ``block``: the
    median absolute deviations about the textured levels over those about one level; at least the narrowest
    phase's, as :func:`refine_levels`), and the choice in words.

    The fall, not the deviation itself: :func:`refine_levels` reads each spread on a Gaussian fit to the
    interior histogram, and the median absolute deviation over all of a code's voxels also takes in the
    surface voxels a sub-voxel surface mixes with their neighbours."""
    if s.psf_refine_texture_vox == 0 or not noise:
        return 0.0, noise, "off"
    fit = s.psf_refine_texture_vox == "fit"
    grid = psf_refine.TEXTURE_GRID if fit else (float(s.psf_refine_texture_vox),)
    texture, spread, untextured = psf_refine.fit_texture_sigma(np.asarray(codes[block]), grey, levels, sigma, grid,
                                                               or_none=fit, z_factor=z_factor)
    if texture == 0:
        words = "none: no texture σ lowers NMC's spread on the σ fit's block" if spread else "none: too little NMC"
        log.info("forward model: %s", words)
        return 0.0, noise, words
    floor = min(noise.values())
    before = {k: noise[k] for k in spread if k in noise and untextured[k] > 0}
    noise = {**noise, **{k: max(v * spread[k] / untextured[k], floor) for k, v in before.items()}}
    words = (f"read over {texture:g} vox ({'fitted' if fit else 'set in the config'}; NMC sd "
             + ", ".join(f"{k} {before[k]:.3g} -> {noise[k]:.3g}" for k in before) + ")")
    log.info("forward model: NMC texture %s", words)
    return texture, noise, words


def _denoised_block(volume_path, s: ThresholdSettings, block: tuple[slice, slice, slice], shape) -> np.ndarray:
    """The grey levels of ``block`` (float32) denoised as the classification read them (``s.halo`` voxels of
    context on every side where the volume has them)."""
    extra = s.halo if s.denoise != "none" else 0
    outer = tuple(slice(max(0, b.start - extra), min(n, b.stop + extra)) for b, n in zip(block, shape))
    data = np.asarray(io.read_region(volume_path, io.VOLUME_DATASET, outer), np.float32)
    data = phases.denoise(data, s.denoise, s.denoise_sigma_vox)
    return np.ascontiguousarray(data[tuple(slice(b.start - o.start, b.stop - o.start) for b, o in zip(block, outer))])


def _refine_pass(volume_path, s: ThresholdSettings, codes: np.ndarray, writer: h5chunks.GzipChunkWriter,
                 levels: dict[str, float], sigma: float, noise: dict[str, float],
                 al_below: int | np.ndarray | None,
                 tally: _SlabTally, workers: int, progress: bool, texture: float = 0.0, z_factor: float = 1.0) -> None:
    """The map ``codes`` refined against the blurred forward model (:func:`detachment.psf_refine.refine_codes`,
    NMC's texture read over ``texture`` voxels, σ ``z_factor`` times as wide along z) and written, with
    ``tally.per_slice`` updated.

    Each slab of ``s.slab`` slices is refined with :func:`detachment.psf_refine.refine_halo` slices of
    ``codes`` and grey levels on either side and keeps its own rows. The slabs lie at multiples of
    ``s.slab`` whatever ``workers``, so the map does not depend on the threads.
    """
    depth = len(codes)
    h = psf_refine.refine_halo(sigma, texture, z_factor)
    extra = s.halo if s.denoise != "none" else 0  # the denoising's own halo, as the classification read it
    rs = psf_refine.RefineSettings(s.psf_refine_beta, s.psf_refine_sweeps, texture, z_factor)

    def job(data, z0, z1):
        b0, b1 = max(0, z0 - h), min(depth, z1 + h)
        a = max(0, z0 - h - extra)
        grey = phases.denoise(data, s.denoise, s.denoise_sigma_vox)[b0 - a: b1 - a]
        q, _ = psf_refine.refine_codes(np.asarray(codes[b0:b1]), grey, levels, sigma, noise, rs,
                                       al_below=al_below, z_first=b0)
        q = q[z0 - b0: z1 - b0]
        before = np.asarray(codes[z0:z1])
        return writer.compress(q, z0), z0, _code_counts(q) - _code_counts(before), int((q != before).sum())

    it = io.iter_volume_slabs(volume_path, s.slab, h + extra, buffers=workers + 2)
    jobs = (functools.partial(job, data, z0, z1)
            for z0, z1, data in tqdm(it, total=math.ceil(depth / s.slab), desc="forward model", disable=not progress,
                                     unit="slab"))
    moved = 0
    for chunks, z0, per_z, n in _pipelined(jobs, workers):
        writer.store(chunks)
        tally.per_slice[z0: z0 + len(per_z)] += per_z
        moved += n
    tally.refined = (f"sigma {sigma:.3g} vox, z factor {z_factor:.3g}, {_noise_words(noise)}, beta {rs.beta:g}, at most {rs.sweeps} sweeps: "
                     f"{moved} codes changed ({100.0 * moved / codes.size:.3g} % of the voxels)")
    log.info("forward model, levels %s: %s", {k: round(v, 4) for k, v in levels.items()}, tally.refined)


def _code_counts(q: np.ndarray) -> np.ndarray:
    """(z, code) voxel counts of the (z, y, x) codes ``q``."""
    n = len(phases.PHASE_NAMES)
    return np.stack([np.bincount(np.asarray(sl).ravel(), minlength=n)[:n] for sl in q])


def _pipelined(jobs, workers: int):
    """Call each callable of ``jobs`` and yield the results in order.

    With ``workers`` > 1 the calls run in that many background threads, at most ``workers + 1`` queued,
    while this thread makes the next jobs (reads the next slabs); the jobs' compiled kernels and the
    compression release Python's GIL, so they run side by side.
    """
    if workers <= 1:
        for job in jobs:
            yield job()
        return
    pending = collections.deque()
    with ThreadPoolExecutor(workers) as pool:
        for job in jobs:
            pending.append(pool.submit(job))
            if len(pending) > workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def collector_top(model: phases.PhaseModel, collector: phase_fit.CollectorSlab | None,
                  plane: collector_surface.CollectorPlane | None = None) -> int | np.ndarray | None:
    """First slice above the collector for :func:`detachment.phases.confine_collector`, or None.

    Only the ``informed`` model confines Al to the collector slab (it measured Al there): the slab's
    thickness plus :data:`detachment.phase_fit.EDGE_SLICES` for its blurred top, one for every column; where
    the ``plane`` fitted to the collector's top is tilted, (y, x) per column, the plane's height plus the same
    margin (:func:`detachment.collector_surface.top_rows`).
    """
    if model.method != "informed" or collector is None or not collector.found:
        return None
    if plane is not None and plane.tilted:
        return collector_surface.top_rows(plane, phase_fit.EDGE_SLICES)
    return collector.thickness + phase_fit.EDGE_SLICES


def collector_plane(volume_path, s: ThresholdSettings, model: phases.PhaseModel,
                    collector: phase_fit.CollectorSlab | None) -> collector_surface.CollectorPlane | None:
    """The collector's top surface fitted column by column (:func:`detachment.collector_surface.fit_plane` on the runs
    of grey levels in Al's band of ``model`` from z = 0, read slab by slab until every run ended); None where
    the model does not confine Al to a collector slab (:func:`collector_top`)."""
    if collector_top(model, collector) is None or "al" not in model.names:
        return None
    k = model.names.index("al")
    band = (model.thresholds[k - 1] if k > 0 else -np.inf, model.thresholds[k] if k < len(model.thresholds) else np.inf)
    slabs = (data for _, _, data in io.iter_volume_slabs(volume_path, s.slab))
    plane = collector_surface.fit_plane(collector_surface.column_heights(slabs, band))
    if plane is not None:
        log.info("collector top: %s%s", plane.describe(),
                 "; Al is confined below it column by column" if plane.tilted else "; flat")
    return plane


def _write_attrs(d, voxel, model: phases.PhaseModel, unresolved: tuple[str, ...], nmc_split: str,
                 domain_sigma: float) -> None:
    d.attrs["voxel_size_um"] = np.asarray(voxel)
    d.attrs["nmc_split"] = nmc_split  # how NMC high was told from low (ThresholdResult.nmc_split)
    d.attrs["nmc_domain_sigma_vox"] = float(domain_sigma)  # σ it was told on (domain_sigma_vox, resolved)
    d.attrs["codes"] = ", ".join(f"{c}={n}" for c, n in phases.PHASE_NAMES.items())
    d.attrs["method"] = model.method
    d.attrs["unresolved"] = ", ".join(unresolved)  # phases not separated: their voxels carry a neighbour's code
    d.attrs["thresholds"] = model.thresholds
    d.attrs["means"] = np.asarray(model.means, float)  # grey level of each phase, in ``order``
    d.attrs["order"] = ", ".join(model.names)


def _fwhm_table(model: phases.PhaseModel, interior: np.ndarray, fine_edges: np.ndarray,
                frac: np.ndarray, nmc_split: str = "histogram") -> pd.DataFrame:
    rows = []
    on_domains = nmc_split == "domain means"
    for code, name in phases.PHASE_NAMES.items():
        centre, fwhm = phases.fit_fwhm(interior[code], fine_edges)
        row = {"phase": name, "code": code, "centre": centre, "fwhm": fwhm,
               "interior_voxels": int(interior[code].sum()), "volume_fraction": frac[code] / frac.sum(),
               "model_mean": np.nan, "model_fwhm": np.nan, "threshold_below": np.nan, "threshold_above": np.nan,
               "resolved": name in model.names,
               "resolved_on": ("" if name not in model.names else
                               "domain means" if on_domains and name.startswith("nmc") else "histogram")}
        if name in model.names:
            k = model.names.index(name)
            row.update(model_mean=model.means[k], model_fwhm=model.sigmas[k] * phases.FWHM_PER_SIGMA,
                       threshold_below=model.thresholds[k - 1] if k > 0 else np.nan,
                       threshold_above=model.thresholds[k] if k < len(model.thresholds) else np.nan)
        rows.append(row)
    return pd.DataFrame(rows)


def histogram_table(result: ThresholdResult) -> pd.DataFrame:
    """Histogram as a table: bin edges, counts and the phase each bin is assigned to.

    Parameters
    ----------
    result : ThresholdResult
        A thresholding result.

    Returns
    -------
    pandas.DataFrame
        One row per bin: ``bin_low`` and ``bin_high`` (grey level), ``count`` (voxels) and ``phase``
        (name of the phase the bin centre is classified as).
    """
    h = result.histogram
    codes = phases.classify(h.centers, result.model)
    return pd.DataFrame({"bin_low": h.edges[:-1], "bin_high": h.edges[1:], "count": h.counts,
                         "phase": [phases.PHASE_NAMES[int(c)] for c in codes]})
