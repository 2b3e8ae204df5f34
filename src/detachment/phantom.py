"""Synthetic cycled NMC monolayer electrode with its ground truth: the embedded default data.

A monolayer of polydisperse NMC particles rests on an Al collector (low z) in a porous CBD matrix under
electrolyte; each particle has an irregular envelope, a planted detached patch behind an electrolyte gap,
an intergranular crack network and low / high electron-density domains. Grey levels follow Supp. Fig. 8
(phase means and FWHMs, blur, noise, slow drift); everything is deterministic for a seed. Axes are
(z, y, x), z = 0 the collector side. The geometry in detail: docs/methods.md, "The phantom".

Main entry points: :class:`PhantomParams`, :func:`generate_phantom`, :func:`write_phantom`,
:func:`truth_table`, :func:`valence_map` (the optional co-registered Ni valence map, Supp. Fig. 7).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field, fields

import numpy as np
import pandas as pd
from scipy import ndimage

from .phases import AL, CBD, FWHM_PER_SIGMA, NMC_HIGH, NMC_LOW, PHASE_NAMES, VOID
from .surface import crack_faces, surface_contacts
from .truth import mesh_contacts

log = logging.getLogger(__name__)

VALENCE_KEYS = ("valence_density_correlation", "valence_mean", "valence_std")
VALENCE_RANGE = (2.0, 4.0)  # Ni2+ .. Ni4+: the planted map is clipped to it
VALENCE_STREAM = 0x5EC0DE  # mixed with the phantom seed: the map has its own random stream
COATING_STREAM = 0xC0A7ED  # own stream: drawing coats leaves every other draw of a seed unchanged
HALO_SHAPES = ("gaussian", "paganin")  # PhantomParams.halo_shape


@dataclass
class PhantomParams:
    """Parameters of the phantom; lengths in µm unless the name says ``_vox`` (voxels).

    Detachment of each particle is drawn from a Beta distribution with mean
    ``detachment_mean`` and concentration ``detachment_concentration`` (alpha + beta).

    Attributes
    ----------
    shape_zyx : tuple of int
        Volume size (z, y, x) in voxels; z = 0 is the collector side.
    voxel_size_um : float
        Isotropic voxel edge, µm.
    n_particles : int
        Particles to place (fewer, with a warning, where the volume cannot hold them).
    diameter_median_um, diameter_sigma_log : float
        Median (µm) and σ of log(diameter) of the lognormal diameter distribution.
    diameter_min_um, diameter_max_um : float
        Diameters are clipped to this range, µm.
    shape_irregularity : float
        Relative amplitude of the envelope's stretch along its principal axes and of its bumps.
    collector_thickness_vox : int
        Al collector thickness, voxels (the slices z < this value; with a tilt, its mean thickness).
    collector_tilt_deg : float
        Tilt of the collector's top surface against the volume's (y, x) plane, degrees (0-10): a sample
        not mounted square to the rotation axis. The surface is the plane through the volume's centre
        column at ``collector_thickness_vox`` rising along ``collector_tilt_azimuth_deg``; everything
        below it is Al (:func:`collector_top_surface`).
    collector_tilt_azimuth_deg : float
        Direction of the steepest rise in the (y, x) plane, degrees from +y towards +x.
    contact_fraction : float
        Probability (0-1) that a particle is placed touching an already placed one.
    contact_gap_probability : float
        Probability (0-1) that a touching pair is separated by a one-voxel gap.
    detachment_mean : float
        Mean (0-1) of the planted detached surface fraction.
    detachment_concentration : float
        Concentration alpha + beta of its Beta distribution (larger = narrower).
    gap_width_vox : float
        Width of the electrolyte gap over the detached patch, voxels.
    coating_width_vox : float
        Thickness of the CBD coat on the attached surface, voxels.
    coating_probability : float
        Share (0-1) of particles whose attached surface gets a CBD coat; the others touch the porous
        CBD matrix bare.
    cbd_height_fraction : float
        Mean height of the CBD matrix above the collector, in median diameters (0-2); it varies
        smoothly over (y, x) with a relative σ of 25 %.
    cbd_porosity : float
        Pore (electrolyte) fraction (0-1) of the CBD matrix.
    crack_grains : int
        Voronoi grains of a particle of radius 9 voxels; scales with the radius squared, at least 4.
    crack_density : float
        Fraction (0-1) of grain boundaries that are cracked.
    crack_width_vox : float
        Crack width, voxels: 1.2 times this at the particle's centre, 0.8 times at its surface.
    crack_reach_surface_probability : float
        Probability (0-1) that a cracked boundary runs out to the surface; the others stop at 0.55-0.85
        of the radius.
    high_fraction_mean : float
        Mean NMC-high fraction (0-1) of a particle's solid.
    high_fraction_detachment_slope : float
        Change of a particle's NMC-high fraction per unit of its detachment (Supp. Fig. 8); a particle's
        fraction is ``high_fraction_mean + slope * (detachment - detachment_mean)`` plus N(0, 0.05),
        clipped to 0.05-0.9.
    domain_correlation_vox : float
        Correlation length (Gaussian σ) of the low / high electron-density domains, voxels.
    intensity : dict of str to float
        Mean grey level per phase name (``void``, ``cbd``, ``al``, ``nmc_low``, ``nmc_high``), in the
        volume's normalised grey-level units.
    fwhm : dict of str to float
        Grey-level FWHM per phase name, planted exactly in each phase's interior voxels.
    texture_correlation_vox : float
        Correlation length (Gaussian σ) of the per-phase grey-level texture, voxels.
    blur_sigma_vox : float
        σ of the Gaussian point-spread function within the slices (y, x), voxels; 0 = no blur.
    blur_z_factor : float
        The point spread's σ along z over its σ within the slices: 1 isotropic; above 1 the resolution along
        the volume's normal is coarser (a vertical drift during the scan, slices interpolated or binned, a
        volume resampled from a coarser axis).
    drift_amplitude : float
        Peak-to-peak amplitude (grey levels) of the slow intensity drift, 60 % linear in z and 40 % a
        smooth in-plane field.
    halo_amplitude : float
        Phase-contrast edge enhancement (a Zernike phase ring's halo, or the fringes a propagation-based
        reconstruction leaves): the noise-free grey levels ``d`` become ``d + a (d - G d)``, ``G`` a Gaussian
        of ``halo_sigma_vox``, so every edge overshoots on its bright side and undershoots on its dark side,
        in proportion to its contrast, over a few voxels. 0 = none.
    halo_sigma_vox : float
        Reach (voxels) of the halo: the Gaussian's σ, or the Lorentzian's length ``ℓ`` for ``"paganin"``.
    halo_shape : {"gaussian", "paganin"}
        ``G`` of the halo: a Gaussian (an unsharp mask), or the smoothing of a Paganin phase retrieval,
        ``1 / (1 + (2π ℓ f)²)`` in Fourier space (its kernel ``exp(-r / ℓ) / r`` reaches much further than
        a Gaussian's): the fringes a propagation-based reconstruction leaves where its δ/β is set below the
        sample's.
    ring_amplitude : float
        Ring artefacts of the reconstruction (a detector pixel that answers a little too high or too low
        gives, in every slice, a ring about the rotation axis, here z through the slices' centre): the
        largest offset (grey levels) of ``ring_count`` rings at radii drawn uniformly out to the slice's
        corner, each of a random sign and 0.3-1 of this amplitude, added after the noise (they are not
        blurred by the object's point spread). 0 = none.
    ring_count : int
        Number of rings (1-200).
    ring_width_vox : float
        Each ring's radial FWHM, voxels.
    supersample : int
        Sub-voxels per voxel edge (1-4) the geometry is drawn on. Above 1, each voxel's noise-free grey
        level is the mean over its sub-voxels (partial volume: surfaces cut voxels anywhere, not only
        along their faces), its truth phase and label are their majority, and the truth table is
        measured on the sub-voxel geometry; lengths in voxels keep their meaning (the sub-voxel grid
        draws them ``supersample`` times longer). 1 = drawn on the voxel grid.
    valence_density_correlation : float or None
        Planted Pearson r (-1 to 1) between the electron density and the co-registered Ni valence map;
        ``None`` = no map. Used by :func:`valence_map` only, not by :func:`generate_phantom`.
    valence_mean : float
        Mean Ni valence over the particles' solid, valence units, strictly between 2 and 4.
    valence_std : float
        Standard deviation of the Ni valence over the solid, valence units, in (0, 1].
    """

    shape_zyx: tuple[int, int, int] = (40, 192, 192)
    voxel_size_um: float = 0.5
    n_particles: int = 60
    diameter_median_um: float = 9.0
    diameter_sigma_log: float = 0.25
    diameter_min_um: float = 5.0
    diameter_max_um: float = 15.0
    shape_irregularity: float = 0.08
    collector_thickness_vox: int = 4
    collector_tilt_deg: float = 0.0
    collector_tilt_azimuth_deg: float = 0.0
    contact_fraction: float = 0.5
    contact_gap_probability: float = 0.5
    detachment_mean: float = 0.3
    detachment_concentration: float = 6.0
    gap_width_vox: float = 2.0
    coating_width_vox: float = 2.0
    coating_probability: float = 1.0  # share of particles whose attached surface is CBD-coated; others bare
    cbd_height_fraction: float = 0.75
    cbd_porosity: float = 0.3
    crack_grains: int = 10
    crack_density: float = 0.35
    crack_width_vox: float = 2.0
    crack_reach_surface_probability: float = 0.3
    high_fraction_mean: float = 0.3
    high_fraction_detachment_slope: float = 0.4
    domain_correlation_vox: float = 6.0
    intensity: dict = field(default_factory=lambda: {
        "void": 0.0, "cbd": 0.30, "al": 0.50, "nmc_low": 0.72, "nmc_high": 0.90})
    fwhm: dict = field(default_factory=lambda: {
        "void": 0.053, "cbd": 0.064, "al": 0.053, "nmc_low": 0.07, "nmc_high": 0.07})
    texture_correlation_vox: float = 1.0
    blur_sigma_vox: float = 0.5
    blur_z_factor: float = 1.0
    drift_amplitude: float = 0.02
    halo_amplitude: float = 0.0
    halo_sigma_vox: float = 2.0
    halo_shape: str = "gaussian"
    ring_amplitude: float = 0.0
    ring_count: int = 16
    ring_width_vox: float = 1.5
    supersample: int = 1
    # co-registered Ni valence map (Supp. Fig. 7); None = no map. Not used by generate_phantom: see valence_map
    valence_density_correlation: float | None = None
    valence_mean: float = 3.0
    valence_std: float = 0.25

    @classmethod
    def from_dict(cls, d: dict, where: str = "phantom") -> PhantomParams:
        """Build from a config mapping and validate it.

        Parameters
        ----------
        d : dict
            Attribute name to value (the config's ``phantom`` parameters); missing names keep their
            defaults.
        where : str, default "phantom"
            What the mapping is, for the error messages.

        Returns
        -------
        PhantomParams

        Raises
        ------
        ValueError
            On unknown keys or invalid values, naming them (see :meth:`validate`).
        """
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {unknown}; known: {sorted(names)}")
        p = cls(**d)
        p.shape_zyx = tuple(int(s) for s in p.shape_zyx)
        p.validate(where)
        return p

    def validate(self, where: str = "phantom") -> None:
        """Check the values the generator relies on.

        Checks the shape (three sizes ≥ 8 voxels, z deep enough for the collector, the largest particle
        and 2 voxels), the lengths (positive, min ≤ max diameter), the fractions (0-1), the CBD height,
        the per-phase ``intensity`` and ``fwhm`` (one per phase, FWHMs positive) and the valence keys.

        Parameters
        ----------
        where : str, default "phantom"
            Prefix of the error messages.

        Raises
        ------
        ValueError
            On the first invalid value, naming the field and what is expected.
        """
        def bad(name, expected):
            raise ValueError(f"{where}.{name}: {getattr(self, name)!r} is invalid; expected {expected}")

        if len(self.shape_zyx) != 3 or min(self.shape_zyx) < 8:
            bad("shape_zyx", "three sizes >= 8 (z, y, x)")
        for name in ("voxel_size_um", "diameter_median_um", "diameter_min_um", "diameter_max_um"):
            if not getattr(self, name) > 0:
                bad(name, "a positive length in µm")
        if self.diameter_min_um > self.diameter_max_um:
            bad("diameter_min_um", f"<= diameter_max_um ({self.diameter_max_um})")
        for name in ("contact_fraction", "contact_gap_probability", "detachment_mean", "cbd_porosity",
                     "crack_density", "crack_reach_surface_probability", "high_fraction_mean",
                     "coating_probability"):
            if not 0 <= getattr(self, name) <= 1:
                bad(name, "a fraction in [0, 1]")
        if not (0 < self.detachment_mean < 1 and self.detachment_concentration > 0):
            bad("detachment_mean" if not 0 < self.detachment_mean < 1 else "detachment_concentration",
                "a Beta distribution's mean strictly between 0 and 1 and a positive concentration")
        if not 0 <= self.cbd_height_fraction <= 2:
            bad("cbd_height_fraction", "the CBD's mean height above the collector in median diameters, in [0, 2]")
        if set(self.intensity) != set(PHASE_NAMES.values()):
            bad("intensity", f"one grey level for each of {sorted(PHASE_NAMES.values())}")
        if set(self.fwhm) != set(PHASE_NAMES.values()) or min(self.fwhm.values()) <= 0:
            bad("fwhm", f"one positive FWHM for each of {sorted(PHASE_NAMES.values())}")
        r = self.valence_density_correlation
        if r is not None and (isinstance(r, bool) or not isinstance(r, (int, float)) or not -1 <= r <= 1):
            bad("valence_density_correlation", "a Pearson correlation in [-1, 1], or null for no valence map")
        if not VALENCE_RANGE[0] < self.valence_mean < VALENCE_RANGE[1]:
            bad("valence_mean", f"a Ni valence strictly between {VALENCE_RANGE[0]} and {VALENCE_RANGE[1]}")
        if isinstance(self.supersample, bool) or not isinstance(self.supersample, int) \
                or not 1 <= self.supersample <= 4:
            bad("supersample", "an integer number of sub-voxels per voxel edge in [1, 4]")
        if not 0 < self.valence_std <= 1:
            bad("valence_std", "a standard deviation in (0, 1] (valence units)")
        self._validate_imaging(bad)
        self._validate_collector(bad)

    def _validate_imaging(self, bad) -> None:
        """The z blur factor, the halo and the ring artefacts."""
        if not 0.25 <= self.blur_z_factor <= 4:
            bad("blur_z_factor", "the point spread's σ along z over its σ within the slices, in [0.25, 4]")
        if not (0 <= self.halo_amplitude <= 2 and self.halo_sigma_vox > 0):
            bad("halo_amplitude" if not 0 <= self.halo_amplitude <= 2 else "halo_sigma_vox",
                "a halo amplitude in [0, 2] and a positive reach in voxels")
        if self.halo_shape not in HALO_SHAPES:
            bad("halo_shape", f"one of {', '.join(HALO_SHAPES)}")
        if not 0 <= self.ring_amplitude <= 1:
            bad("ring_amplitude", "the rings' largest grey-level offset, in [0, 1]")
        if isinstance(self.ring_count, bool) or not isinstance(self.ring_count, int) or not 1 <= self.ring_count <= 200:
            bad("ring_count", "an integer number of rings in [1, 200]")
        if not self.ring_width_vox > 0:
            bad("ring_width_vox", "a positive ring width (FWHM) in voxels")

    def _validate_collector(self, bad) -> None:
        """The tilt, and z deep enough for the collector's highest point, the largest particle and 2 voxels."""
        if not 0 <= self.collector_tilt_deg <= 10:
            bad("collector_tilt_deg", "a tilt of the collector in [0, 10] degrees")
        half_rise = 0.5 * _collector_rise(self)
        if self.collector_thickness_vox - half_rise < 1:
            bad("collector_tilt_deg", f"a tilt whose rise across the volume ({2 * half_rise:.1f} voxels) leaves "
                                      f"the collector ({self.collector_thickness_vox} voxels) at least one voxel "
                                      f"thick everywhere")
        top = self.collector_thickness_vox + half_rise + self.diameter_max_um / self.voxel_size_um + 2
        if top > self.shape_zyx[0]:
            bad("shape_zyx", f"z >= collector + largest particle + 2 = {int(np.ceil(top))} voxels")

    @property
    def noise_sigma(self) -> float:
        """Measurement noise σ (grey levels) shared by all phases: the narrowest phase's FWHM / 2.3548.

        The narrowest phase is pure noise; the others add a smooth texture to reach their FWHM.
        """
        return min(self.fwhm.values()) / FWHM_PER_SIGMA


def _collector_slopes(p: PhantomParams) -> tuple[float, float]:
    """(dz/dy, dz/dx) of the collector's top surface, voxels per voxel."""
    t = np.tan(np.radians(p.collector_tilt_deg))
    a = np.radians(p.collector_tilt_azimuth_deg)
    return float(t * np.cos(a)), float(t * np.sin(a))


def _collector_rise(p: PhantomParams) -> float:
    """Height difference of the collector's top surface across the volume, voxels."""
    gy, gx = _collector_slopes(p)
    return abs(gy) * (p.shape_zyx[1] - 1) + abs(gx) * (p.shape_zyx[2] - 1)


def _collector_height(p: PhantomParams, y, x):
    """Height of the collector's top surface at (y, x) (voxel indices, scalars or arrays), voxels: the plane
    through the volume's centre column at ``collector_thickness_vox`` rising along
    ``collector_tilt_azimuth_deg`` (flat without a tilt)."""
    gy, gx = _collector_slopes(p)
    _, ny, nx = p.shape_zyx
    return p.collector_thickness_vox + gy * (y - (ny - 1) / 2) + gx * (x - (nx - 1) / 2)


def collector_top_surface(p: PhantomParams) -> np.ndarray:
    """(y, x) float64 height of the collector's top surface, voxels (:func:`_collector_height` over every
    column): the voxels of a column with z below it are Al."""
    _, ny, nx = p.shape_zyx
    return np.broadcast_to(_collector_height(p, np.arange(ny)[:, None], np.arange(nx)[None, :]), (ny, nx)) + 0.0


def _below_collector(shape, surface: np.ndarray) -> np.ndarray:
    """(z, y, x) bool: the voxels whose z lies below the collector's top ``surface`` ((y, x))."""
    return np.arange(shape[0])[:, None, None] < surface[None]


@dataclass
class Particle:
    """One planted particle, as placed (before it is drawn into the label volume).

    Attributes
    ----------
    label : int
        Its label in the truth volume (1-based, in placement order).
    center_vox : numpy.ndarray
        (3,) float centre (z, y, x), voxels.
    radius_vox : float
        Nominal radius (half the drawn diameter), voxels.
    detachment_planted : float
        Share (0-1) of its surface voxels put in the detached patch.
    high_fraction_planted : float
        Share (0-1) of its envelope voxels put in the NMC-high domain (before the cracks are cut).
    axes : numpy.ndarray
        (3, 3) rotation; rows are the envelope's principal directions.
    stretch : numpy.ndarray
        (3,) relative semi-axes along those directions.
    bumps : numpy.ndarray
        (4, 4) envelope bumps: a unit direction (z, y, x) and a phase (radians) each.
    detach_dir : numpy.ndarray
        (3,) unit vector (z, y, x) the detached patch faces, biased towards +z (away from the collector).
    """

    label: int
    center_vox: np.ndarray  # (z, y, x)
    radius_vox: float
    detachment_planted: float
    high_fraction_planted: float
    axes: np.ndarray = field(repr=False)  # (3, 3) rotation, rows = principal directions
    stretch: np.ndarray = field(repr=False)  # (3,) relative semi-axes
    bumps: np.ndarray = field(repr=False)  # (k, 4): direction (3) + phase
    detach_dir: np.ndarray = field(repr=False)


@dataclass
class Phantom:
    """A generated phantom: grey volume, truth instances, truth phases, per-particle truth.

    Attributes
    ----------
    volume : numpy.ndarray
        (z, y, x) float32 grey levels.
    labels : numpy.ndarray
        (z, y, x) uint32 truth particle labels, 0 = background; a label covers the particle's whole
        envelope, the cracks inside included.
    phases : numpy.ndarray
        (z, y, x) uint8 planted (noise-free) phase codes (:mod:`detachment.phases`).
    table : pandas.DataFrame
        Per-particle truth (:func:`truth_table`).
    planted_fwhm : dict of str to float
        Phase name to the FWHM (grey levels) planted in its interior voxels, drift excluded.
    params : PhantomParams
        The parameters it was generated with.
    seed : int
        Its random seed.
    purity : numpy.ndarray or None
        (z, y, x) float32 share (0-1) of each voxel's sub-voxels that hold its truth phase (the majority):
        1 where the voxel holds one phase only; None when drawn on the voxel grid (every voxel pure).
    """

    volume: np.ndarray
    labels: np.ndarray
    phases: np.ndarray
    table: pd.DataFrame
    planted_fwhm: dict
    params: PhantomParams
    seed: int
    purity: np.ndarray | None = None


def _smooth_field(rng, shape, sigma) -> np.ndarray:
    """Gaussian-correlated random field with zero mean and unit variance."""
    f = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma, mode="wrap")
    f -= f.mean()
    f /= f.std() + 1e-12
    return f


def _random_rotation(rng) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    return q * np.sign(np.diag(r))


def _unit(v):
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _place_particles(p: PhantomParams, rng) -> list[Particle]:
    """Random sequential placement of a monolayer on the collector, some particles touching."""
    Z, Y, X = p.shape_zyx
    vs = p.voxel_size_um
    mu = np.log(p.diameter_median_um)
    a = p.detachment_mean * p.detachment_concentration
    b = (1 - p.detachment_mean) * p.detachment_concentration
    parts: list[Particle] = []
    attempts = 0
    while len(parts) < p.n_particles and attempts < 200 * p.n_particles:
        attempts += 1
        d_um = float(np.clip(rng.lognormal(mu, p.diameter_sigma_log), p.diameter_min_um, p.diameter_max_um))
        r = 0.5 * d_um / vs
        rest = r * (1.0 + rng.uniform(-0.04, 0.12))  # resting on the collector or a little above
        partner = None
        if parts and rng.random() < p.contact_fraction:
            partner = parts[rng.integers(len(parts))]
            zc = min(_collector_height(p, *partner.center_vox[1:]) + rest, Z - 1.5 - r)
            phi = rng.uniform(0, 2 * np.pi)
            dist = (partner.radius_vox + r) * rng.uniform(0.9, 0.97)  # slight interpenetration = contact
            dz = zc - partner.center_vox[0]
            dxy = np.sqrt(max(dist**2 - dz**2, 1.0))
            c = np.array([zc, partner.center_vox[1] + dxy * np.sin(phi),
                          partner.center_vox[2] + dxy * np.cos(phi)])
        else:
            y, x = rng.uniform(0, Y), rng.uniform(0, X)
            c = np.array([min(_collector_height(p, y, x) + rest, Z - 1.5 - r), y, x])
        if not (-0.3 * r <= c[1] < Y + 0.3 * r and -0.3 * r <= c[2] < X + 0.3 * r):
            continue
        if any(np.linalg.norm(c - q.center_vox) < 1.02 * (r + q.radius_vox) for q in parts if q is not partner):
            continue
        f = float(rng.beta(a, b))
        hf = float(np.clip(p.high_fraction_mean + p.high_fraction_detachment_slope * (f - p.detachment_mean)
                           + rng.normal(0, 0.05), 0.05, 0.9))
        stretch = 1 + p.shape_irregularity * rng.uniform(-1, 1, 3)
        bumps = np.concatenate([_unit(rng.standard_normal((4, 3))), rng.uniform(0, 2 * np.pi, (4, 1))], 1)
        ddir = _unit(rng.standard_normal(3) + np.array([1.2, 0, 0]))
        parts.append(Particle(len(parts) + 1, c, r, f, hf, _random_rotation(rng), stretch, bumps, ddir))
    if len(parts) < p.n_particles:
        log.warning("placed %d of %d particles; the volume is too small for the requested count",
                    len(parts), p.n_particles)
    return parts


def _bbox(c, r, shape, pad):
    lo = np.maximum(np.floor(c - r - pad).astype(int), 0)
    hi = np.minimum(np.ceil(c + r + pad + 1).astype(int), shape)
    return tuple(slice(a, b) for a, b in zip(lo, hi))


def _local_coords(sl, c):
    zz, yy, xx = np.meshgrid(*[np.arange(s.start, s.stop) for s in sl], indexing="ij")
    return np.stack([zz - c[0], yy - c[1], xx - c[2]], -1).astype(np.float32)


def _envelope_score(part: Particle, d: np.ndarray, amp: float) -> np.ndarray:
    """Normalised radius: < 1 inside the particle's irregular envelope."""
    local = d @ part.axes.T / part.stretch
    rho = np.linalg.norm(local, axis=-1) + 1e-6
    u = d / (np.linalg.norm(d, axis=-1, keepdims=True) + 1e-6)
    bump = sum(np.sin(3.0 * (u @ bk[:3]) + bk[3]) for bk in part.bumps) / len(part.bumps)
    return rho / (part.radius_vox * (1 + amp * bump))


def _draw_envelopes(parts, shape, p: PhantomParams, rng) -> np.ndarray:
    labels = np.zeros(shape, np.uint32)
    score = np.full(shape, np.inf, np.float32)
    for part in parts:
        sl = _bbox(part.center_vox, part.radius_vox * 1.25, shape, 1)
        s = _envelope_score(part, _local_coords(sl, part.center_vox), p.shape_irregularity)
        sub_s, sub_l = score[sl], labels[sl]
        win = (s < 1) & (s < sub_s)
        sub_s[win] = s[win]
        sub_l[win] = part.label
    labels[_below_collector(shape, collector_top_surface(p))] = 0
    return labels


def _contact_pairs(labels: np.ndarray) -> list[tuple[int, int]]:
    """Sorted pairs (i < j) of labels that share at least one voxel face."""
    codes = []
    for axis in range(3):
        a = np.moveaxis(labels, axis, 0)
        la, lb = a[:-1].astype(np.int64), a[1:].astype(np.int64)
        m = (la != lb) & (la > 0) & (lb > 0)
        lo, hi = np.minimum(la[m], lb[m]), np.maximum(la[m], lb[m])
        codes.append(lo * (1 << 32) + hi)
    u = np.unique(np.concatenate(codes)) if codes else np.array([], np.int64)
    return [(int(c >> 32), int(c & 0xFFFFFFFF)) for c in u]


def _open_contact_gaps(labels, pairs, prob, rng, grid: int = 1) -> int:
    """Separate a random subset of touching pairs by a one-voxel background gap (in place); returns how many.

    ``grid``: sub-voxels per voxel edge (the gap is ``grid`` of them wide). The gap's phase is set later
    with the matrix (:func:`_matrix_and_shells`): CBD, a coat or electrolyte.
    """
    n = 0
    for i, j in pairs:
        if rng.random() >= prob:
            continue
        n += 1
        mask_j = labels == j
        near_j = ndimage.binary_dilation(mask_j, ndimage.generate_binary_structure(3, 1), iterations=grid)
        labels[near_j & (labels == i)] = 0
    return n


def _surface_directions(mask: np.ndarray, c_local: np.ndarray):
    """Surface voxels of a boolean mask and their unit directions from the centre."""
    surf = mask & ~ndimage.binary_erosion(mask, ndimage.generate_binary_structure(3, 1))
    idx = np.argwhere(surf)
    return surf, idx, _unit(idx - c_local + 1e-6)


def _matrix_and_shells(labels, parts, p: PhantomParams, rng, coated: np.ndarray, grid: int = 1) -> np.ndarray:
    """Phases outside the particles: porous CBD matrix, electrolyte above, coating and detachment gaps.

    ``coated[i]``: particle i + 1's attached surface gets a CBD coat; otherwise it touches whatever the
    matrix holds there (porous CBD, or electrolyte above the CBD). ``grid``: sub-voxels per voxel edge
    (the pores keep their size in voxels)."""
    Z, Y, X = labels.shape
    top = collector_top_surface(p)
    phases = np.full(labels.shape, VOID, np.uint8)
    # CBD fills from the collector to a smoothly varying height
    mean_d = p.diameter_median_um / p.voxel_size_um
    h = top + p.cbd_height_fraction * mean_d * (1 + 0.25 * _smooth_field(rng, (Y, X), max(Y, X) / 8))
    zz = np.arange(Z)[:, None, None]
    pores = _smooth_field(rng, labels.shape, 1.5 * grid) > np.quantile(rng.standard_normal(20000), 1 - p.cbd_porosity)
    phases[(zz < h[None]) & ~pores] = CBD
    # coating (attached) and thin electrolyte gaps (detached), particle by particle
    width = max(p.gap_width_vox, p.coating_width_vox)
    for part in parts:
        sl = _bbox(part.center_vox, part.radius_vox * 1.25, labels.shape, width + 2)
        lab = labels[sl]
        mask = lab == part.label
        if not mask.any():
            continue
        c_local = part.center_vox - np.array([s.start for s in sl])
        surf, idx, u = _surface_directions(mask, c_local)
        k = 0.35
        g = u @ part.detach_dir + k * np.sin(4.0 * (u @ part.bumps[0, :3]) + part.bumps[0, 3])
        thr = np.quantile(g, 1 - part.detachment_planted) if part.detachment_planted > 0 else np.inf
        detached_surface = np.zeros(mask.shape, bool)
        detached_surface[tuple(idx[g > thr].T)] = True
        dist, nearest = ndimage.distance_transform_edt(~surf, return_indices=True)
        outside = (lab == 0)
        near_det = detached_surface[tuple(nearest)]
        sub = phases[sl]
        gap = outside & near_det & (dist <= p.gap_width_vox)
        coat = outside & ~near_det & (dist <= p.coating_width_vox)
        if coated[part.label - 1]:
            sub[coat] = CBD
        sub[gap] = VOID
    phases[_below_collector(labels.shape, top)] = AL
    return phases


def _cracks(labels, parts, p: PhantomParams, rng, grid: int = 1) -> np.ndarray:
    """Boolean crack mask: selected grain boundaries of a radial Voronoi tessellation per particle
    (``grid``: sub-voxels per voxel edge, so a particle gets as many grains as at one)."""
    cracks = np.zeros(labels.shape, bool)
    for part in parts:
        sl = _bbox(part.center_vox, part.radius_vox * 1.25, labels.shape, 1)
        mask = labels[sl] == part.label
        if not mask.any():
            continue
        d = _local_coords(sl, part.center_vox)[mask]
        r = part.radius_vox
        n_grains = max(4, int(round(p.crack_grains * (r / (9.0 * grid)) ** 2)))
        seeds = _unit(rng.standard_normal((n_grains, 3))) * r * rng.uniform(0.45, 0.75, (n_grains, 1))
        dist = np.linalg.norm(d[:, None, :] - seeds[None], axis=-1)
        order = np.argsort(dist, axis=1)[:, :2]
        d1 = np.take_along_axis(dist, order[:, :1], 1)[:, 0]
        d2 = np.take_along_axis(dist, order[:, 1:2], 1)[:, 0]
        # distance to the bisector plane of the two nearest seeds, (d2² - d1²) / (2 |s2 - s1|). (d2 - d1 is
        # not: its level sets are hyperboloids that open into wedges of half-angle arcsin(w / |s2 - s1|),
        # cracks far wider than w that fill much of the particle, with void caps no image could tell from
        # electrolyte)
        sep = np.linalg.norm(seeds[order[:, 0]] - seeds[order[:, 1]], axis=-1)
        plane = (d2 ** 2 - d1 ** 2) / (2 * np.maximum(sep, 1e-6))
        # per boundary: cracked or not, and how far out it runs
        pair_crack = rng.random((n_grains, n_grains)) < p.crack_density
        pair_reach = np.where(rng.random((n_grains, n_grains)) < p.crack_reach_surface_probability,
                              1.2, rng.uniform(0.55, 0.85, (n_grains, n_grains)))
        a, b = np.minimum(order[:, 0], order[:, 1]), np.maximum(order[:, 0], order[:, 1])
        rho = np.linalg.norm(d, axis=-1) / r
        w = p.crack_width_vox * (1.2 - 0.4 * np.clip(rho, 0, 1))  # wider in the core
        on = pair_crack[a, b] & (plane < w / 2) & (rho < pair_reach[a, b])
        sub = cracks[sl]
        sub[mask] = on
    return cracks


def _density_domains(labels, parts, p: PhantomParams, rng) -> np.ndarray:
    """Boolean NMC-high mask: thresholded smooth field, per-particle quantile = planted high fraction."""
    field_ = _smooth_field(rng, labels.shape, p.domain_correlation_vox)
    high = np.zeros(labels.shape, bool)
    for part in parts:
        sl = _bbox(part.center_vox, part.radius_vox * 1.25, labels.shape, 1)
        mask = labels[sl] == part.label
        if not mask.any():
            continue
        vals = field_[sl][mask]
        thr = np.quantile(vals, 1 - part.high_fraction_planted)
        sub = high[sl]
        sub[mask] = vals > thr
    return high


def noise_free_density(phases: np.ndarray, p: PhantomParams) -> np.ndarray:
    """The electron density a perfect instrument would see: each phase's mean grey level, blurred.

    The blur is the point-spread function; no texture, noise or drift is added.

    Parameters
    ----------
    phases : numpy.ndarray
        (z, y, x) uint8 phase codes (:mod:`detachment.phases`).
    p : PhantomParams
        Its ``intensity`` (mean grey level per phase), ``blur_sigma_vox`` and ``blur_z_factor`` are used.

    Returns
    -------
    numpy.ndarray
        (z, y, x) float32 grey levels.
    """
    means = np.array([p.intensity[PHASE_NAMES[c]] for c in range(5)], np.float32)
    sigma = (p.blur_z_factor * p.blur_sigma_vox, p.blur_sigma_vox, p.blur_sigma_vox)
    return ndimage.gaussian_filter(means[phases], sigma, mode="nearest") if p.blur_sigma_vox > 0 else means[phases]


def _halo_smoothing(vol: np.ndarray, reach: float, shape: str) -> np.ndarray:
    """The smoothing ``G d`` a halo of ``shape`` subtracts (:attr:`PhantomParams.halo_shape`), borders
    repeated; the Paganin form by FFT on the volume padded by ``8 ℓ`` of its edge values."""
    if shape == "gaussian":
        return ndimage.gaussian_filter(vol, reach, mode="nearest")
    pad = int(np.ceil(8 * reach))
    padded = np.pad(vol, pad, mode="edge").astype(np.float64)
    q = sum(np.meshgrid(*[(2 * np.pi * f) ** 2 for f in
                          (np.fft.fftfreq(padded.shape[0]), np.fft.fftfreq(padded.shape[1]),
                           np.fft.rfftfreq(padded.shape[2]))], indexing="ij", sparse=True))
    smooth = np.fft.irfftn(np.fft.rfftn(padded) / (1.0 + reach**2 * q), s=padded.shape, axes=(0, 1, 2))
    return smooth[pad:-pad, pad:-pad, pad:-pad].astype(np.float32)


def render_intensity(phases: np.ndarray, p: PhantomParams, rng, density: np.ndarray | None = None
                     ) -> tuple[np.ndarray, dict]:
    """Grey volume from a phase map: blurred means (with their halo, if any) + per-phase texture + noise + drift.

    Each phase's interior gets exactly its FWHM: white noise of σ :attr:`PhantomParams.noise_sigma`
    common to all phases plus a smooth per-phase texture (correlation ``texture_correlation_vox``) of the
    remaining variance. The drift is linear in z plus a smooth in-plane field.

    Parameters
    ----------
    phases : numpy.ndarray
        (z, y, x) uint8 phase codes (:mod:`detachment.phases`).
    p : PhantomParams
        Grey levels, FWHMs, blur, texture and drift.
    rng : numpy.random.Generator
        Random stream for the texture, the noise and the drift field.
    density : numpy.ndarray, optional
        (z, y, x) noise-free grey levels to start from (default :func:`noise_free_density` of ``phases``;
        a supersampled phantom passes its sub-voxel means).

    Returns
    -------
    volume : numpy.ndarray
        (z, y, x) float32 grey levels.
    planted_fwhm : dict of str to float
        Phase name to the FWHM (grey levels) planted in its interior voxels, drift excluded.
    """
    vol = noise_free_density(phases, p) if density is None else np.array(density, np.float32)
    if p.halo_amplitude > 0:  # the imaging's edge enhancement acts on the object, before noise
        vol += p.halo_amplitude * (vol - _halo_smoothing(vol, p.halo_sigma_vox, p.halo_shape))
    sn = p.noise_sigma
    tex_sigma = np.array([np.sqrt(max((p.fwhm[PHASE_NAMES[c]] / FWHM_PER_SIGMA) ** 2 - sn**2, 0.0))
                          for c in range(5)], np.float32)
    texture = _smooth_field(rng, phases.shape, p.texture_correlation_vox)
    vol += tex_sigma[phases] * texture
    vol += sn * rng.standard_normal(phases.shape, dtype=np.float32)
    Z, Y, X = phases.shape
    zz = (np.arange(Z, dtype=np.float32) / max(Z - 1, 1) - 0.5)[:, None, None]
    inplane = _smooth_field(rng, (Y, X), max(Y, X) / 4)
    inplane /= max(np.abs(inplane).max(), 1e-6) * 2
    vol += p.drift_amplitude * (0.6 * zz + 0.4 * inplane[None])
    if p.ring_amplitude > 0:  # drawn last: every other grey level is the twin's without rings
        vol += ring_artefacts((Y, X), p, rng)[None]
    planted = {PHASE_NAMES[c]: float(np.sqrt(tex_sigma[c] ** 2 + sn**2) * FWHM_PER_SIGMA) for c in range(5)}
    return vol.astype(np.float32), planted


def ring_artefacts(shape_yx: tuple[int, int], p: PhantomParams, rng) -> np.ndarray:
    """(y, x) float32 grey-level offsets of :attr:`PhantomParams.ring_amplitude`'s rings, the same in every
    slice: Gaussian in the radius from the slices' centre (FWHM ``ring_width_vox``), at radii drawn uniformly
    out to the corner, each ± 0.3-1 of the amplitude."""
    Y, X = shape_yx
    yy, xx = np.mgrid[0:Y, 0:X].astype(np.float32)
    r = np.hypot(yy - (Y - 1) / 2, xx - (X - 1) / 2)
    radii = rng.uniform(1.0, float(r.max()), p.ring_count)
    heights = p.ring_amplitude * rng.uniform(0.3, 1.0, p.ring_count) * rng.choice([-1.0, 1.0], p.ring_count)
    sd = p.ring_width_vox / FWHM_PER_SIGMA
    out = np.zeros((Y, X), np.float32)
    for radius, height in zip(radii, heights):
        out += np.float32(height) * np.exp(-0.5 * ((r - radius) / sd) ** 2)
    return out


def truth_table(labels: np.ndarray, phases: np.ndarray, parts: list[Particle], voxel_size_um,
                collector_surface: np.ndarray, coated: np.ndarray | None = None) -> pd.DataFrame:
    """Per-particle ground truth measured on the planted geometry (``truth_particles.csv``).

    Parameters
    ----------
    labels, phases : numpy.ndarray
        (z, y, x) uint32 truth particle labels 1..n (0 = background; envelopes, cracks included) and
        uint8 planted phase codes (:mod:`detachment.phases`).
    parts : list of Particle
        The planted particles, ``parts[i].label == i + 1``.
    voxel_size_um : sequence of float
        (z, y, x) voxel edge lengths, µm.
    collector_surface : numpy.ndarray
        (y, x) planted collector top, voxels (:func:`collector_top_surface`).
    coated : numpy.ndarray, optional
        (n,) bool per particle of ``parts``: its attached surface is CBD-coated (default: all).

    Returns
    -------
    pandas.DataFrame
        One row per particle that has voxels: the columns docs/outputs.md lists (``detachment`` and the
        ``contact_{void,cbd,al,particle}_um2`` areas from the envelope mesh, :mod:`detachment.truth`;
        ``detachment_planted`` the share of surface voxels in the planted patch; fractions 0-1;
        ``crack_area_um2`` counts voxel faces, no staircase correction), and
        ``diameter_planted_um``, ``crack_volume_fraction`` (void share of the envelope),
        ``centroid_{z,y,x}_um``, ``distance_to_collector_um`` (the lowest voxel's height above the
        collector's top face in its column), ``touches_border`` (cut by a y or x border of the volume).
    """
    n = len(parts)
    vs = np.asarray(voxel_size_um, float)
    contacts = mesh_contacts(labels, phases, vs, n_labels=n)
    faces = surface_contacts(labels, phases, vs, n_labels=n)
    crack_area = crack_faces(labels, phases, vs, n_labels=n)
    idx = np.arange(1, n + 1)
    vox = ndimage.sum_labels(np.ones(labels.shape, np.int64), labels, idx)
    crack_vox = ndimage.sum_labels(phases == VOID, labels, idx)
    high_vox = ndimage.sum_labels(phases == NMC_HIGH, labels, idx)
    solid_vox = ndimage.sum_labels((phases == NMC_LOW) | (phases == NMC_HIGH), labels, idx)
    com = np.array(ndimage.center_of_mass(np.ones(labels.shape), labels, idx)) if n else np.zeros((0, 3))
    volume_um3 = vox * float(np.prod(vs))
    above, border = _height_and_border(labels, n, collector_surface)
    df = pd.DataFrame({
        "label": idx, "detachment": contacts.detachment[1:], "detachment_voxel_faces": faces.detachment[1:],
        "detachment_planted": [q.detachment_planted for q in parts],
        "coated": coated if coated is not None else True,
        "volume_um3": volume_um3,
        "diameter_um": np.cbrt(6 * volume_um3 / np.pi),
        "diameter_planted_um": [2 * q.radius_vox * vs[1] for q in parts],
        "crack_area_um2": crack_area[1:],
        "crack_volume_fraction": np.where(vox > 0, crack_vox / np.maximum(vox, 1), np.nan),
        "nmc_high_fraction": np.where(solid_vox > 0, high_vox / np.maximum(solid_vox, 1), np.nan),
        "centroid_z_um": com[:, 0] * vs[0], "centroid_y_um": com[:, 1] * vs[1], "centroid_x_um": com[:, 2] * vs[2],
        "distance_to_collector_um": above * vs[0],
        "contact_void_um2": contacts.area[1:, 0], "contact_cbd_um2": contacts.area[1:, 1],
        "contact_al_um2": contacts.area[1:, 2], "contact_particle_um2": contacts.area[1:, 3],
        "touches_border": border,
    })
    return df[df.volume_um3 > 0].reset_index(drop=True)


def _height_and_border(labels: np.ndarray, n: int, collector_surface: np.ndarray) -> tuple[np.ndarray, list[bool]]:
    """Per label 1..n: its lowest voxel's height above the collector, in voxels (z minus the first slice above
    ``collector_surface``, (y, x) the planted top surface, minimised over the label's voxels; NaN for a label
    without voxels), and whether a y or x border cuts it."""
    lab_sl = ndimage.find_objects(labels, max_label=n)
    border = [sl is not None and any(s.start == 0 or s.stop == dim for s, dim in zip(sl[1:], labels.shape[1:]))
              for sl in lab_sl]
    top = np.ceil(collector_surface)
    above = np.full(n, np.nan)
    for i, sl in enumerate(lab_sl, start=1):
        if sl is not None:
            z, y, x = np.nonzero(labels[sl] == i)
            above[i - 1] = np.min(z + sl[0].start - top[y + sl[1].start, x + sl[2].start])
    return above, border


def generate_phantom(params: PhantomParams, seed: int) -> Phantom:
    """Generate a phantom; identical output for identical ``(params, seed)``.

    Places the particles, draws their envelopes, opens gaps between some touching pairs, builds the CBD
    matrix, coats and detachment gaps, the density domains and the cracks, then renders the grey volume
    and measures the truth.

    Parameters
    ----------
    params : PhantomParams
        The phantom's parameters (validated here).
    seed : int
        Seed of the random stream; the CBD coats use their own stream derived from it.

    Returns
    -------
    Phantom

    Raises
    ------
    ValueError
        When ``params`` is invalid (:meth:`PhantomParams.validate`).
    """
    params.validate()
    rng = np.random.default_rng(seed)
    k = params.supersample
    grid = _sub_voxel_params(params) if k > 1 else params
    labels, phases, parts, coated, n_gaps = _geometry(grid, seed, rng, k)
    table = truth_table(labels, phases, parts, (grid.voxel_size_um,) * 3, collector_top_surface(grid), coated)
    if k > 1:
        # sub-voxel centres from the first sub-voxel's; voxel i's centre lies (k - 1) / 2 sub-voxels further
        for axis in "zyx":
            table[f"centroid_{axis}_um"] -= (k - 1) / 2 * grid.voxel_size_um
        density = _block_mean(noise_free_density(phases, grid), k)
        fine = phases
        labels, phases = _block_majority(labels, k), _block_majority(phases, k)
        purity = (_blocks(fine, k) == phases[..., None]).mean(-1, dtype=np.float32)
        volume, planted = render_intensity(phases, params, rng, density=density)
    else:
        purity = None
        volume, planted = render_intensity(phases, params, rng)
    log.info("phantom seed %d: %d particles, %d separated contacts, detachment %.3f ± %.3f", seed,
             len(table), n_gaps, table.detachment.mean(), table.detachment.std())
    return Phantom(volume, labels, phases, table, planted, params, seed, purity)


def _geometry(p: PhantomParams, seed: int, rng, grid: int = 1):
    """Labels, phases, particles, coated flags and the number of separated contacts, drawn on the grid of
    ``p`` (``grid`` sub-voxels per voxel edge of the phantom asked for)."""
    parts = _place_particles(p, rng)
    labels = _draw_envelopes(parts, tuple(p.shape_zyx), p, rng)
    n_gaps = _open_contact_gaps(labels, _contact_pairs(labels), p.contact_gap_probability, rng, grid)
    coated = np.random.default_rng([int(seed), COATING_STREAM]).random(len(parts)) < p.coating_probability
    phases = _matrix_and_shells(labels, parts, p, rng, coated, grid)
    inside = labels > 0
    high = _density_domains(labels, parts, p, rng)
    phases[inside] = np.where(high[inside], NMC_HIGH, NMC_LOW)
    phases[_cracks(labels, parts, p, rng, grid)] = VOID
    return labels, phases, parts, coated, n_gaps


#: fields in voxels, drawn ``supersample`` times longer on the sub-voxel grid
_VOXEL_LENGTHS = ("collector_thickness_vox", "gap_width_vox", "coating_width_vox", "crack_width_vox",
                  "domain_correlation_vox", "texture_correlation_vox", "blur_sigma_vox")


def _sub_voxel_params(p: PhantomParams) -> PhantomParams:
    """``p`` on its sub-voxel grid: shape and lengths in voxels times ``supersample``, voxel size divided."""
    from dataclasses import replace

    k = p.supersample
    scaled = {name: getattr(p, name) * k for name in _VOXEL_LENGTHS}
    return replace(p, shape_zyx=tuple(int(s) * k for s in p.shape_zyx), voxel_size_um=p.voxel_size_um / k,
                   supersample=1, **scaled)


def _blocks(a: np.ndarray, k: int) -> np.ndarray:
    """(Z, Y, X, k³) view of the k × k × k blocks of a (k Z, k Y, k X) array."""
    Z, Y, X = (s // k for s in a.shape)
    return a.reshape(Z, k, Y, k, X, k).transpose(0, 2, 4, 1, 3, 5).reshape(Z, Y, X, k ** 3)


def _block_mean(a: np.ndarray, k: int) -> np.ndarray:
    """Mean of each k × k × k block, float32."""
    return _blocks(a, k).mean(-1, dtype=np.float64).astype(np.float32)


def _block_majority(a: np.ndarray, k: int) -> np.ndarray:
    """Commonest value of each k × k × k block (ties: the one met first in the block, z then y then x)."""
    b = _blocks(a, k)
    counts = np.stack([(b == b[..., i:i + 1]).sum(-1) for i in range(b.shape[-1])], -1)
    return np.take_along_axis(b, counts.argmax(-1)[..., None], -1)[..., 0]


def _neighbour_correlation(values: np.ndarray, labels: np.ndarray, solid: np.ndarray) -> float:
    """Correlation of ``values`` (given on ``solid``, in its C order) between x-neighbours that are both solid
    and in the same particle: the share of its variance that is smooth on the voxel scale."""
    full = np.zeros(solid.shape, np.float32)
    full[solid] = values
    pair = solid[..., 1:] & solid[..., :-1] & (labels[..., 1:] == labels[..., :-1])
    a, b = full[..., 1:][pair], full[..., :-1][pair]
    if a.size < 3 or a.std() == 0 or b.std() == 0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def valence_map(density: np.ndarray, labels: np.ndarray, phases: np.ndarray, params: PhantomParams,
                seed: int) -> np.ndarray | None:
    """Co-registered Ni valence map with a planted Pearson correlation to the electron density (Supp. Fig. 7).

    valence = ``valence_mean`` + ``valence_std`` (r z + sqrt(1 - r^2) n), r = ``valence_density_correlation``,
    z the standardised density, n noise uncorrelated with z; see docs/methods.md, The phantom.

    Parameters
    ----------
    density : numpy.ndarray
        (z, y, x) electron density (grey levels) the correlation is planted against; the workflow passes the
        noise-free density (:func:`noise_free_density`), so r against the noisy grey level is attenuated.
    labels, phases : numpy.ndarray
        (z, y, x) uint32 truth particle labels (0 = background) and uint8 truth phase codes
        (:mod:`detachment.phases`).
    params : PhantomParams
        ``valence_density_correlation``, ``valence_mean``, ``valence_std`` and ``domain_correlation_vox``
        are used.
    seed : int
        The phantom's seed; the map draws from its own stream derived from it (deterministic, and the
        phantom is unchanged when the map is switched on or retuned).

    Returns
    -------
    numpy.ndarray or None
        (z, y, x) float32 like ``density``: the Ni valence state (valence units, clipped to
        :data:`VALENCE_RANGE` = 2..4) on the NMC solid of the particles (``labels`` > 0 and phase
        NMC low / high), NaN elsewhere (no measurement: pores, cracks, CBD, Al). ``None`` when
        ``params.valence_density_correlation`` is ``None``.
    """
    r = params.valence_density_correlation
    if r is None:
        return None
    rng = np.random.default_rng([int(seed), VALENCE_STREAM])
    solid = (labels > 0) & ((phases == NMC_LOW) | (phases == NMC_HIGH))
    out = np.full(density.shape, np.nan, np.float32)
    if not solid.any():
        return out
    z = density[solid].astype(np.float64)  # float64 over the solid only: the orthogonalisation needs it
    z -= z.mean()
    z /= z.std() or 1.0
    _, inv = np.unique(labels[solid], return_inverse=True)
    n_i = np.bincount(inv).astype(np.float64)
    zbar = np.bincount(inv, weights=z) / n_i  # per-particle mean of z
    u = _between_particle_noise(rng, zbar, n_i)
    w = _within_particle_noise(rng, z, zbar, inv, labels, solid, params.domain_correlation_vox)
    w_var = max(1.0 - float(np.sum(n_i * u**2)) / z.size, 0.0)
    w *= np.sqrt(w_var) / (w.std() or 1.0)
    # valence = mean + std * (r z + sqrt(1 - r^2) (u + w)), built in place in w
    w += u[inv]
    w *= np.sqrt(1.0 - r * r)
    w += r * z
    w *= params.valence_std
    w += params.valence_mean
    out[solid] = np.clip(w, *VALENCE_RANGE)
    log.info("valence map seed %d: planted r = %.3f over %d solid voxels of %d particles", seed, r, z.size, n_i.size)
    return out


def _between_particle_noise(rng: np.random.Generator, zbar: np.ndarray, n_i: np.ndarray) -> np.ndarray:
    """Per-particle noise orthogonal (unweighted) to 1, ``zbar``, ``n_i`` and ``n_i * zbar``.

    So it is uncorrelated with ``zbar`` over particles and with z over voxels; scaled to ``zbar``'s spread
    over particles. ``zbar``: per-particle mean of the standardised density; ``n_i``: voxels per particle.
    """
    k = n_i.size
    u = rng.standard_normal(k)
    basis = np.stack([np.ones(k), zbar, n_i, n_i * zbar], 1)
    if k > basis.shape[1] + 1:
        u -= basis @ np.linalg.lstsq(basis, u, rcond=None)[0]
    u *= zbar.std() / (u.std() or 1.0)
    return u


def _within_particle_noise(rng: np.random.Generator, z: np.ndarray, zbar: np.ndarray, inv: np.ndarray,
                           labels: np.ndarray, solid: np.ndarray, correlation_vox: float) -> np.ndarray:
    """Within-particle noise on the solid voxels (C order of ``solid``), not yet scaled.

    A smooth field (correlation length ``correlation_vox``, the density domains') plus white noise, mixed in
    the proportion that z itself shows (its neighbour correlation), so a part of a particle (a fragment of an
    over-segmented particle, or a coarser pixel) shows about the same correlation as a whole one; then zero
    mean in each particle and orthogonal to z's within-particle part.
    """
    n_i = np.bincount(inv).astype(np.float64)
    z_within = z - zbar[inv]
    smooth_share = float(np.clip(_neighbour_correlation(z_within, labels, solid), 0.0, 1.0))
    smooth = _smooth_field(rng, labels.shape, correlation_vox)[solid]
    w = rng.standard_normal(z.size)
    w *= np.sqrt(1.0 - smooth_share)
    w += np.sqrt(smooth_share) * smooth
    del smooth
    w -= (np.bincount(inv, weights=w) / n_i)[inv]
    if z_within @ z_within > 0:
        w -= (w @ z_within) / (z_within @ z_within) * z_within
    return w


def params_dict(params: PhantomParams) -> dict:
    """The parameters as a JSON-ready dict (``shape_zyx`` as a list).

    Parameters
    ----------
    params : PhantomParams

    Returns
    -------
    dict
        Attribute name to value.
    """
    d = asdict(params)
    d["shape_zyx"] = list(d["shape_zyx"])
    return d


def write_phantom(ph: Phantom, volume_path, truth_path, table_path) -> None:
    """Write the grey volume, the truth (``/labels``, ``/phases``, ``/particles``) and the truth table.

    Parameters
    ----------
    ph : Phantom
        The generated phantom.
    volume_path : str or os.PathLike
        Volume file to write (``/volume`` float32, voxel size, ``source`` = the seed).
    truth_path : str or os.PathLike
        HDF5 file of the truth: ``/labels`` (uint32), ``/phases`` (uint8), ``/particles`` (the truth table
        as records), for a phantom drawn on sub-voxels also ``/phase_purity`` (float32,
        :attr:`Phantom.purity`); file attributes ``seed``, ``planted_fwhm`` and ``params`` (both JSON).
    table_path : str or os.PathLike
        CSV of the truth table (:func:`truth_table`).
    """
    import json

    from . import io

    vs = (ph.params.voxel_size_um,) * 3
    io.write_volume(volume_path, ph.volume, vs, source=f"phantom seed={ph.seed}")
    records = ph.table.to_records(index=False)
    arrays = {"labels": ph.labels, "phases": ph.phases, "particles": records}
    if ph.purity is not None:
        arrays["phase_purity"] = ph.purity
    io.write_arrays(truth_path, arrays,
                    attrs={"seed": ph.seed, "planted_fwhm": json.dumps(ph.planted_fwhm),
                           "params": json.dumps(params_dict(ph.params))},
                    voxel_size_um=vs)
    io.write_csv(table_path, ph.table)
