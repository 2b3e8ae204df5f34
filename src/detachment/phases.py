"""Phase thresholding of a phase-contrast reconstruction (Supp. Figs. 1 and 8).

Phase codes (docs/outputs.md): 0 void/pore (electrolyte), 1 CBD, 2 NMC low electron
density, 3 NMC high electron density, 4 Al current collector.

Entry points: :func:`histogram` and :func:`fit_phase_model` (thresholds from the grey-level
histogram, ``gmm`` or ``multiotsu``), :func:`classify`, the local clean-ups
:func:`remove_thin_collector` and :func:`refine_nmc_domains`, and :func:`phase_fwhm` (FWHM of
each phase's interior voxels). The method: docs/methods.md, "Phase thresholding" and "FWHM".
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

log = logging.getLogger(__name__)

VOID, CBD, NMC_LOW, NMC_HIGH, AL = 0, 1, 2, 3, 4
PHASE_NAMES = {VOID: "void", CBD: "cbd", NMC_LOW: "nmc_low", NMC_HIGH: "nmc_high", AL: "al"}
PHASE_CODES = {v: k for k, v in PHASE_NAMES.items()}
FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))  # 2.3548
#: Fewest voxels in the peak bin of a histogram :func:`fit_fwhm` fits: sparser histograms have their bins
#: merged in pairs until the peak holds this many. A few hundred voxels over hundreds of bins leave a core of
#: scattered bins of one to ten counts that a Gaussian fit can escape from (to another phase's level, or a
#: width of the whole range); merged, the fit holds (tests/test_phases.py).
FIT_MIN_PEAK_COUNT = 30
#: Default order of the phases by increasing electron density (phase-contrast grey level).
DEFAULT_ORDER = ("void", "cbd", "al", "nmc_low", "nmc_high")


@dataclass
class Histogram:
    """Grey-level histogram: ``counts[i]`` voxels in ``[edges[i], edges[i+1])``.

    The last bin also holds ``edges[-1]``, as in :func:`numpy.histogram`.

    Attributes
    ----------
    counts : numpy.ndarray
        (n_bins,) int64 voxel counts.
    edges : numpy.ndarray
        (n_bins + 1,) float64 bin edges, grey level, increasing and evenly spaced.
    """

    counts: np.ndarray
    edges: np.ndarray

    @property
    def centers(self) -> np.ndarray:
        """Bin centres, (n_bins,) float64 grey levels."""
        return 0.5 * (self.edges[1:] + self.edges[:-1])


@dataclass
class PhaseModel:
    """Thresholds between consecutive classes and the fitted class Gaussians.

    Attributes
    ----------
    names : tuple of str
        The n phase names (keys of ``PHASE_CODES``) in order of increasing grey level.
    thresholds : numpy.ndarray
        (n - 1,) float64 grey levels; ``thresholds[i]`` separates ``names[i]`` from ``names[i + 1]``
        (a voxel at the threshold goes to ``names[i + 1]``).
    means : numpy.ndarray
        (n,) float64 grey level of each phase, in ``names`` order.
    sigmas : numpy.ndarray
        (n,) float64 standard deviation of each phase, grey level.
    weights : numpy.ndarray
        (n,) float64 share (fraction 0-1, summing to 1) of the histogram in each phase.
    method : str
        How the model was fitted: ``"gmm"`` or ``"multiotsu"`` (any label for a model built by hand).
    """

    names: tuple[str, ...]
    thresholds: np.ndarray
    means: np.ndarray
    sigmas: np.ndarray
    weights: np.ndarray
    method: str

    @property
    def codes(self) -> np.ndarray:
        """Phase code of each of ``names``, (n,) uint8."""
        return np.array([PHASE_CODES[n] for n in self.names], dtype=np.uint8)


def histogram(volume: np.ndarray, bins: int = 256, value_range: tuple[float, float] | None = None) -> Histogram:
    """Grey-level histogram of a volume on ``bins`` equal bins.

    Parameters
    ----------
    volume : array_like
        Grey levels, any shape (a (z, y, x) volume, an (n, y, x) stack of slices, ...).
    bins : int, default 256
        Number of bins.
    value_range : tuple of float, optional
        ``(lo, hi)`` grey levels the bins cover; values outside are not counted. Default: the
        volume's minimum and maximum.

    Returns
    -------
    Histogram
        (bins,) int64 counts and (bins + 1,) float64 edges, as :func:`numpy.histogram`.
    """
    if value_range is None:
        value_range = (float(np.min(volume)), float(np.max(volume)))
    counts, edges = np.histogram(volume, bins=bins, range=value_range)
    return Histogram(counts.astype(np.int64), edges)


def _gauss(x, mu, sigma):
    return np.exp(-0.5 * ((x - mu) / sigma) ** 2) / (sigma * np.sqrt(2 * np.pi))


#: A mode that makes a phase resolved must stand this many times above its counting noise (histogram_peaks).
PEAK_SIGNIFICANCE = 3.0
_PEAK_SMOOTHING_BINS = 1.5


def histogram_peaks(hist: Histogram, n: int, fill: bool = True, significance: float = 0.0) -> np.ndarray:
    """Bin indices of the ``n`` most prominent modes of the (log-count, lightly smoothed) histogram.

    Modes are peaks of ``log1p(counts)`` smoothed by a Gaussian of 1.5 bins, with a prominence of
    at least 0.05 and at least ``significance`` times its counting noise: the Poisson noise of the
    smoothed log counts at the peak and at its higher base, ``sqrt(1/c_peak + 1/c_base)`` times the
    smoothing's noise factor (a small volume's histogram is ragged enough to show spurious modes; at
    the bin counts of a whole tomogram the 0.05 decides). Log counts let a small phase (Al, NMC-high)
    show its own mode beside a dominant one (electrolyte). Where fewer than ``n`` modes exist, the
    missing ones are taken as the modes of multi-Otsu classes that hold no peak yet (for ``n`` = 1:
    the fullest bin).

    Parameters
    ----------
    hist : Histogram
        The grey-level histogram.
    n : int
        Number of modes wanted (the number of phases).
    fill : bool, default True
        Add the multi-Otsu modes where fewer than ``n`` modes are found; False returns only the modes
        the histogram shows.
    significance : float, default 0
        Least prominence in units of the counting noise (0: only the 0.05 bound); the informed model
        counts the modes that decide how many phases a side resolves with :data:`PEAK_SIGNIFICANCE`.

    Returns
    -------
    numpy.ndarray
        (m,) int bin indices in increasing order, ``m <= n`` (fewer where the multi-Otsu classes
        cannot supply the missing modes).

    Raises
    ------
    ValueError
        From :func:`skimage.filters.threshold_multiotsu` when modes are missing and the histogram has
        fewer than ``n`` non-empty bins.
    """
    from scipy.signal import find_peaks

    counts = hist.counts.astype(float)
    logc = ndimage.gaussian_filter1d(np.log1p(counts), _PEAK_SMOOTHING_BINS)
    peaks, props = find_peaks(logc, prominence=0.05)
    keep = _significant(counts, logc, peaks, props, significance)
    peaks, prominences = peaks[keep], props["prominences"][keep]
    peaks = np.sort(peaks[np.argsort(prominences)[::-1][:n]])
    if fill and n == 1 and len(peaks) == 0:
        return np.array([int(np.argmax(hist.counts))])
    if fill and len(peaks) < n:
        bounds = np.concatenate([[-np.inf], multiotsu_thresholds(hist, n), [np.inf]])
        x = hist.centers
        for k in range(n):
            inside = np.nonzero((x >= bounds[k]) & (x < bounds[k + 1]))[0]
            if len(peaks) < n and inside.size and not np.any(np.isin(peaks, inside)):
                peaks = np.sort(np.append(peaks, inside[np.argmax(hist.counts[inside])]))
    return peaks


def fit_peak_gaussians(hist: Histogram, n_classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gaussian mixture fitted on the histogram's peak cores.

    Each component is fitted by least squares to the bins around one mode
    (:func:`histogram_peaks`) that stand above half its height, up to the valleys
    beside it; the peak cores describe the pure phases (docs/methods.md says why
    not EM). Weights are the component areas, normalised. Where
    :func:`histogram_peaks` finds fewer than ``n_classes`` modes, fewer components
    are returned.

    Parameters
    ----------
    hist : Histogram
        The grey-level histogram (evenly spaced bins).
    n_classes : int
        Number of components (phases).

    Returns
    -------
    means : numpy.ndarray
        (n_classes,) float64 component means, grey level, increasing.
    sigmas : numpy.ndarray
        (n_classes,) float64 standard deviations, grey level (at least half a bin).
    weights : numpy.ndarray
        (n_classes,) float64 component areas as fractions 0-1, summing to 1.

    Raises
    ------
    ValueError
        As :func:`histogram_peaks`.
    """
    from scipy.optimize import curve_fit

    x, c = hist.centers, hist.counts.astype(float)
    binw = float(x[1] - x[0])
    peaks = histogram_peaks(hist, n_classes)
    mus, sds, amps = [], [], []
    for i, pk in enumerate(peaks):
        lo = peaks[i - 1] if i > 0 else 0
        hi = peaks[i + 1] if i + 1 < len(peaks) else len(x) - 1
        lo = lo + int(np.argmin(c[lo:pk + 1])) if pk > lo else pk
        hi = pk + int(np.argmin(c[pk:hi + 1])) if hi > pk else pk
        core = np.arange(lo, hi + 1)
        core = core[c[core] >= 0.5 * c[pk]]
        mu0, sd0 = x[pk], max(binw, binw * core.size / 2.355)
        try:
            (a, mu, sd), _ = curve_fit(lambda t, a, m, s: a * np.exp(-0.5 * ((t - m) / s) ** 2), x[core], c[core],
                                       p0=(c[pk], mu0, sd0), maxfev=5000) if core.size >= 3 else ((c[pk], mu0, sd0), None)
        except RuntimeError:
            a, mu, sd = c[pk], mu0, sd0
        mus.append(mu)
        sds.append(max(abs(sd), binw / 2))
        amps.append(max(a, 1.0))
    mus, sds, amps = map(np.asarray, (mus, sds, amps))
    weights = amps * sds
    order = np.argsort(mus)
    return mus[order], sds[order], (weights / weights.sum())[order]


def gmm_decision_thresholds(means, sigmas, weights, x: np.ndarray) -> np.ndarray:
    """Grey levels where the weighted posterior switches between consecutive classes.

    Searched on the grid ``x`` between consecutive means (so each class keeps a
    contiguous interval): the first grid value where the upper class's weighted
    density is at least the lower one's; falls back to the midpoint of the means
    if the posteriors never cross or no grid value lies between them.

    Parameters
    ----------
    means : array_like
        (k,) float component means, grey level, increasing.
    sigmas : array_like
        (k,) float component standard deviations, grey level.
    weights : array_like
        (k,) float component weights (relative; need not sum to 1).
    x : numpy.ndarray
        (m,) float grid of candidate grey levels (e.g. the histogram's bin centres).

    Returns
    -------
    numpy.ndarray
        (k - 1,) float64 thresholds, grey level; entry i separates components i and i + 1.
    """
    out = []
    for k in range(len(means) - 1):
        grid = x[(x > means[k]) & (x < means[k + 1])]
        if grid.size == 0:
            out.append(0.5 * (means[k] + means[k + 1]))
            continue
        a = weights[k] * _gauss(grid, means[k], sigmas[k])
        b = weights[k + 1] * _gauss(grid, means[k + 1], sigmas[k + 1])
        cross = np.nonzero(b >= a)[0]
        out.append(float(grid[cross[0]]) if cross.size else 0.5 * (means[k] + means[k + 1]))
    return np.asarray(out)


def _significant(counts: np.ndarray, logc: np.ndarray, peaks: np.ndarray, props: dict, significance: float
                 ) -> np.ndarray:
    """Which of ``peaks`` (of the smoothed log counts ``logc``) stand ``significance`` times their counting
    noise above their higher base; all where ``significance`` is 0."""
    if not len(peaks) or significance <= 0:
        return np.ones(len(peaks), bool)
    smooth = np.maximum(ndimage.gaussian_filter1d(counts, _PEAK_SMOOTHING_BINS), 1.0)
    left, right = props["left_bases"], props["right_bases"]
    base = np.where(logc[left] > logc[right], left, right)
    # var(log c) ~ 1/c for Poisson counts; the Gaussian smoothing keeps sum(w^2) = 1/(2 sqrt(pi) s) of it
    noise = np.sqrt((1 / smooth[peaks] + 1 / smooth[base]) / (2 * np.sqrt(np.pi) * _PEAK_SMOOTHING_BINS))
    return props["prominences"] >= significance * noise


def multiotsu_thresholds(hist: Histogram, n_classes: int) -> np.ndarray:
    """Multi-level Otsu thresholds on a precomputed histogram (scikit-image).

    Parameters
    ----------
    hist : Histogram
        The grey-level histogram.
    n_classes : int
        Number of classes.

    Returns
    -------
    numpy.ndarray
        (n_classes - 1,) thresholds, grey level (bin centres), increasing.

    Raises
    ------
    ValueError
        When ``n_classes`` < 2, or from :func:`skimage.filters.threshold_multiotsu` when fewer than
        ``n_classes`` bins are non-empty.
    """
    from skimage.filters import threshold_multiotsu

    if n_classes < 2:  # scikit-image crashes (not raises) on one class
        raise ValueError(f"multi-Otsu needs at least 2 classes, got {n_classes}")
    return np.asarray(threshold_multiotsu(hist=(hist.counts, hist.centers), classes=n_classes))


def fit_phase_model(hist: Histogram, method: str = "gmm", names: tuple[str, ...] = DEFAULT_ORDER) -> PhaseModel:
    """Thresholds between the phases ``names`` (ordered by grey level) from a histogram.

    Parameters
    ----------
    hist : Histogram
        The grey-level histogram of the volume.
    method : {"gmm", "multiotsu"}, default "gmm"
        ``"gmm"``: Gaussian mixture fitted on the peak cores (:func:`fit_peak_gaussians`),
        thresholds where consecutive weighted components are equal
        (:func:`gmm_decision_thresholds`). ``"multiotsu"``: multi-level Otsu thresholds; each
        class's mean, standard deviation and weight are then the moments and voxel share of the
        histogram between its thresholds.
    names : tuple of str, default DEFAULT_ORDER
        Phase names (keys of ``PHASE_CODES``) in order of increasing grey level; one class each.
        A subset of the five phases is allowed (e.g. slices through the particle layer hold no Al).

    Returns
    -------
    PhaseModel
        The thresholds and the class Gaussians.

    Raises
    ------
    ValueError
        For an unknown ``method``, or from scikit-image's multi-Otsu when the histogram has too
        few non-empty bins (:func:`multiotsu_thresholds`).
    """
    if method == "multiotsu":
        return model_from_thresholds(hist, multiotsu_thresholds(hist, len(names)), names, method)
    if method == "gmm":
        mu, sd, pi = fit_peak_gaussians(hist, len(names))
        thresholds = gmm_decision_thresholds(mu, sd, pi, hist.centers)
        return PhaseModel(tuple(names), thresholds, mu, sd, pi, method)
    raise ValueError(f"unknown thresholding method {method!r} (expected 'gmm' or 'multiotsu')")


def model_from_thresholds(hist: Histogram, thresholds, names: tuple[str, ...], method: str) -> PhaseModel:
    """A phase model with given thresholds; each class's Gaussian is the moments of its histogram part.

    Parameters
    ----------
    hist : Histogram
        The grey-level histogram.
    thresholds : array_like
        (n - 1,) increasing grey levels between the ``n`` phases of ``names``.
    names : tuple of str
        Phase names in order of increasing grey level.
    method : str
        Recorded as the model's ``method`` (e.g. ``"multiotsu"``, ``"manual"``).

    Returns
    -------
    PhaseModel
        ``means``, ``sigmas`` and ``weights`` are the mean, standard deviation and share of the
        histogram between each class's thresholds.
    """
    thresholds = np.asarray(thresholds, float)
    bounds = np.concatenate([[-np.inf], thresholds, [np.inf]])
    x, w = hist.centers, hist.counts.astype(float)
    means, sigmas, weights = [], [], []
    for k in range(len(names)):
        m = (x >= bounds[k]) & (x < bounds[k + 1])
        wk = max(w[m].sum(), 1.0)
        mu = (x[m] * w[m]).sum() / wk
        means.append(mu)
        sigmas.append(np.sqrt(((x[m] - mu) ** 2 * w[m]).sum() / wk))
        weights.append(wk)
    weights = np.asarray(weights) / np.sum(weights)
    return PhaseModel(tuple(names), thresholds, np.asarray(means), np.asarray(sigmas), weights, method)


def classify(volume: np.ndarray, model: PhaseModel) -> np.ndarray:
    """Phase code of each voxel by the model's thresholds.

    A value ``v`` gets ``names[i]`` where ``thresholds[i - 1] <= v < thresholds[i]``.

    Parameters
    ----------
    volume : array_like
        Grey levels, any shape ((z, y, x) volume, or e.g. the (n_bins,) histogram bin centres).
    model : PhaseModel
        The phase model.

    Returns
    -------
    numpy.ndarray
        uint8 phase codes, same shape as ``volume``.
    """
    # one comparison per threshold: faster than np.searchsorted for a handful of thresholds
    idx = np.zeros(np.shape(volume), np.uint8)
    for t in np.sort(model.thresholds):
        idx += volume >= t
    return model.codes[idx]


def remove_thin_collector(phases: np.ndarray, volume: np.ndarray, model: PhaseModel,
                          min_thickness_vox: int = 3) -> np.ndarray:
    """Reassign Al voxels that belong to structures thinner than ``min_thickness_vox``.

    Al lies between CBD and NMC in grey level, so the blurred edge between CBD
    (or void) and NMC passes through Al's range and leaves a one-voxel shell
    classified as Al around every particle. The collector is a thick slab, so
    an opening of the Al mask by the 6-neighbour cross, iterated
    ``r = max(1, min_thickness_vox // 2)`` times (voxels outside the array count
    as Al), removes the shells and keeps the collector: Al thinner than
    ``2 r + 1`` voxels along the axes goes, which for an even ``min_thickness_vox``
    includes structures of exactly that thickness. Al voxels on the array's faces
    are always kept. A removed voxel goes to the class before Al in ``model.names``
    if its grey level is below :func:`al_edge_cut`, else to the class after it. The result
    at a voxel depends on the voxels within ``2 r`` of it: stream with a halo of
    ``min_thickness_vox`` slices.

    Parameters
    ----------
    phases : numpy.ndarray
        (z, y, x) uint8 phase codes, as from :func:`classify`.
    volume : numpy.ndarray
        (z, y, x) grey levels, same shape.
    model : PhaseModel
        The phase model that gave ``phases``; nothing changes without an ``"al"`` class.
    min_thickness_vox : int, default 3
        Thinnest Al structure kept, voxels; 1 or less turns the clean-up off.

    Returns
    -------
    numpy.ndarray
        (z, y, x) uint8 phase codes: a new array, or ``phases`` itself when nothing changes.
    """
    if "al" not in model.names or min_thickness_vox <= 1:
        return phases
    al = phases == AL
    r = max(1, min_thickness_vox // 2)
    ball = ndimage.generate_binary_structure(3, 1)
    kept = ndimage.binary_opening(al, structure=ball, iterations=r, border_value=1)
    drop = al & ~kept
    if not drop.any():
        return phases
    k = model.names.index("al")
    below = model.codes[k - 1] if k > 0 else model.codes[k + 1]
    above = model.codes[k + 1] if k + 1 < len(model.names) else model.codes[k - 1]
    out = phases.copy()
    out[drop] = np.where(volume[drop] < al_edge_cut(model), below, above)
    return out


def al_edge_cut(model: PhaseModel) -> float:
    """Grey level that sends an Al-range voxel outside the collector to the class below or above Al.

    Such a voxel is the blurred edge between the classes either side of Al in grey level (CBD or
    electrolyte, and NMC). Across a blurred step each side's first voxel reads as far from its own
    level as the other's does from its level, so the two meet at the half height: the midpoint of the
    two classes' means. (Al's own mean, where it lies nearer one side, sends the edge voxels of that
    side to the other: with Al close to NMC, NMC surface voxels to CBD.) Where Al is the first or last
    class, its mean.

    Parameters
    ----------
    model : PhaseModel
        A phase model holding ``"al"``.

    Returns
    -------
    float
        The cut, grey level.
    """
    k = model.names.index("al")
    if k == 0 or k + 1 == len(model.names):
        return float(model.means[k])
    return float(0.5 * (model.means[k - 1] + model.means[k + 1]))


def confine_collector(phases: np.ndarray, volume: np.ndarray, model: PhaseModel,
                      top: int | np.ndarray | None, z_first: int = 0) -> np.ndarray:
    """Reassign Al voxels above the collector slab: the collector is a slab at z = 0, nothing else is Al.

    Blur puts the edge between CBD (or electrolyte) and NMC through Al's grey-level range; where the
    point-spread function is wide, those shells are thicker than :func:`remove_thin_collector` removes.
    An Al voxel at z >= ``top`` (of its column, for a tilted collector) goes to the class before Al in
    ``model.names`` if its grey level is below :func:`al_edge_cut`, else to the class after it.

    Parameters
    ----------
    phases : numpy.ndarray
        (z, y, x) uint8 phase codes.
    volume : numpy.ndarray
        (z, y, x) grey levels, same shape.
    model : PhaseModel
        The phase model; nothing changes without an ``"al"`` class.
    top : int, numpy.ndarray or None
        First slice above the collector (volume coordinates): one for every column, or (y, x) one per
        column (:func:`detachment.collector_surface.top_rows`); None changes nothing.
    z_first : int, default 0
        Volume z of ``phases[0]`` (a slab of a streamed volume).

    Returns
    -------
    numpy.ndarray
        (z, y, x) uint8 phase codes: a new array, or ``phases`` itself when nothing changes.
    """
    if top is None or "al" not in model.names:
        return phases
    z = np.arange(z_first, z_first + len(phases))[:, None, None]
    above = (phases == AL) & (z >= np.asarray(top)[None] if np.ndim(top) else z >= top)
    if not above.any():
        return phases
    k = model.names.index("al")
    below_code = model.codes[k - 1] if k > 0 else model.codes[k + 1]
    above_code = model.codes[k + 1] if k + 1 < len(model.names) else model.codes[k - 1]
    out = phases.copy()
    out[above] = np.where(volume[above] < al_edge_cut(model), below_code, above_code)
    return out


def fit_fwhm(counts: np.ndarray, edges: np.ndarray) -> tuple[float, float]:
    """Centre and FWHM of a Gaussian fitted to the core of a histogram.

    The fit uses the contiguous bins around the peak above a quarter of its
    height, so tails from partial-volume voxels or neighbouring phases do not
    widen it. FWHM = 2.3548 σ. Where the peak bin holds fewer than
    :data:`FIT_MIN_PEAK_COUNT` voxels, neighbouring bins are first merged in pairs
    (down to 64 bins) until it holds that many. With fewer than 3 core bins, the
    peak bin's centre and a width from the core's extent (at least one bin) are
    returned unfitted.

    Parameters
    ----------
    counts : array_like
        (n_bins,) voxel counts.
    edges : numpy.ndarray
        (n_bins + 1,) evenly spaced bin edges, grey level.

    Returns
    -------
    centre : float
        Mean of the fitted Gaussian, grey level; NaN for fewer than 20 counts.
    fwhm : float
        Its full width at half maximum, grey level; NaN for fewer than 20 counts.
    """
    from scipy.optimize import curve_fit

    counts = np.asarray(counts, dtype=float)
    if counts.sum() < 20:
        return float("nan"), float("nan")
    counts, edges = _merged_until_peak(counts, np.asarray(edges, dtype=float))
    x = 0.5 * (edges[1:] + edges[:-1])
    pk = int(np.argmax(counts))
    m = counts >= 0.25 * counts[pk]
    # keep the contiguous run of bins around the peak
    lo = pk - int(np.argmin(m[pk::-1])) + 1 if not m[: pk + 1].all() else 0
    hi = pk + int(np.argmin(m[pk:])) if not m[pk:].all() else len(m)
    xs, cs = x[lo:hi], counts[lo:hi]
    mu0 = float(x[pk])
    sd0 = max(float(edges[1] - edges[0]), (xs[-1] - xs[0]) / 3.3 if len(xs) > 1 else float(edges[1] - edges[0]))
    if len(xs) < 3:
        return mu0, sd0 * FWHM_PER_SIGMA
    try:
        (_, mu, sd), _ = curve_fit(lambda t, a, m_, s: a * np.exp(-0.5 * ((t - m_) / s) ** 2),
                                   xs, cs, p0=(counts[pk], mu0, sd0), maxfev=5000)
    except RuntimeError:
        mu, sd = mu0, sd0
    return float(mu), float(abs(sd) * FWHM_PER_SIGMA)


def fit_near_model(centre: float, model_mean: float, model_fwhm: float) -> bool:
    """Whether an interior fit's centre (:func:`fit_fwhm`) lies within one FWHM of the phase model's mean: a
    fit to a class of a few hundred interior voxels can land far off their grey levels (e.g. at another
    phase's), and is then not taken as the phase's level. NaN anywhere: False."""
    return bool(np.isfinite(centre) and abs(centre - model_mean) <= model_fwhm)


def _merged_until_peak(counts: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``counts`` and ``edges`` with bins merged in pairs until the peak bin holds :data:`FIT_MIN_PEAK_COUNT`
    or fewer than 128 bins are left (an odd last bin is paired with an empty one past the range)."""
    while counts.max() < FIT_MIN_PEAK_COUNT and len(counts) >= 128:
        if len(counts) % 2:
            counts, edges = np.append(counts, 0.0), np.append(edges, 2 * edges[-1] - edges[-2])
        counts, edges = counts.reshape(-1, 2).sum(axis=1), edges[::2]
    return counts, edges


def interior_histograms(volume: np.ndarray, phases: np.ndarray, edges: np.ndarray, erode: int = 1,
                        keep: np.ndarray | None = None) -> np.ndarray:
    """Per phase code (rows 0..4), histogram of the grey levels of its interior voxels.

    Interior = the phase's mask eroded by ``erode`` voxels (6-connectivity, voxels
    outside the array counting as set), so partial-volume edge voxels are left out.

    Parameters
    ----------
    volume : numpy.ndarray
        (z, y, x) grey levels.
    phases : numpy.ndarray
        (z, y, x) uint8 phase codes, same shape.
    edges : numpy.ndarray
        (n_bins + 1,) evenly spaced bin edges, grey level; values outside
        ``[edges[0], edges[-1]]`` are not counted.
    erode : int, default 1
        Erosion iterations, voxels; 0 counts every voxel of the phase.
    keep : numpy.ndarray, optional
        (z,) bool: count only the slices where True, while the erosion still sees
        all (for slab halos), so the counts of consecutive slabs sum to the whole
        volume's. Default: all slices.

    Returns
    -------
    numpy.ndarray
        (5, n_bins) int64 counts; row = phase code.
    """
    out = np.zeros((len(PHASE_NAMES), len(edges) - 1), np.int64)
    for code in PHASE_NAMES:
        mask = phases == code
        if erode > 0 and mask.any():
            mask = ndimage.binary_erosion(mask, iterations=erode, border_value=1)
        if keep is not None:
            mask[~np.asarray(keep)] = False
        if mask.any():
            # (bins, range) takes numpy's fast path for uniform bins
            out[code] = np.histogram(volume[mask], bins=len(edges) - 1, range=(edges[0], edges[-1]))[0]
    return out


def phase_fwhm(volume: np.ndarray, phases: np.ndarray, erode: int = 1, bins: int = 512) -> dict:
    """Per phase name: (centre, FWHM, interior voxel count) of its grey levels (Supp. Fig. 8).

    Parameters
    ----------
    volume : numpy.ndarray
        (z, y, x) grey levels.
    phases : numpy.ndarray
        (z, y, x) uint8 phase codes, same shape.
    erode : int, default 1
        Erosion of each phase's mask before counting, voxels (:func:`interior_histograms`).
    bins : int, default 512
        Bins of the interior histograms, evenly spaced over the volume's minimum to maximum.

    Returns
    -------
    dict
        Phase name -> ``(centre, fwhm, n_interior)`` for all five phases: centre and FWHM in grey
        level (:func:`fit_fwhm`; NaN under 20 interior voxels), ``n_interior`` an int voxel count.
    """
    edges = np.linspace(float(volume.min()), float(volume.max()), bins + 1)
    hists = interior_histograms(volume, phases, edges, erode)
    return {PHASE_NAMES[c]: (*fit_fwhm(hists[c], edges), int(hists[c].sum())) for c in PHASE_NAMES}


def denoise(volume: np.ndarray, method: str = "none", sigma: float = 1.0) -> np.ndarray:
    """Optional 3D denoising before classification.

    Parameters
    ----------
    volume : numpy.ndarray
        (z, y, x) grey levels.
    method : {"none", "gaussian", "median"}, default "none"
        ``"gaussian"``: Gaussian filter of σ = ``sigma`` (truncated at 4 σ); ``"median"``: median
        filter over a cube of side ``max(3, 2 round(sigma) + 1)``. Both extend the edges by the
        nearest voxel.
    sigma : float, default 1.0
        Gaussian σ, or median radius, voxels.

    Returns
    -------
    numpy.ndarray
        (z, y, x) denoised grey levels, same dtype; ``volume`` itself for ``"none"``.

    Raises
    ------
    ValueError
        For an unknown ``method``.
    """
    if method == "none":
        return volume
    if method == "gaussian":
        return ndimage.gaussian_filter(volume, sigma=sigma, mode="nearest")
    if method == "median":
        size = max(3, 2 * int(round(sigma)) + 1)
        return ndimage.median_filter(volume, size=size, mode="nearest")
    raise ValueError(f"unknown denoising method {method!r} (expected none, gaussian or median)")


def nmc_domain_means(volume: np.ndarray, phases: np.ndarray, sigma: float
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Interior-weighted local mean grey level of each NMC voxel, the domain scale's average.

    Normalised convolution ``G * (v w) / max(G * w, 1e-6)`` with a Gaussian of ``sigma`` voxels, the
    weights ``w`` 1.05 on interior NMC voxels (the NMC mask eroded by the 6-neighbour cross, voxels
    outside the array counted as NMC) and 0.05 on NMC surface voxels, 0 elsewhere: blur mixes a
    surface voxel with the electrolyte or CBD beside it, so it takes the density of the solid beneath.

    Parameters
    ----------
    volume : numpy.ndarray
        (z, y, x) grey levels.
    phases : numpy.ndarray
        (z, y, x) uint8 phase codes, same shape; NMC is ``NMC_LOW`` or ``NMC_HIGH``.
    sigma : float
        σ of the Gaussian, voxels (> 0).

    Returns
    -------
    nmc : numpy.ndarray
        (z, y, x) bool NMC voxels.
    interior : numpy.ndarray
        (z, y, x) bool interior NMC voxels.
    local : numpy.ndarray
        (n_nmc,) float local means at the NMC voxels, in C order of ``nmc``, grey level.
    """
    nmc = (phases == NMC_LOW) | (phases == NMC_HIGH)
    if not nmc.any():
        return nmc, nmc, np.zeros(0)
    interior = ndimage.binary_erosion(nmc, ndimage.generate_binary_structure(3, 1), border_value=1)
    w = interior.astype(np.float32) + 0.05 * nmc
    num = ndimage.gaussian_filter(volume * w, sigma, mode="nearest")
    den = ndimage.gaussian_filter(w, sigma, mode="nearest")
    return nmc, interior, num[nmc] / np.maximum(den[nmc], 1e-6)


def with_nmc_high(model: PhaseModel, threshold: float, mean: float, sigma: float, weight: float,
                  low_mean: float, low_sigma: float) -> PhaseModel:
    """``model`` with ``nmc_high`` put back right after ``nmc_low``, split from it at ``threshold``.

    Parameters
    ----------
    model : PhaseModel
        A model holding ``nmc_low`` but not ``nmc_high``.
    threshold : float
        The ``nmc_low`` / ``nmc_high`` threshold, grey level.
    mean, sigma, weight : float
        ``nmc_high``'s mean and standard deviation (grey level) and its share of ``nmc_low``'s weight
        (0-1): ``nmc_low`` keeps the rest.
    low_mean, low_sigma : float
        ``nmc_low``'s new mean and standard deviation, grey level.

    Returns
    -------
    PhaseModel
        A new model; the other classes are unchanged.

    Raises
    ------
    ValueError
        When ``model`` has no ``nmc_low``, already has ``nmc_high``, or ``threshold`` does not lie
        above ``nmc_low``'s lower threshold and below its upper one.
    """
    names = list(model.names)
    if "nmc_low" not in names or "nmc_high" in names:
        raise ValueError(f"with_nmc_high needs a model with nmc_low and without nmc_high, got {names}")
    k = names.index("nmc_low")
    lower = model.thresholds[k - 1] if k > 0 else -np.inf
    upper = model.thresholds[k] if k < len(model.thresholds) else np.inf
    if not lower < threshold < upper:
        raise ValueError(f"nmc_low/nmc_high threshold {threshold:.4g} outside nmc_low's range ({lower:.4g}, {upper:.4g})")
    w = np.asarray(model.weights, float)
    return PhaseModel(tuple(names[: k + 1] + ["nmc_high"] + names[k + 1:]),
                      np.insert(np.asarray(model.thresholds, float), k, threshold),
                      np.concatenate([model.means[:k], [low_mean, mean], model.means[k + 1:]]),
                      np.concatenate([model.sigmas[:k], [low_sigma, sigma], model.sigmas[k + 1:]]),
                      np.concatenate([w[:k], [w[k] * (1 - weight), w[k] * weight], w[k + 1:]]), model.method)


#: ``threshold.domain_sigma_vox: auto`` (:func:`nmc_domain_sigma`): the NMC spread-to-noise ratios τ at
#: which the domain σ leaves its least and reaches its most, and those σ (voxels).
AUTO_DOMAIN_TAU = (2.0, 3.0)
AUTO_DOMAIN_SIGMA = (0.5, 1.5)
#: σ (voxels) of the local means on which ``auto`` looks for two densities where the histogram shows one
#: NMC mode (:func:`detachment.phase_fit.split_nmc_domains`): its acceptance (Ashman's D, the smaller
#: share) was chosen on means of this σ; wider means pass it with splits that misread many NMC voxels.
AUTO_SPLIT_SIGMA = 0.7


def nmc_domain_sigma(model: PhaseModel, setting) -> float:
    """σ (voxels) of :func:`refine_nmc_domains` for a volume whose histogram gave ``model``.

    ``setting`` (``threshold.domain_sigma_vox``) itself where it is a number. For ``"auto"`` the σ grows
    with the NMC grey-level spread beyond the noise, ``τ = sqrt(s_nmc² - s_noise²) / s_noise`` (``s_nmc``
    the root mean square of the NMC classes' standard deviations, one class where the histogram does not
    resolve high from low density; ``s_noise`` the narrowest class's): from ``AUTO_DOMAIN_SIGMA[0]`` at
    ``τ <= AUTO_DOMAIN_TAU[0]`` to ``AUTO_DOMAIN_SIGMA[1]`` at ``τ >= AUTO_DOMAIN_TAU[1]``, linear between.
    Where NMC is hardly wider than the noise, a narrow window keeps the domains' edges; where its texture
    is wider (or the two densities are one histogram mode), the densities are told apart only on means
    over more voxels. Without an NMC class, ``AUTO_DOMAIN_SIGMA[0]``.
    """
    if not isinstance(setting, str):
        return float(setting)
    sd = dict(zip(model.names, np.asarray(model.sigmas, float)))
    nmc = [sd[n] for n in ("nmc_low", "nmc_high") if n in sd]
    noise = min(sd.values())
    if not nmc or not noise > 0:
        return AUTO_DOMAIN_SIGMA[0]
    tau = np.sqrt(max(float(np.mean(np.square(nmc))) - noise ** 2, 0.0)) / noise
    return float(np.interp(tau, AUTO_DOMAIN_TAU, AUTO_DOMAIN_SIGMA))


def refine_nmc_domains(volume: np.ndarray, phases: np.ndarray, model: PhaseModel, sigma: float = 1.0) -> np.ndarray:
    """Re-split NMC into low / high electron density from interior-weighted local means.

    Thresholding each voxel alone misreads the domains at every particle and
    crack surface: blur mixes the solid with the electrolyte or CBD beside it,
    so a high-density voxel on a surface looks low-density. Here each NMC
    voxel's grey level is replaced by a Gaussian-weighted mean (``sigma`` in
    voxels) over NMC voxels, with interior voxels (not on a surface: the NMC mask
    eroded by the 6-neighbour cross) weighted 1.05 and surface voxels 0.05
    (normalised convolution, ``G * (v w) / max(G * w, 1e-6)``), and that mean is
    compared with the ``nmc_low`` / ``nmc_high`` threshold. Surface voxels so take
    the density of the solid just beneath them, and noise is averaged out. The
    result at a voxel depends on the voxels within ``int(4 sigma + 0.5) + 1`` of it
    (the Gaussian is truncated at 4 σ): the halo a streamed slab needs.

    Parameters
    ----------
    volume : numpy.ndarray
        (z, y, x) grey levels.
    phases : numpy.ndarray
        (z, y, x) uint8 phase codes, same shape (after :func:`remove_thin_collector`).
    model : PhaseModel
        The phase model; nothing changes without both ``"nmc_low"`` and ``"nmc_high"``.
    sigma : float, default 1.0
        σ of the Gaussian weights, voxels; 0 or less turns the refinement off.

    Returns
    -------
    numpy.ndarray
        (z, y, x) uint8 phase codes: a new array, or ``phases`` itself when nothing changes.
    """
    if not {"nmc_low", "nmc_high"} <= set(model.names) or sigma <= 0:
        return phases
    k = model.names.index("nmc_low")
    thr = model.thresholds[k]
    nmc, _, local = nmc_domain_means(volume, phases, sigma)
    if not nmc.any():
        return phases
    out = phases.copy()
    out[nmc] = np.where(local >= thr, NMC_HIGH, NMC_LOW)
    return out
