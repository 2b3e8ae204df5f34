"""The grey level that tells an electrolyte gap from CBD just outside a particle, fitted per volume.

On a reconstruction the voxel across a particle's surface face is mixed with the bright particle by the
point-spread function: a gap reads above the void grey level and CBD above the CBD level, both lifted by
about the same spill, so the volume-wide void/CBD threshold leaves part of the gaps on the CBD side.
Over all particles of a volume the grey levels of the background face neighbours are bimodal (gap,
CBD); two Gaussians fitted to them by EM cross at the contact level. Where they are not bimodal the
phase model's void/CBD midpoint is used instead.

The face neighbour's grey level also carries the spill of its other neighbours (the electrolyte beyond a
thin CBD coat darkens it; CBD beside a gap brightens it). Before the levels are read, the volume is
sharpened by one step of the inverse heat equation, ``grey - w * laplacian(grey)`` with ``w = σ² / 2``
of the width σ measured on every particle edge along the grid's axes (the phase map's attribute
``edge_width_vox``, :func:`edge_width_from_map`; :func:`sharpening_weight`, :func:`sharpen`): a Gaussian
blur of variance σ² adds ``σ² / 2`` times the Laplacian to first order. That width is read on lines within
the slices; where the forward model fitted σ along z apart from the slices' (:func:`map_z_factor`), the
second difference along z is weighed by the square of that factor, and the particles' spill is blurred by
it along z. Axes (z, y, x).

Main entry points: :func:`face_neighbour_levels`, :func:`fit_contact_level`, :class:`ContactLevel`,
:func:`sharpen`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy import ndimage

from .phases import CBD, VOID, gmm_decision_thresholds
from .plausibility import MAX_CHECKED_EDGE_WIDTH, MAX_GAP_WIDTH_RATIO, MIN_CONTACT_SEPARATION
from .surface import _pairs

MIN_WEIGHT = 0.02
MAX_FIT_VALUES = 200_000
READINGS = ("level", "deconvolved", "map")
#: largest width of a step along the grid (σ, voxels; :func:`edge_width_from_map`) the sharpening weight
#: follows, the widest the coated-ball checks of the reading cover; beyond it the weight stays at this σ's,
#: as the Laplacian amplifies the noise by about 1 + 6 w, and the reading goes on with a warning
#: (:func:`detachment.plausibility.warn_wide_edges`). (A width, not the point spread the blur check bounds:
#: slanted surfaces widen it.)
MAX_SHARPEN_SIGMA = MAX_CHECKED_EDGE_WIDTH
#: Voxels (a cube's half side) of nothing but electrolyte around an open-electrolyte voxel
#: (:func:`open_electrolyte`): the spill of a neighbouring phase has faded there (below 3 % of its contrast
#: at a point-spread σ of 1.6 voxels)
OPEN_ELECTROLYTE_VOX = 3

#: Values of config ``science.contact_partial_volume`` (:func:`reading_settings`)
PARTIAL_VOLUME_MODES = ("auto", "always", "never")


@dataclass
class ContactLevel:
    """A fitted (or fallback) contact level and the two components it came from.

    Attributes
    ----------
    level : float
        The contact level, grey level: a face neighbour darker than this reads as electrolyte. NaN only
        when not fitted and there was nothing to fall back on.
    fitted : bool
        True when the two-Gaussian fit was used, False for the fallback (void/CBD midpoint).
    gap_mean, gap_sigma : float
        Mean and standard deviation of the darker (gap) component, grey levels, also where they were too
        close to the other for a level; NaN where no components were estimated (too few faces).
    gap_weight : float
        Its share of the faces, 0-1.
    cbd_mean, cbd_sigma, cbd_weight : float
        The same for the brighter (CBD) component.
    outlier_weight : float
        Share of the faces (0-1) the fit's uniform outlier component took (far from both Gaussians).
    n_faces : int
        Number of finite face-neighbour grey levels available.
    reading : str
        How the faces are read downstream: ``"level"`` (each face neighbour against ``level``),
        ``"deconvolved"`` (outside + inside − the particle's solid grey level against ``level``, then
        the void/CBD midpoint; :func:`choose_reading`) or ``"map"`` (the face neighbour's code in the phase
        map, refined against the blurred forward model; :func:`read_on_map`).
    gap_share, gap_share_deconvolved, gap_share_map : float
        Share (0-1) of the background faces read as electrolyte by the level, by the deconvolved reading
        and by the phase map; NaN where not computed.
    spread : float
        How much the reading used and an independent one disagree, a share of the faces; the uncertainty of
        the contact reading: ``gap_share - gap_share_deconvolved`` for the level's and the deconvolved
        reading, ``gap_share_map - gap_share`` for the map's.
    sharpen : float
        Weight ``w`` (voxels²) of the Laplacian subtracted from the grey levels before the level's
        reading (:func:`sharpen`); 0 = read as reconstructed. The deconvolved reading is never sharpened.
    spill_sigma : float
        Point-spread σ (voxels) through which the particles' own grey level was subtracted from the grey
        levels before the level's reading (:func:`detachment.particles.particle_spill`); 0 = not.
    ambiguous_faces : float
        Share (0-1) of the faces the components cannot place (:func:`ambiguous_face_share`), also where
        they overlap too much for a level (not ``fitted``): there nearly every face is undecided; NaN
        where no components were estimated.
    electrolyte_sigma : float
        Spread (robust σ, grey levels) of the same grey levels in the open electrolyte
        (:func:`open_electrolyte`): what a gap face's level would spread by with nothing but noise across
        it; NaN where not measured. ``gap_sigma`` over it is :attr:`gap_width_ratio`.
    gap_share_through_layer : float
        Share (0-1) of the background faces read as electrolyte only through a CBD layer one or two voxels
        thick that the phase map codes between the particle and background electrolyte, as the faces around
        them read (:attr:`partial_volume`; :func:`detachment.surface.surface_contacts`). A coat that thin
        looks the same, so it is how far that reading could be off; NaN where not computed.
    """

    level: float
    fitted: bool
    gap_mean: float = float("nan")
    gap_sigma: float = float("nan")
    gap_weight: float = float("nan")
    cbd_mean: float = float("nan")
    cbd_sigma: float = float("nan")
    cbd_weight: float = float("nan")
    outlier_weight: float = float("nan")
    n_faces: int = 0
    reading: str = "level"
    gap_share: float = float("nan")
    gap_share_deconvolved: float = float("nan")
    gap_share_map: float = float("nan")
    spread: float = float("nan")
    sharpen: float = 0.0
    spill_sigma: float = 0.0
    ambiguous_faces: float = float("nan")
    electrolyte_sigma: float = float("nan")
    gap_share_through_layer: float = float("nan")

    @property
    def has_components(self) -> bool:
        """Whether gap and CBD components were estimated (finite means, positive σs and weights), whether or
        not the level was fitted on them: components too close for a level still say how undecided each
        face is (:func:`gap_posterior`)."""
        sigmas, weights = (self.gap_sigma, self.cbd_sigma), (self.gap_weight, self.cbd_weight)
        return bool(np.isfinite([self.gap_mean, self.cbd_mean, *sigmas, *weights]).all()
                    and min(sigmas) > 0 and min(weights) > 0)

    @property
    def gap_width_ratio(self) -> float:
        """``gap_sigma / electrolyte_sigma``: how much wider the gap faces' grey levels spread than the
        electrolyte's own noise (about 1 where the voxels across the faces are electrolyte only; well
        above where they hold part of the particle or of CBD: surfaces that cut voxels, or blur); NaN
        where either is not known."""
        if not (np.isfinite(self.gap_sigma) and np.isfinite(self.electrolyte_sigma) and self.electrolyte_sigma > 0):
            return float("nan")
        return float(self.gap_sigma / self.electrolyte_sigma)

    @property
    def partial_volume(self) -> bool:
        """Whether the voxels across the faces hold mixtures: :attr:`gap_width_ratio` beyond
        :data:`detachment.plausibility.MAX_GAP_WIDTH_RATIO`. A face neighbour part particle and part
        electrolyte then reads in CBD's range, so the contacts are read through a thin CBD layer
        (:func:`detachment.surface.surface_contacts` ``partial_volume``). False where the ratio is not known."""
        ratio = self.gap_width_ratio
        return bool(np.isfinite(ratio) and ratio > MAX_GAP_WIDTH_RATIO)

    @property
    def separation(self) -> float:
        """Ashman's D of the gap and CBD components, ``sqrt(2) |cbd_mean - gap_mean| / sqrt(gap_sigma² +
        cbd_sigma²)``, whether or not the level was fitted; NaN where no components were fitted (too few
        faces, or no grey levels). Below :data:`detachment.plausibility.MIN_CONTACT_SEPARATION` the face
        neighbours' grey levels do not show gap and CBD as two classes."""
        return float(np.sqrt(2) * abs(self.cbd_mean - self.gap_mean) / np.hypot(self.gap_sigma, self.cbd_sigma))

    def to_frame(self) -> pd.DataFrame:
        """The fields as a one-row table (``contact_level.csv``), with :attr:`gap_width_ratio`,
        :attr:`partial_volume` and :attr:`separation`.

        Returns
        -------
        pandas.DataFrame
            One row, one column per field, ``gap_width_ratio``, ``partial_volume`` and ``separation``.
        """
        return pd.DataFrame([{**asdict(self), "gap_width_ratio": self.gap_width_ratio,
                              "partial_volume": self.partial_volume, "separation": self.separation}])

    @classmethod
    def read_csv(cls, path) -> ContactLevel:
        """Read a one-row table written by :meth:`to_frame`.

        The level may be NaN only where it was not fitted (no grey levels to fall back on: phases only).
        Columns other than the fields are ignored; missing component columns take their defaults.

        Parameters
        ----------
        path : str or os.PathLike
            The CSV file.

        Returns
        -------
        ContactLevel
            The level and its components.

        Raises
        ------
        ValueError
            Naming the file, when it is not one row with ``level`` and ``fitted``, ``fitted`` is not a
            boolean, or a fitted level is not finite.
        """
        t = pd.read_csv(path)
        missing = sorted({"level", "fitted"} - set(t.columns))
        if len(t) != 1 or missing:
            raise ValueError(f"{path}: expected one row with columns 'level' and 'fitted' (missing {missing}, "
                             f"{len(t)} rows)")
        if t.fitted.iloc[0] not in (True, False) or \
                not (np.isfinite(float(t.level.iloc[0])) or not bool(t.fitted.iloc[0])):
            raise ValueError(f"{path}: 'fitted' must be True or False and a fitted 'level' finite")
        row = t.iloc[0].to_dict()
        names = set(cls.__dataclass_fields__)
        row = {k: v for k, v in row.items() if k in names}
        row["fitted"] = bool(row["fitted"])
        row["n_faces"] = int(row.get("n_faces", 0))
        if row.get("reading", "level") not in READINGS:
            raise ValueError(f"{path}: 'reading' must be one of {READINGS}, not {row['reading']!r}")
        for key in ("sharpen", "spill_sigma"):  # absent from files written before the reading used them
            row[key] = float(row.get(key, 0.0))
            if not (np.isfinite(row[key]) and row[key] >= 0):
                raise ValueError(f"{path}: {key!r} must be finite and >= 0, not {row[key]!r}")
        row["electrolyte_sigma"] = float(row.get("electrolyte_sigma", np.nan))
        if row["electrolyte_sigma"] <= 0 or np.isinf(row["electrolyte_sigma"]):
            raise ValueError(f"{path}: 'electrolyte_sigma' must be > 0 and finite, or NaN, not "
                             f"{row['electrolyte_sigma']!r}")
        return cls(**row)


def open_electrolyte(phases: np.ndarray, margin: int = OPEN_ELECTROLYTE_VOX) -> np.ndarray:
    """(z, y, x) bool: electrolyte voxels with electrolyte only within ``margin`` voxels along every axis
    (a cube; the array's border counts as another phase, as nothing is known beyond it).

    Parameters
    ----------
    phases : numpy.ndarray
        (z, y, x) uint8 phase codes (:mod:`detachment.phases`).
    margin : int, default :data:`OPEN_ELECTROLYTE_VOX`
        Half side of the cube, voxels.

    Returns
    -------
    numpy.ndarray
        (z, y, x) bool.
    """
    return ndimage.binary_erosion(np.asarray(phases) == VOID, np.ones((3, 3, 3), bool), iterations=int(margin),
                                  border_value=0)


def electrolyte_spread(volume_path, phases_path, sharpen_weight: float = 0.0, margin: int = OPEN_ELECTROLYTE_VOX,
                       slab: int = 32, min_voxels: int = 200) -> float:
    """Spread of a volume's grey levels in its open electrolyte, sharpened as the contacts are read.

    :func:`robust_sigma` of :func:`sharpen` (weight ``sharpen_weight``) of the grey levels at
    :func:`open_electrolyte` voxels, on every :data:`detachment.blur.SLICE_STEP`-th slice and every
    second row and column (enough voxels for a σ, a bounded share of a large volume); read slab by slab.
    The particles' spill, which the contacts' grey levels are corrected for, is left in: it has faded
    there. This is the noise a gap face's grey level would spread by with electrolyte alone across it.

    Parameters
    ----------
    volume_path, phases_path : str or os.PathLike
        HDF5 files of the volume (``/volume``) and its phase map (``/phases``, same shape).
    sharpen_weight : float, default 0
        Weight of the Laplacian subtracted (voxels², :func:`sharpening_weight`).
    margin, slab : int, default :data:`OPEN_ELECTROLYTE_VOX`, 32
        As :func:`open_electrolyte`; slices per slab read.
    min_voxels : int, default 200
        Fewest open-electrolyte voxels to measure on.

    Returns
    -------
    float
        σ, grey levels; NaN with fewer than ``min_voxels`` voxels.
    """
    import h5py

    from . import io
    from .blur import SLICE_STEP
    from .shading import FIELD_DATASET, field_on

    halo = int(margin) + 1
    values = []
    with h5py.File(phases_path, "r") as f:
        dp = f["phases"]
        shade = (f[FIELD_DATASET][...], int(f[FIELD_DATASET].attrs["block_vox"])) if FIELD_DATASET in f else None
        for z0, z1, grey in io.iter_volume_slabs(volume_path, slab, halo):
            a = max(0, z0 - halo)
            if shade is not None:  # as the phases were read (detachment.shading)
                grey = grey - field_on(shade[0], shade[1], [(a, a + len(grey)), (0, grey.shape[1]),
                                                            (0, grey.shape[2])], dp.shape)
            inner = slice(z0 - a, z1 - a)
            keep = (np.arange(z0, z1) % SLICE_STEP) == 0
            if not keep.any():
                continue
            ph = dp[a:a + len(grey)]
            wanted = open_electrolyte(ph, margin)[inner][keep][:, ::2, ::2]
            values.append(sharpen(grey, sharpen_weight, map_z_factor(dp.attrs))[inner][keep][:, ::2, ::2][wanted])
    x = np.concatenate(values) if values else np.zeros(0)
    return robust_sigma(x) if x.size >= min_voxels else float("nan")


def robust_sigma(values) -> float:
    """1.4826 × the median absolute deviation of the finite ``values`` (the σ of a Gaussian, unmoved by a
    few outliers); NaN for fewer than two."""
    x = np.asarray(values, np.float64)
    x = x[np.isfinite(x)]
    if x.size < 2:
        return float("nan")
    return float(1.4826 * np.median(np.abs(x - np.median(x))))


def sharpening_weight(sigma_vox: float | None, max_sigma: float = MAX_SHARPEN_SIGMA) -> float:
    """Weight of the Laplacian that undoes a Gaussian point-spread function of σ ``sigma_vox`` to first order.

    A Gaussian blur of variance σ² is the heat equation run for a time σ² / 2, so
    ``blurred ≈ sharp + σ² / 2 · laplacian(sharp)``.

    Parameters
    ----------
    sigma_vox : float or None
        Measured σ of a step along the grid, voxels (:func:`edge_width_from_map`); None or NaN: unknown.
    max_sigma : float, default :data:`MAX_SHARPEN_SIGMA`
        σ beyond which the weight stays at ``max_sigma² / 2``.

    Returns
    -------
    float
        ``min(σ, max_sigma)² / 2``, voxels²; 0 where σ is unknown.
    """
    if sigma_vox is None or not np.isfinite(sigma_vox) or sigma_vox <= 0:
        return 0.0
    return float(min(sigma_vox, max_sigma) ** 2 / 2)


def blur_sigma_from_qc(path) -> float:
    """The point-spread σ a phase map's checks measured (``phase_qc.csv``, check ``blur_sigma_vox``).

    Parameters
    ----------
    path : str or os.PathLike
        The sample's ``phase_qc.csv`` (:func:`detachment.plausibility.check_phase_map`).

    Returns
    -------
    float
        σ, voxels; NaN where the table has no such row (too few particle edges to measure it).

    Raises
    ------
    ValueError
        Naming the file, when it lacks the columns ``check`` and ``value``.
    """
    t = pd.read_csv(path)
    if not {"check", "value"} <= set(t.columns):
        raise ValueError(f"{path}: expected the columns 'check' and 'value' of a phase_qc.csv")
    row = t[t.check == "blur_sigma_vox"]
    return float(row.value.iloc[0]) if len(row) else float("nan")


def edge_width_from_map(phases_path, qc_path) -> float:
    """How wide a step looks along the grid, voxels: the phase map's attribute ``edge_width_vox``
    (:func:`detachment.threshold.measured_blur`), what sharpening and the spill undo.

    A map written before the point spread and the edges' width were told apart lacks it; the point
    spread of ``qc_path`` (:func:`blur_sigma_from_qc`), which such a map's checks measured on every edge,
    is taken instead.
    """
    import h5py

    with h5py.File(phases_path, "r") as f:
        value = f["phases"].attrs.get("edge_width_vox")
    return float(value) if value is not None else blur_sigma_from_qc(qc_path)


def sharpen(grey: np.ndarray, weight: float, z_factor: float = 1.0) -> np.ndarray:
    """``grey - weight * laplacian(grey)``: one step of the inverse heat equation.

    The Laplacian is the six-neighbour one (:func:`scipy.ndimage.laplace`), the array's border repeated
    (``mode="nearest"``): on a crop, values one voxel in from a cut face are exact only where the crop
    was read with a voxel of context (:func:`detachment.particles.particle_table_from_files` does). Under a
    point spread ``z_factor`` times as wide along z, the second difference along z is weighed by
    ``z_factor²`` (a Gaussian of σ along z is the heat equation run ``z_factor²`` times as long there), at
    most to :data:`MAX_SHARPEN_SIGMA`'s weight.

    Parameters
    ----------
    grey : numpy.ndarray
        (z, y, x) grey levels.
    weight : float
        Voxels² (:func:`sharpening_weight`); 0 returns ``grey`` as float64.
    z_factor : float, default 1
        σ along z over σ within the slices (:func:`map_z_factor`).

    Returns
    -------
    numpy.ndarray
        (z, y, x) float64 sharpened grey levels.
    """
    grey = np.asarray(grey, np.float64)
    if not weight > 0:
        return grey
    if z_factor == 1:
        return grey - weight * ndimage.laplace(grey, mode="nearest")
    step = np.array([1.0, -2.0, 1.0])
    weights = (min(weight * z_factor ** 2, MAX_SHARPEN_SIGMA ** 2 / 2), weight, weight)
    return grey - sum(w * ndimage.correlate1d(grey, step, axis=ax, mode="nearest") for ax, w in enumerate(weights))


def map_z_factor(attrs) -> float:
    """The point spread's σ along z over σ within the slices that a phase map was refined with (its attribute
    ``psf_refine_z_factor``, :func:`detachment.threshold.threshold_volume`); 1 where the map has none or it is
    not a number > 0 (an unrefined map, or one written before the attribute)."""
    value = float(attrs.get("psf_refine_z_factor", 1.0))
    return value if np.isfinite(value) and value > 0 else 1.0


def face_neighbour_pairs(envelope: np.ndarray, others: np.ndarray, phases: np.ndarray, intensity: np.ndarray
                         ) -> tuple[np.ndarray, np.ndarray]:
    """Grey levels on both sides of each face between a particle's envelope and the background.

    A face counts when its outer voxel is outside ``envelope``, not in ``others`` and void or CBD in
    ``phases``; faces on the array border are left out.

    Parameters
    ----------
    envelope : numpy.ndarray
        (z, y, x) bool envelope of one particle (a crop).
    others : numpy.ndarray
        (z, y, x) bool voxels of the other particles.
    phases : numpy.ndarray
        (z, y, x) uint8 phase codes (:mod:`detachment.phases`).
    intensity : numpy.ndarray
        (z, y, x) grey levels.

    Returns
    -------
    outside, inside : numpy.ndarray
        (n_faces,) float64 grey levels of the background voxel and of the envelope voxel of each face (a
        voxel beside several faces appears once per face).
    """
    background = ~envelope & ~others & ((phases == VOID) | (phases == CBD))
    outside, inside = [], []
    for axis in range(3):
        a, b = _pairs(envelope.shape, axis)  # each voxel and its +1 neighbour along the axis
        up, down = envelope[a] & background[b], envelope[b] & background[a]
        outside += [intensity[b][up], intensity[a][down]]
        inside += [intensity[a][up], intensity[b][down]]
    return np.concatenate(outside).astype(np.float64), np.concatenate(inside).astype(np.float64)


def face_neighbour_levels(envelope: np.ndarray, others: np.ndarray, phases: np.ndarray,
                          intensity: np.ndarray, solid_level: float | None = None) -> np.ndarray:
    """Grey levels of the background voxels across the faces of a particle's envelope.

    Parameters
    ----------
    envelope, others, phases, intensity : numpy.ndarray
        As :func:`face_neighbour_pairs`.
    solid_level : float, optional
        The particle's solid grey level: each value is then outside + inside − ``solid_level``, the
        background with the spill of a symmetric point-spread function removed.

    Returns
    -------
    numpy.ndarray
        (n_faces,) float64 grey levels, one per face (:func:`face_neighbour_pairs`' order).
    """
    outside, inside = face_neighbour_pairs(envelope, others, phases, intensity)
    return outside if solid_level is None else outside + inside - solid_level


def _two_gaussians_em(x: np.ndarray, iterations: int = 200, tol: float = 1e-7):
    """Means, sigmas and weights (ascending means) of two 1D Gaussians, and the weight of a uniform outlier
    component over the values' range, fitted together by EM.

    Fitted on every value, not on the histogram's peak cores as the phase model is: here the tails are the
    signal (gaps at a patch's edge read half way). The uniform component takes the few values far from
    both modes (a face neighbour beside a bright edge, overshot by the sharpening), which would otherwise
    widen one Gaussian until its crossing with the other moves.
    """
    lo, hi = float(x.min()), float(x.max())
    uniform = 1.0 / max(hi - lo, 1e-12)
    mu = np.percentile(x, [20.0, 80.0])
    sd = np.full(2, max(x.std() / 2, 1e-6))
    w, w_out = np.array([0.49, 0.49]), 0.02
    prev = -np.inf
    for _ in range(iterations):
        dens = w / (sd * np.sqrt(2 * np.pi)) * np.exp(-0.5 * ((x[:, None] - mu) / sd) ** 2)
        out = w_out * uniform
        total = dens.sum(1, keepdims=True) + out + 1e-300
        resp = dens / total
        n = resp.sum(0) + 1e-12
        w = n / len(x)
        w_out = max(1.0 - w.sum(), 0.0)
        mu = (resp * x[:, None]).sum(0) / n
        sd = np.maximum(np.sqrt((resp * (x[:, None] - mu) ** 2).sum(0) / n), 1e-6)
        ll = float(np.log(total).sum())
        if ll - prev < tol * abs(ll):
            break
        prev = ll
    order = np.argsort(mu)
    return mu[order], sd[order], w[order], w_out


#: posterior probability of a gap between which a face's reading is ambiguous (:func:`ambiguous_face_share`)
AMBIGUOUS_POSTERIOR = (0.1, 0.9)


def gap_posterior(values, fit: ContactLevel) -> np.ndarray:
    """Probability that each face-neighbour grey level belongs to the fitted gap component, not the CBD one.

    Parameters
    ----------
    values : array_like
        Grey levels (as fitted: corrected).
    fit : ContactLevel
        Its two Gaussian components and weights (the outlier component is left out), whether or not the
        level was fitted on them (:attr:`ContactLevel.has_components`).

    Returns
    -------
    numpy.ndarray
        Probabilities 0-1, one per value; NaN everywhere where ``fit`` has no components.
    """
    from scipy.stats import norm

    v = np.asarray(values, float)
    if not fit.has_components:
        return np.full(v.shape, np.nan)
    log_gap = np.log(fit.gap_weight) + norm.logpdf(v, fit.gap_mean, fit.gap_sigma)
    log_cbd = np.log(fit.cbd_weight) + norm.logpdf(v, fit.cbd_mean, fit.cbd_sigma)
    return 1.0 / (1.0 + np.exp(np.clip(log_cbd - log_gap, -700, 700)))


def ambiguous_faces(values, fit: ContactLevel, band: tuple[float, float] = AMBIGUOUS_POSTERIOR) -> np.ndarray:
    """(n,) bool: the faces whose gap probability (:func:`gap_posterior`) lies strictly inside ``band``
    (``values`` as fitted, non-finite ones never ambiguous)."""
    v = np.asarray(values, float)
    post = gap_posterior(v, fit)
    return np.isfinite(v) & (post > band[0]) & (post < band[1])


def ambiguous_face_share(values, fit: ContactLevel, band: tuple[float, float] = AMBIGUOUS_POSTERIOR) -> float:
    """Share of the faces whose gap probability (:func:`gap_posterior`) lies inside ``band``.

    Those faces are read by the level, but the grey levels hardly favour one side: the overlap of gap and
    CBD that a per-face reading cannot resolve (each is as likely misread as not, on average).

    Parameters
    ----------
    values : array_like
        Face-neighbour grey levels the level was fitted on.
    fit : ContactLevel
        The level and its components (:func:`gap_posterior`; components too close for a level leave nearly
        every face undecided).
    band : (float, float), default :data:`AMBIGUOUS_POSTERIOR`
        Gap probabilities between which a face is ambiguous.

    Returns
    -------
    float
        Share 0-1 of the finite values; NaN where no components were estimated or no value is finite.
    """
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if not fit.has_components or v.size == 0:
        return float("nan")
    return float(np.mean(ambiguous_faces(v, fit, band)))


def fit_contact_level(values, fallback: float, min_faces: int = 200) -> ContactLevel:
    """:class:`ContactLevel` from face-neighbour grey levels, or the fallback where they are not bimodal.

    Two Gaussians and a uniform outlier component are fitted by EM (to a fixed random subset of
    :data:`MAX_FIT_VALUES` values where there are more) and the level is where the weighted densities of
    the Gaussians cross between the means. The fit is not trusted, and ``fallback`` is returned with
    ``fitted`` False, where there are fewer than ``min_faces`` finite values, Ashman's D
    (:attr:`ContactLevel.separation`) is below :data:`detachment.plausibility.MIN_CONTACT_SEPARATION`, or
    a Gaussian holds less than :data:`MIN_WEIGHT` of the faces (a sample with almost no detachment or
    almost no coating).

    Parameters
    ----------
    values : array_like
        Face-neighbour grey levels (:func:`face_neighbour_levels` over all particles); non-finite values
        are ignored.
    fallback : float
        The level used where the fit is not trusted: the phase model's void/CBD midpoint (NaN without
        one).
    min_faces : int, default 200
        Fewest finite values to fit.

    Returns
    -------
    ContactLevel
        The level (grey level), whether it was fitted, and the components (where a fit was made).
    """
    x = np.asarray(values, np.float64)
    x = x[np.isfinite(x)]
    if x.size < min_faces:
        return ContactLevel(float(fallback), False, n_faces=int(x.size))
    # EM cost grows with the faces; 200 000 of them (a fixed random subset) pin the components well enough
    sample = x if x.size <= MAX_FIT_VALUES else np.random.default_rng(0).choice(x, MAX_FIT_VALUES, replace=False)
    mu, sd, w, w_out = _two_gaussians_em(sample)
    comps = dict(gap_mean=float(mu[0]), gap_sigma=float(sd[0]), gap_weight=float(w[0]), cbd_mean=float(mu[1]),
                 cbd_sigma=float(sd[1]), cbd_weight=float(w[1]), outlier_weight=float(w_out), n_faces=int(x.size))
    unfitted = ContactLevel(float(fallback), False, **comps)
    if unfitted.separation < MIN_CONTACT_SEPARATION or w.min() < MIN_WEIGHT:
        return unfitted
    # where the weighted densities cross between the means, as the phase model cuts its classes
    level = float(gmm_decision_thresholds(mu, sd, w, np.linspace(mu[0], mu[1], 4001))[0])
    return ContactLevel(level, True, **comps)


def choose_reading(fit: ContactLevel, values, deconvolved, midpoint: float | None,
                   max_spread: float | None = 0.1) -> ContactLevel:
    """Compare the level's reading of the faces with the deconvolved one; switch where they disagree.

    Two readings of the same faces: each face neighbour against ``fit.level`` (it carries the spill of
    the point-spread function, which the fitted level absorbs where the grey levels are bimodal), and
    outside + inside − the particle's solid grey level (the spill removed; noisier) against the void/CBD
    midpoint. Where their shares of electrolyte faces differ by more than ``max_spread``, the level's
    two Gaussians did not separate gap from CBD (a wide point-spread function, or CBD faces split in
    two): the deconvolved reading is used. The difference is kept either way as the reading's
    uncertainty.

    Parameters
    ----------
    fit : ContactLevel
        :func:`fit_contact_level` on ``values``.
    values, deconvolved : array_like
        The same faces' grey levels, read plain and deconvolved (:func:`face_neighbour_levels`).
    midpoint : float or None
        The phase model's void/CBD midpoint; None (no grey levels): nothing is compared.
    max_spread : float or None, default 0.1
        Largest disagreement (share of faces, 0-1) at which the level's reading is kept; None never
        switches.

    Returns
    -------
    ContactLevel
        ``fit`` with ``gap_share``, ``gap_share_deconvolved`` and ``spread`` filled in, and ``reading``
        ``"deconvolved"`` (``level`` = the midpoint) where switched.
    """
    from dataclasses import replace

    v = np.asarray(values, float)
    d = np.asarray(deconvolved, float)
    if midpoint is None or not np.isfinite(fit.level) or not v.size or not d.size:
        return fit
    share, share_d = float(np.mean(v < fit.level)), float(np.mean(d < midpoint))
    out = replace(fit, gap_share=share, gap_share_deconvolved=share_d, spread=share - share_d)
    if max_spread is not None and abs(share - share_d) > max_spread:
        out = replace(out, reading="deconvolved", level=float(midpoint))
    return out


def read_on_map(fit: ContactLevel, values, codes, switch: bool = True) -> ContactLevel:
    """The contacts read on the phase map's codes, checked against the fitted level's reading.

    Where the map was refined against the blurred forward model (``threshold.psf_refine``) its code of a
    face neighbour already accounts for the particle's spill and the electrolyte or CBD beyond; the level's
    reading of the same faces (``values`` against ``fit.level``) is the independent one it is compared with.

    Parameters
    ----------
    fit : ContactLevel
        :func:`fit_contact_level` on ``values``.
    values : array_like
        The faces' grey levels as the level was fitted on them.
    codes : array_like
        The same faces' neighbour codes in the phase map (void or CBD).
    switch : bool, default True
        Read on the map (config ``science.contact_gap_from_intensity: false``); False only records
        ``gap_share_map`` and leaves the rest of ``fit`` as it is.

    Returns
    -------
    ContactLevel
        ``fit`` with ``gap_share_map`` (the share of void codes) and, switched, ``reading`` ``"map"``,
        ``gap_share`` (the level's) and ``spread`` = ``gap_share_map - gap_share`` (NaN where the level is not
        finite).
    """
    from dataclasses import replace

    v, c = np.asarray(values, float), np.asarray(codes)
    share_map = float(np.mean(c == VOID)) if c.size else float("nan")
    if not switch:
        return replace(fit, gap_share_map=share_map)
    share = float(np.mean(v < fit.level)) if v.size and np.isfinite(fit.level) else float("nan")
    return replace(fit, reading="map", gap_share=share, gap_share_map=share_map, spread=share_map - share)


def map_is_refined(phases_path) -> bool:
    """Whether the phase map of ``phases_path`` (``/phases``) went through the forward-model pass: its
    attribute ``psf_refine`` names the σ it ran with (``"off"``, ``"not run: …"`` or absent: not)."""
    import h5py

    with h5py.File(phases_path, "r") as f:
        value = f["phases"].attrs.get("psf_refine", "")
    return (value.decode() if isinstance(value, bytes) else str(value)).startswith("sigma ")


def reads_through_layer(level: ContactLevel | None, mode: str = "auto") -> bool:
    """Whether a sample's contacts are read through a thin CBD layer
    (:func:`detachment.surface.surface_contacts` ``partial_volume``).

    Parameters
    ----------
    level : ContactLevel or None
        The sample's contact reading; None: none (then ``"auto"`` is False).
    mode : {"auto", "always", "never"}, default "auto"
        Config ``science.contact_partial_volume``: ``"auto"`` follows :attr:`ContactLevel.partial_volume`.

    Returns
    -------
    bool

    Raises
    ------
    ValueError
        For an unknown ``mode``.
    """
    if mode not in PARTIAL_VOLUME_MODES:
        raise ValueError(f"science.contact_partial_volume must be one of {PARTIAL_VOLUME_MODES}, not {mode!r}")
    if mode == "auto":
        return level is not None and level.partial_volume
    return mode == "always"


def reading_settings(path, mode: str = "fit", partial_volume: str = "auto") -> dict:
    """How to read the contacts of a sample: keyword arguments of
    :func:`detachment.particles.particle_table_from_files`.

    Parameters
    ----------
    path : str or os.PathLike
        The sample's ``contact_level.csv``.
    mode : {"fit", "midpoint"}, default "fit"
        Config ``science.contact_level``: ``"fit"`` reads the file's level and reading;
        ``"midpoint"`` ignores the file (the phase model's void/CBD midpoint, plain reading).
    partial_volume : {"auto", "always", "never"}, default "auto"
        Config ``science.contact_partial_volume``: read a CBD layer one or two voxels thick between a particle
        and electrolyte as the particle's surface around it reads where the file says the faces hold mixtures (``"auto"``:
        :attr:`ContactLevel.partial_volume`; never with ``mode`` ``"midpoint"``), always or never.

    Returns
    -------
    dict
        ``contact_level`` (float or None), ``deconvolve`` (bool), ``sharpen`` and ``spill_sigma``
        (floats, the sharpening weight and the spill's σ the level was fitted with; 0 for the deconvolved
        reading and for ``"midpoint"``), ``ambiguity`` (the file's :class:`ContactLevel` where gap and CBD
        components were estimated, fitted or too close for a level, for the per-particle share of undecided
        faces; else None), ``partial_volume`` (bool).

    Raises
    ------
    ValueError
        From :meth:`ContactLevel.read_csv`, naming the file; for an unknown ``partial_volume``
        (:func:`reads_through_layer`).
    """
    if mode != "fit":
        return {"contact_level": None, "deconvolve": False, "sharpen": 0.0, "spill_sigma": 0.0, "ambiguity": None,
                "partial_volume": reads_through_layer(None, partial_volume)}
    level = ContactLevel.read_csv(path)
    through = reads_through_layer(level, partial_volume)
    # components too close for a level still say how undecided the faces are (nearly all of them)
    ambiguity = level if level.has_components else None
    if level.reading == "map":  # the codes decide; the grey levels (as fitted) only say how ambiguous they are
        return {"contact_level": None, "deconvolve": False, "sharpen": level.sharpen, "spill_sigma": level.spill_sigma,
                "ambiguity": ambiguity, "partial_volume": through}
    deconvolve = level.reading == "deconvolved"
    return {"contact_level": level.level, "deconvolve": deconvolve, "sharpen": 0.0 if deconvolve else level.sharpen,
            "spill_sigma": 0.0 if deconvolve else level.spill_sigma, "ambiguity": ambiguity, "partial_volume": through}
