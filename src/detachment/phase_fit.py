"""A phase model that uses what is known besides the histogram: the collector slab and the phase order.

The Al current collector is found as a slab at the collector side (z = 0), not as a grey-level class:
its grey level and width are measured on the slab's own slices (:func:`find_collector_slab`). The
phases darker and brighter than Al (by the configured order: electrolyte and CBD below, NMC low and
high density above) are then fitted on the histogram of the volume above the slab, each side with as
many Gaussian components as the data resolve (:func:`resolved_mixture`): NMC low and high density
that overlap become one NMC class, and are reported as not resolved rather than split by a guess.
Where the electrolyte above the electrode reaches the far face, its grey level is measured there
(:func:`find_electrolyte_layer`): the electrolyte class must be the darkest fitted class and takes the
layer's grey level and width (:func:`anchor_to_layer`).
Main entry point: :func:`fit_informed_model`; the method: docs/methods.md, "Phase thresholding".
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from .phases import (
    FWHM_PER_SIGMA,
    PEAK_SIGNIFICANCE,
    Histogram,
    PhaseModel,
    fit_peak_gaussians,
    gmm_decision_thresholds,
    histogram_peaks,
)

log = logging.getLogger(__name__)

#: Ashman's D below which two Gaussian components are not taken as two phases.
MIN_SEPARATION = 2.0
#: Smallest share (0-1) of a side's voxels a component must hold to be a phase.
MIN_COMPONENT_WEIGHT = 0.05
#: Fewest interior NMC voxels on whose domain means NMC low and high are looked for.
MIN_DOMAIN_VOXELS = 1000
#: Slices above the collector slab that still hold its blurred top (left out of the side fits; Al
#: may reach into them).
EDGE_SLICES = 2


class PhaseModelError(ValueError):
    """The data do not support the phase model: no collector slab, a phase not resolved, ..."""


@dataclass
class SliceLayer:
    """A run of uniform slices at one z face of a volume, and its grey level.

    Attributes
    ----------
    thickness : int
        Slices from the face in which the layer's grey level dominates (0 = no layer found).
    mean, sigma : float
        Grey level of the layer (median of its slices) and its spread (interquartile range / 1.349),
        grey level.
    reason : str
        Why no layer was found ("" when found).
    """

    thickness: int
    mean: float
    sigma: float
    reason: str = ""

    @property
    def found(self) -> bool:
        """Whether the layer was found."""
        return self.thickness > 0


@dataclass
class CollectorSlab(SliceLayer):
    """The Al collector as a slab of slices from z = 0 (:class:`SliceLayer`; its grey level measured on
    the slab's core slices)."""


def _quantiles(counts: np.ndarray, edges: np.ndarray, q) -> np.ndarray:
    """Quantiles ``q`` (0-1) of histogram rows ``counts`` (n, bins), interpolated in the bins; (n, len(q))."""
    c = np.atleast_2d(counts).astype(float)
    cum = np.cumsum(c, axis=1)
    cum = np.concatenate([np.zeros((len(c), 1)), cum], axis=1) / np.maximum(cum[:, -1:], 1)
    return np.stack([[np.interp(qq, row, edges) for qq in q] for row in cum])


#: Fewest uniform slices at the far face that make an electrolyte layer.
MIN_LAYER_SLICES = 3
#: Share (0-1) of a layer slice's voxels that must lie within 3 σ of the far face's grey level.
LAYER_PURITY = 0.9
#: Largest distance, in the layer's σ, between the layer's grey level and the electrolyte class fitted on
#: the histogram (drift along z moves the two apart by a fraction of σ).
LAYER_TOLERANCE_SIGMA = 1.5


@dataclass
class ElectrolyteLayer(SliceLayer):
    """The electrolyte above the electrode, as a layer of uniform slices at the far face (z = -1)
    (:class:`SliceLayer`)."""

    def describe(self) -> str:
        """One line for logs and file attributes."""
        if not self.found:
            return f"none ({self.reason})"
        return (f"{self.thickness} slices at the far face, grey level {self.mean:.4g} "
                f"(FWHM {self.sigma * FWHM_PER_SIGMA:.3g})")


def _first_slice(slice_counts: np.ndarray, edges: np.ndarray, max_iqr_fraction: float
                 ) -> tuple[float, float, str]:
    """Median and σ (interquartile range / 1.349, at least a bin) of slice 0 of ``slice_counts``, and why it
    is not uniform against the volume's 1-99 % grey-level span ("" when it is)."""
    binw = float(edges[1] - edges[0])
    span = np.diff(_quantiles(slice_counts.sum(0), edges, (0.01, 0.99))[0])[0]
    q = _quantiles(slice_counts[:1], edges, (0.25, 0.5, 0.75))[0]
    iqr0 = q[2] - q[0]
    reason = "" if iqr0 <= max_iqr_fraction * span else (
        f"interquartile range {iqr0:.3g} > {max_iqr_fraction} x the volume's grey-level span {span:.3g}")
    return float(q[1]), float(max(iqr0 / 1.349, binw)), reason


def _near_share(slice_counts: np.ndarray, edges: np.ndarray, centre: float, sigma: float) -> np.ndarray:
    """(z,) share of each slice's voxels within 3 ``sigma`` of ``centre``."""
    x = 0.5 * (edges[1:] + edges[:-1])
    near = np.abs(x - centre) <= 3 * sigma
    return slice_counts[:, near].sum(1) / np.maximum(slice_counts.sum(1), 1)


def _run_length(flags: np.ndarray) -> int:
    """Length of the run of True from index 0."""
    return len(flags) if flags.all() else int(np.argmin(flags))


def find_electrolyte_layer(slice_counts: np.ndarray, edges: np.ndarray, max_iqr_fraction: float = 0.15
                           ) -> ElectrolyteLayer:
    """The electrolyte above the electrode, measured on the uniform slices at the far face.

    The last slice must be uniform (as the collector's first, :func:`find_collector_slab`); the layer is
    the run of slices from the far face in which :data:`LAYER_PURITY` of the voxels lie within 3 σ of the
    last slice's median; it must span :data:`MIN_LAYER_SLICES` slices and be the darkest phase (below it
    at most 2 % of the voxels are darker by 4 σ; a CBD or NMC layer has electrolyte below it).

    Parameters
    ----------
    slice_counts : numpy.ndarray
        (z, bins) int voxel counts of each slice's grey levels, z = 0 at the collector.
    edges : numpy.ndarray
        (bins + 1,) float bin edges, grey level.
    max_iqr_fraction : float, default 0.15
        Largest interquartile range of a layer slice, as a fraction of the volume's span.

    Returns
    -------
    ElectrolyteLayer
        ``thickness`` 0 and a ``reason`` when there is no layer (an electrode up to the far face).
    """
    top = np.asarray(slice_counts)[::-1]
    med, sigma, reason = _first_slice(top, edges, max_iqr_fraction)
    if reason:
        return ElectrolyteLayer(0, np.nan, np.nan, f"the far slice is not uniform: {reason}")
    thickness = _run_length(_near_share(top, edges, med, sigma) > LAYER_PURITY)
    if thickness < MIN_LAYER_SLICES:
        return ElectrolyteLayer(0, np.nan, np.nan, f"{thickness} uniform slice(s) at the far face, fewer than "
                                                   f"{MIN_LAYER_SLICES}")
    if thickness == len(top):
        return ElectrolyteLayer(0, np.nan, np.nan, "every slice has the grey level of the far slice")
    x = 0.5 * (edges[1:] + edges[:-1])
    below = top[thickness:].sum(0)
    if below[x < med - 4 * sigma].sum() > 0.02 * below.sum():
        return ElectrolyteLayer(0, np.nan, np.nan, f"the layer at the far face (grey level {med:.3g}) is not the "
                                                   f"darkest phase of the volume")
    q = _quantiles(top[:thickness].sum(0), edges, (0.25, 0.5, 0.75))[0]
    sigma = max((q[2] - q[0]) / 1.349, float(edges[1] - edges[0]) / 2)
    return ElectrolyteLayer(thickness, float(q[1]), float(sigma))


def find_collector_slab(slice_counts: np.ndarray, edges: np.ndarray, max_iqr_fraction: float = 0.15
                        ) -> CollectorSlab:
    """The collector slab at z = 0 from per-slice grey-level histograms.

    Slice 0 must be uniform (interquartile range below ``max_iqr_fraction`` of the volume's 1-99 %
    grey-level span); the slab is the run of slices from z = 0 in which more than half the voxels lie
    within 3 σ of slice 0's median; and the slab must not be the darkest phase (at least 5 % of the
    voxels above it must be darker than it by 3 σ: the electrolyte).

    Parameters
    ----------
    slice_counts : numpy.ndarray
        (z, bins) int voxel counts of each slice's grey levels.
    edges : numpy.ndarray
        (bins + 1,) float bin edges, grey level.
    max_iqr_fraction : float, default 0.15
        Largest interquartile range of a collector slice, as a fraction of the volume's span.

    Returns
    -------
    CollectorSlab
        ``thickness`` 0 and a ``reason`` when no slab is found.
    """
    x = 0.5 * (edges[1:] + edges[:-1])
    binw = float(edges[1] - edges[0])
    med0, sigma0, reason = _first_slice(slice_counts, edges, max_iqr_fraction)
    if reason:
        return CollectorSlab(0, np.nan, np.nan, f"slice z = 0 is not uniform ({reason})")
    share = _near_share(slice_counts, edges, med0, sigma0)
    thickness = _run_length(share > 0.5)
    if thickness == len(share):
        return CollectorSlab(0, np.nan, np.nan, "every slice has the grey level of slice z = 0")
    rest = slice_counts[thickness:].sum(0)
    if rest[x < med0 - 3 * sigma0].sum() < 0.05 * rest.sum():
        return CollectorSlab(0, np.nan, np.nan, f"the slab at z = 0 (grey level {med0:.3g}) is the darkest "
                                                f"phase of the volume, not the collector")
    core = slice_counts[: max(1, thickness - 2)].sum(0)  # its last slices are blurred into the layer above
    cq = _quantiles(core, edges, (0.25, 0.5, 0.75))[0]
    return CollectorSlab(thickness, float(cq[1]), float(max((cq[2] - cq[0]) / 1.349, binw / 2)))


@dataclass
class Mixture:
    """Gaussian components of one side of the histogram (grey levels, increasing means).

    Attributes
    ----------
    means, sigmas, weights : numpy.ndarray
        (k,) float component means and standard deviations (grey level) and weights (voxels).
    tried : list of str
        Why each larger number of components was rejected.
    """

    means: np.ndarray
    sigmas: np.ndarray
    weights: np.ndarray
    tried: list = field(default_factory=list)


def _em(x: np.ndarray, w: np.ndarray, mu: np.ndarray, sd: np.ndarray, floor: float,
        iterations: int = 300) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """EM for a 1-D Gaussian mixture on weighted points (bin centres ``x``, counts ``w``).

    Returns means, sigmas, weights (voxels), sorted by mean, and the log-likelihood per voxel.
    """
    pi = np.full(len(mu), 1.0 / len(mu))
    for _ in range(iterations):
        dens = pi[:, None] * np.exp(-0.5 * ((x[None] - mu[:, None]) / sd[:, None]) ** 2) / sd[:, None]
        total = np.maximum(dens.sum(0, keepdims=True), 1e-300)
        r = dens / total * w[None]
        nk = np.maximum(r.sum(1), 1e-12)
        new_mu = (r * x[None]).sum(1) / nk
        sd = np.maximum(np.sqrt((r * (x[None] - new_mu[:, None]) ** 2).sum(1) / nk), floor)
        pi = nk / nk.sum()
        if np.allclose(new_mu, mu, atol=1e-7, rtol=0):
            mu = new_mu
            break
        mu = new_mu
    order = np.argsort(mu)
    loglik = float((w * np.log(total[0])).sum() / max(w.sum(), 1))
    return mu[order], sd[order], (pi * w.sum())[order], loglik


def resolved_mixture(hist: Histogram, k_max: int, by_separation: bool = True) -> Mixture:
    """As many Gaussian components (at most ``k_max``) as the histogram resolves.

    k components are resolved when the histogram shows k modes (:func:`detachment.phases.histogram_peaks`,
    each standing :data:`~detachment.phases.PEAK_SIGNIFICANCE` times above its counting noise) or when k Gaussians fitted by EM (started at the k-quantiles and at the k most prominent modes,
    keeping the likelier) are separated by Ashman's D >= :data:`MIN_SEPARATION` and each hold at least
    :data:`MIN_COMPONENT_WEIGHT` of the voxels (two phases overlapping into one skewed mode); the largest
    resolved k is kept (k = 1 always is). The partial-volume voxels between two modes widen EM's
    components, so a visible mode is enough.

    Parameters
    ----------
    hist : detachment.phases.Histogram
        The histogram (evenly spaced bins).
    k_max : int
        Most components wanted.
    by_separation : bool, default True
        Whether EM's separation alone may resolve more components than the histogram shows modes. False
        where a better test of the same split exists: one mode that EM explains as two (a skewed or cut
        side: partial-volume voxels on one flank, the collector's grey-level band cut off the other) can
        pass the separation with components narrower than the phases.

    Returns
    -------
    Mixture
        The kept components, and why larger k were rejected.
    """
    w, centers = hist.counts.astype(float), hist.centers
    floor = float(centers[1] - centers[0]) / 2
    cum = np.cumsum(w) / max(w.sum(), 1)
    best, tried = None, []
    n_modes = len(histogram_peaks(hist, k_max, fill=False, significance=PEAK_SIGNIFICANCE))
    for k in range(1, k_max + 1):
        sd0 = np.full(k, max(float(np.sqrt(np.cov(centers, aweights=np.maximum(w, 1e-12)))) / k, floor))
        starts = [np.interp((np.arange(k) + 0.5) / k, cum, centers)]
        modes = histogram_peaks(hist, k)
        if len(modes) == k:
            starts.append(centers[modes])
        mu, sd, pi, _ = max((_em(centers, w, start, sd0, floor) for start in starts), key=lambda f: f[3])
        d = np.sqrt(2) * np.diff(mu) / np.sqrt(sd[1:] ** 2 + sd[:-1] ** 2)
        share = pi / max(w.sum(), 1)
        if k == 1 or k <= n_modes or (by_separation and d.min() >= MIN_SEPARATION
                                      and share.min() >= MIN_COMPONENT_WEIGHT):
            best = Mixture(mu, sd, pi)
        else:
            tried.append(f"{k} components: separation D = {np.round(d, 2).tolist()}, "
                         f"shares {np.round(share, 3).tolist()}"
                         + ("" if by_separation else f", {n_modes} mode(s) shown (separation alone not taken)"))
    best.tried = tried
    return best


@dataclass
class InformedFit:
    """What :func:`fit_informed_model` found.

    Attributes
    ----------
    model : detachment.phases.PhaseModel
        Thresholds and class Gaussians of the phases the data resolve, in grey-level order.
    slab : CollectorSlab
        The collector slab the Al class was measured on.
    unresolved : tuple of str
        Phases of the configured order that the histogram does not separate from a neighbour (e.g.
        ``("nmc_high",)``: NMC low and high density form one class, coded ``nmc_low``).
    notes : list of str
        Why components were rejected, for the log.
    layer : ElectrolyteLayer or None
        The electrolyte layer at the far face the electrolyte class was measured on (``found`` False
        where the electrode reaches the far face).
    """

    model: PhaseModel
    slab: CollectorSlab
    unresolved: tuple
    notes: list
    layer: ElectrolyteLayer | None = None


def fit_informed_model(slice_counts: np.ndarray, edges: np.ndarray, order: tuple[str, ...],
                       margin: int = EDGE_SLICES) -> InformedFit:
    """Phase model from per-slice histograms: Al from the collector slab, the other phases by side.

    Parameters
    ----------
    slice_counts : numpy.ndarray
        (z, bins) int voxel counts of each slice's grey levels (z = 0 at the collector).
    edges : numpy.ndarray
        (bins + 1,) float bin edges, grey level, evenly spaced.
    order : tuple of str
        The five phase names by increasing grey level; the phases before ``"al"`` are fitted on the
        grey levels below the collector's, the ones after it above.
    margin : int, default EDGE_SLICES
        Slices above the slab left out of the side fits (the collector's blurred edge).

    Returns
    -------
    InformedFit
        The model (only resolved phases; an unresolved phase's voxels go to its resolved neighbour in
        the order, towards ``"al"``), the slab, the unresolved phases.

    Raises
    ------
    PhaseModelError
        When no collector slab is found, a side resolves no phase at all, or the electrolyte layer at
        the far face is not the darkest class (:func:`anchor_to_layer`).
    """
    slab = find_collector_slab(slice_counts, edges)
    if not slab.found:
        raise PhaseModelError(f"no Al collector slab at z = 0: {slab.reason}")
    layer = find_electrolyte_layer(slice_counts, edges)
    x = 0.5 * (edges[1:] + edges[:-1])
    rest = slice_counts[min(slab.thickness + margin, len(slice_counts) - 1):].sum(0)
    k_al = order.index("al")
    names, means, sigmas, weights, unresolved, notes = _fit_sides(rest, edges, slab, order, layer)
    # the collector's weight: its slab; the side weights are counts of the volume above the slab
    names.insert(len([n for n in names if order.index(n) < k_al]), "al")
    k = names.index("al")
    means.insert(k, slab.mean)
    sigmas.insert(k, slab.sigma)
    weights.insert(k, float(slice_counts[: slab.thickness].sum()))
    means, sigmas, weights = map(np.asarray, (means, sigmas, weights))
    weights = weights / weights.sum()
    thresholds = valley_thresholds(Histogram(slice_counts.sum(0), edges), means,
                                   gmm_decision_thresholds(means, sigmas, weights, x))
    thresholds = balanced_void_cbd(names, means, sigmas, thresholds)
    model = PhaseModel(tuple(names), thresholds, means, sigmas, weights, "informed")
    log.info("informed phase model: collector %d slices at %.4g (FWHM %.3g); electrolyte layer: %s; classes %s "
             "at %s; not resolved: %s", slab.thickness, slab.mean, slab.sigma * FWHM_PER_SIGMA, layer.describe(),
             names, np.round(means, 4), unresolved or "none")
    return InformedFit(model, slab, tuple(unresolved), notes, layer)


def _fit_sides(rest: np.ndarray, edges: np.ndarray, slab: CollectorSlab, order: tuple[str, ...],
               layer: ElectrolyteLayer) -> tuple[list, list, list, list, list, list]:
    """The resolved phases below and above the collector's grey level (:func:`fit_informed_model`): their
    names, means, sigmas, weights (voxels), the unresolved phases and the rejection notes."""
    x = 0.5 * (edges[1:] + edges[:-1])
    k_al = order.index("al")
    names, means, sigmas, weights, unresolved, notes = [], [], [], [], [], []
    for side_names, inside in [(order[:k_al], x < slab.mean - 3 * slab.sigma),
                               (order[k_al + 1:], x > slab.mean + 3 * slab.sigma)]:
        if side_names:
            mix = _side_mixture(rest, edges, inside, side_names, slab.mean)
            if side_names[0] == "void":
                mix = anchor_to_layer(mix, layer)
            kept = list(side_names[: len(mix.means)])  # an unresolved phase merges into its darker neighbour
            unresolved += [n for n in side_names if n not in kept]
            notes += [f"{'/'.join(side_names)}: {t}" for t in mix.tried]
            names += kept
            means, sigmas, weights = means + list(mix.means), sigmas + list(mix.sigmas), weights + list(mix.weights)
    return names, means, sigmas, weights, unresolved, notes


def anchor_to_layer(mix: Mixture, layer: ElectrolyteLayer) -> Mixture:
    """The dark side's components with the electrolyte measured on the far-face layer.

    The darkest component must be the layer's (within :data:`LAYER_TOLERANCE_SIGMA` of its σ); it takes
    the layer's grey level and σ (pure electrolyte, as the collector's slab gives Al). A brighter
    component that the layer's narrower Gaussian does not separate from the electrolyte (Ashman's D below
    :data:`MIN_SEPARATION`) is a shoulder of the electrolyte peak, not a phase, and is dropped.

    Parameters
    ----------
    mix : Mixture
        The components fitted below the collector's grey level, darkest first.
    layer : ElectrolyteLayer
        The far-face layer; where none was found, ``mix`` is returned unchanged.

    Returns
    -------
    Mixture

    Raises
    ------
    PhaseModelError
        When no component, or not the darkest, lies at the layer's grey level: the histogram model would
        label the electrolyte as another phase.
    """
    if not layer.found:
        return mix
    dist = np.abs(mix.means - layer.mean) / layer.sigma
    j = int(np.argmin(dist))
    if dist[j] > LAYER_TOLERANCE_SIGMA or j > 0:
        raise PhaseModelError(
            f"the electrolyte above the electrode ({layer.describe()}) is not the darkest class the histogram "
            f"model fitted (classes below the collector's grey level at {np.round(mix.means, 4).tolist()}): the "
            f"model would label electrolyte as another phase")
    means, sigmas = mix.means.copy(), mix.sigmas.copy()
    means[0], sigmas[0] = layer.mean, layer.sigma
    d = np.sqrt(2) * (means[1:] - layer.mean) / np.sqrt(sigmas[1:] ** 2 + layer.sigma ** 2)
    keep = np.concatenate([[True], d >= MIN_SEPARATION])
    tried = list(mix.tried) + [f"a component at {m:.4g} is a shoulder of the electrolyte measured at the far face "
                               f"(separation D {dd:.2f})" for m, dd in zip(means[1:][~keep[1:]], d[~keep[1:]])]
    weights = mix.weights.copy()
    for k in np.nonzero(~keep)[0]:  # a shoulder's voxels are electrolyte
        weights[0] += weights[k]
    return Mixture(means[keep], sigmas[keep], weights[keep], tried)



def _side_mixture(rest: np.ndarray, edges: np.ndarray, inside: np.ndarray, side_names, collector_grey: float
                  ) -> Mixture:
    """The resolved components of one side (below or above the collector's grey level) of ``rest``.

    NMC high density is taken from the voxels' histogram only where the side shows its mode: NMC low's
    flank towards the collector's band is cut at Al + 3 σ and filled with partial-volume voxels, and EM
    explains such a mode as two narrow components that pass the separation test. One mode is left to the
    test on the domain means (:func:`split_nmc_domains`), which reads interior voxels only."""
    if rest[inside].sum() == 0:
        raise PhaseModelError(f"no voxels on the side of the collector's grey level {collector_grey:.3g} "
                              f"where {list(side_names)} should be")
    idx = np.nonzero(inside)[0]
    side = Histogram(rest[inside], edges[idx[0]: idx[-1] + 2])
    return _peak_cores(resolved_mixture(side, len(side_names), by_separation="nmc_high" not in side_names), side)


def _peak_cores(mix: Mixture, side: Histogram) -> Mixture:
    """The resolved components refitted on their peak cores, where the side shows as many modes (each
    standing :data:`~detachment.phases.PEAK_SIGNIFICANCE` times above its counting noise, as
    :func:`resolved_mixture` counts them).

    EM spreads each component over the partial-volume voxels between phases; the peak cores
    (:func:`detachment.phases.fit_peak_gaussians`) describe the pure phases. A side that shows no mode
    at all (a phase whose peak lies inside the collector's grey-level band, so the side is its cut
    flank) keeps EM's component: its fullest bin is the cut, not a peak.
    """
    if len(histogram_peaks(side, len(mix.means), fill=False, significance=PEAK_SIGNIFICANCE)) == len(mix.means):
        mu, sd, pi = fit_peak_gaussians(side, len(mix.means))
        if len(mu) == len(mix.means):
            return Mixture(mu, sd, pi * side.counts.sum(), mix.tried)
    return mix


#: Largest expected bias of a face count from whole voxels of electrolyte and CBD misread at the valley
#: threshold (half the difference of the two tails beyond it) that keeps it (:func:`balanced_void_cbd`):
#: half the validation presets' bias goal.
MAX_TAIL_BIAS = 0.01


def balanced_void_cbd(names, means, sigmas, thresholds: np.ndarray) -> np.ndarray:
    """``thresholds`` with the electrolyte / CBD one moved to where the two classes' tails beyond it are equal,
    where they overlap.

    The valley of the histogram (or the crossing weighted by the classes' volumes) carries the volume
    fractions as a prior: electrolyte fills 60-80 % of a volume, so where its Gaussian and CBD's overlap
    the threshold sits deep in CBD's tail and reads the dark part of a textured CBD as electrolyte. At a
    particle's faces the two meet in about equal shares, and each voxel misread one way counts a face
    the wrong way. Where the tails beyond the threshold (``Φ((t − μ_cbd)/σ_cbd)`` of CBD,
    ``1 − Φ((t − μ_void)/σ_void)`` of the electrolyte) differ by more than ``2 · MAX_TAIL_BIAS``, the
    threshold becomes ``(μ_void σ_cbd + μ_cbd σ_void) / (σ_void + σ_cbd)``, where they are equal: as many
    electrolyte voxels read as CBD as the other way. Elsewhere (well-separated classes, where the
    valley's place decides only the voxels a surface cuts) it is kept.
    """
    from scipy.stats import norm

    names = list(names)
    if "void" not in names or "cbd" not in names or names.index("cbd") != names.index("void") + 1:
        return thresholds
    k = names.index("void")
    mv, mc, sv, sc = float(means[k]), float(means[k + 1]), float(sigmas[k]), float(sigmas[k + 1])
    t = float(thresholds[k])
    tail_bias = 0.5 * (norm.cdf((t - mc) / sc) - norm.sf((t - mv) / sv))
    if not abs(tail_bias) > MAX_TAIL_BIAS:
        return thresholds
    out = np.asarray(thresholds, float).copy()
    out[k] = (mv * sc + mc * sv) / (sv + sc)
    log.info("electrolyte / CBD overlap: at %.4g the tails would bias a face count by %+.3f; threshold at the "
             "equal tails, %.4g", t, tail_bias, out[k])
    return out


def valley_thresholds(hist: Histogram, means: np.ndarray, fallback: np.ndarray, smooth_bins: float = 1.5,
                      guard_bins: int = 2) -> np.ndarray:
    """Thresholds at the histogram's valleys between consecutive class means.

    The minimum of the log-count histogram (smoothed by a Gaussian of ``smooth_bins``) between two
    means; where it lies within ``guard_bins`` of either mean (no valley: the two classes overlap),
    the ``fallback`` threshold is kept. Blur and drift give each phase heavy tails that Gaussians
    fitted on the peak cores leave out; the valley follows the data.

    Parameters
    ----------
    hist : detachment.phases.Histogram
        The volume's grey-level histogram.
    means : numpy.ndarray
        (k,) increasing class means, grey level.
    fallback : numpy.ndarray
        (k - 1,) thresholds used where no valley is found, grey level.
    smooth_bins : float, default 1.5
        σ of the smoothing, bins.
    guard_bins : int, default 2
        A minimum this close to a mean is no valley, bins.

    Returns
    -------
    numpy.ndarray
        (k - 1,) float64 thresholds, grey level.
    """
    from scipy import ndimage

    x = hist.centers
    logc = ndimage.gaussian_filter1d(np.log1p(hist.counts.astype(float)), smooth_bins)
    out = np.asarray(fallback, float).copy()
    for k in range(len(means) - 1):
        idx = np.nonzero((x > means[k]) & (x < means[k + 1]))[0]
        if idx.size > 2 * guard_bins:
            j = int(np.argmin(logc[idx]))
            if guard_bins <= j < idx.size - guard_bins:
                out[k] = float(x[idx[j]])
    return out


@dataclass
class DomainSplit:
    """NMC low / high density told apart on the domain-averaged NMC grey levels (:func:`split_nmc_domains`).

    Attributes
    ----------
    histogram : detachment.phases.Histogram
        Histogram of the local means (:func:`detachment.phases.nmc_domain_means`) of the interior NMC
        voxels.
    mixture : Mixture
        The components that histogram resolves (one or two, increasing means; grey level).
    threshold : float
        Where the two components cross with equal weights, grey level; NaN when only one is resolved.
    """

    histogram: Histogram
    mixture: Mixture
    threshold: float

    @property
    def resolved(self) -> bool:
        """Whether two densities were resolved."""
        return len(self.mixture.means) == 2


def split_nmc_domains(hist: Histogram) -> DomainSplit:
    """Two NMC densities in the histogram of the domain-averaged NMC grey levels, if it resolves two.

    A voxel's grey level carries the texture and noise of that voxel; its domain's density is shared
    by its neighbours. Where the voxels' histogram shows one NMC peak, the local means over the domain
    scale can still show two. Two are taken only where the two components :func:`resolved_mixture`
    fits are separated by Ashman's D >= :data:`MIN_SEPARATION` and each holds at least
    :data:`MIN_COMPONENT_WEIGHT` of the voxels; two modes alone are not enough here (the histogram of
    the NMC voxels of a small volume is ragged enough to show a spurious one). The split lies where the
    two components cross with equal weights: each particle's high-density share is the measurement, and
    the majority class's weight as a prior would pull every ambiguous domain voxel to it (a share biased
    towards the majority, where the voxels' labels would be a little more often right).

    Parameters
    ----------
    hist : detachment.phases.Histogram
        Histogram of the interior NMC voxels' local means.

    Returns
    -------
    DomainSplit
        The components and the threshold (NaN with one component).
    """
    if hist.counts.sum() < MIN_DOMAIN_VOXELS:
        return DomainSplit(hist, Mixture(np.full(1, np.nan), np.full(1, np.nan), np.zeros(1),
                                         [f"{int(hist.counts.sum())} interior NMC voxels, fewer than {MIN_DOMAIN_VOXELS}"]),
                           float("nan"))
    mix = resolved_mixture(hist, 2)
    if len(mix.means) == 2:
        d = float(np.sqrt(2) * (mix.means[1] - mix.means[0]) / np.hypot(mix.sigmas[0], mix.sigmas[1]))
        share = float(mix.weights.min() / mix.weights.sum())
        if d >= MIN_SEPARATION and share >= MIN_COMPONENT_WEIGHT:
            thr = float(gmm_decision_thresholds(mix.means, mix.sigmas, np.ones(2), hist.centers)[0])
            return DomainSplit(hist, mix, thr)
        mix.tried.append(f"2 components: separation D = {d:.2f}, smaller share {share:.3f}")
    w, x = hist.counts.astype(float), hist.centers
    mean = float(np.average(x, weights=w)) if w.sum() else float("nan")
    sd = float(np.sqrt(np.average((x - mean) ** 2, weights=w))) if w.sum() else float("nan")
    return DomainSplit(hist, Mixture(np.array([mean]), np.array([sd]), np.array([w.sum()]), mix.tried), float("nan"))
