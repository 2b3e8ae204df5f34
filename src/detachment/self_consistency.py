"""Whether the contact reading finds again what it read, on a volume rendered from its own result.

The sample's own phase map is rendered under the forward model's assumptions (:func:`render_map`: each
phase's grey level blurred by the Gaussian point-spread function the map was refined with, plus noise of each
phase's own spread and texture, measured on the sample: :mod:`detachment.texture`), thresholded as the sample
was, and its particles are read as the sample's ``contact_level.csv`` says (the same reading, level and
partial-volume rule). On that volume the map is the truth. A reading that holds on data like the sample's
finds its own detachment again, to within the noise. One that loses one-voxel coats to the forward model's
smoothness prior, or reads as CBD the gaps that partial volume lifts into CBD's grey range, loses some of what
it kept once more, and each particle's detachment moves. The mean move over the particles,
:attr:`SelfConsistency.shift`, is checked against :data:`MAX_SHIFT`. The rendered volume has no partial
volume, so the move's sign need not be the error's: the check says that the reading does not hold on such
data, not by how much it is off.

Main entry points: :func:`render_map`, :func:`levels_and_spreads`, :func:`map_sigma`, :func:`read_contacts`,
:func:`measure_shift`, :func:`check_reading`, :func:`enforce`.
"""

from __future__ import annotations

import logging
import re
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
from scipy import ndimage

from . import halo_removal, io, map_checks, plausibility
from .contact_level import (
    ContactLevel,
    edge_width_from_map,
    map_z_factor,
    reading_settings,
    sharpening_weight,
)
from .particles import contact_level_from_files, particle_table_from_files
from .phases import FWHM_PER_SIGMA, PHASE_NAMES, fit_near_model
from .texture import PhaseTexture, measure_textures, textured_noise
from .threshold import ThresholdResult, ThresholdSettings

#: Largest |mean move| of the particles' detachment (a fraction of their surface) for a reading to count as
#: self-consistent; chosen on the seen random draws (docs/results.md).
MAX_SHIFT = 0.010
#: Seed of the rendered volume's noise: the check is deterministic.
RENDER_SEED = 20201

log = logging.getLogger(__name__)


def levels_and_spreads(fwhm: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Each phase code's grey level and standard deviation from a ``phase_fwhm.csv`` table.

    The level is the ``centre`` of the phase's interior voxels and the spread its ``fwhm`` / 2.3548; where
    those are NaN (too few interior voxels), or the centre lies further than one ``model_fwhm`` from the
    phase model's mean (a Gaussian fitted to a few hundred interior voxels can escape far from their grey
    levels; the forward model's levels are taken by the same rule), the phase model's ``model_mean`` and
    ``model_fwhm``.

    Parameters
    ----------
    fwhm : pandas.DataFrame
        ``phase_fwhm.csv`` (:attr:`detachment.threshold.ThresholdResult.fwhm`): ``code``, ``centre``,
        ``fwhm``, ``model_mean``, ``model_fwhm``.

    Returns
    -------
    levels, spreads : numpy.ndarray
        (5,) float32 grey levels, indexed by phase code; NaN for a phase with neither (one the model does
        not resolve, whose code the map does not hold).
    """
    t = fwhm.set_index("code")
    levels = np.full(len(PHASE_NAMES), np.nan, np.float32)
    spreads = np.full(len(PHASE_NAMES), np.nan, np.float32)
    for code in t.index:
        row = t.loc[code]
        level, width = row["centre"], row["fwhm"]
        model_mean, model_fwhm = row["model_mean"], row["model_fwhm"]
        modelled = np.isfinite(model_mean) and np.isfinite(model_fwhm)
        off_model = modelled and not fit_near_model(level, model_mean, model_fwhm)
        if not (np.isfinite(level) and np.isfinite(width)) or off_model:
            level, width = model_mean, model_fwhm
        levels[int(code)], spreads[int(code)] = level, width / FWHM_PER_SIGMA
    return levels, spreads


def map_sigma(phases_path, qc_path) -> float:
    """σ (voxels) of the point-spread function a phase map was refined with.

    The map's attribute ``psf_refine_sigma_vox``; in a map written before that attribute, the σ its
    ``psf_refine`` description opens with (``"sigma 0.523 vox, ..."``); where the map was not refined
    (``psf_refine`` off), the point spread measured on the particles' edges (``phase_qc.csv``, check
    ``blur_sigma_vox``).

    Parameters
    ----------
    phases_path : str or os.PathLike
        The sample's ``phases.h5``.
    qc_path : str or os.PathLike
        Its ``phase_qc.csv``.

    Returns
    -------
    float
        σ, voxels; NaN where none is known.
    """
    with h5py.File(phases_path, "r") as f:
        attrs = f["phases"].attrs
        sigma = float(attrs.get("psf_refine_sigma_vox", np.nan))
        described = re.match(r"sigma ([0-9.eE+-]+) vox", str(attrs.get("psf_refine", "")))
    if not np.isfinite(sigma) and described:
        sigma = float(described.group(1))
    if not np.isfinite(sigma):
        qc = pd.read_csv(qc_path).set_index("check")
        sigma = float(qc.value.get("blur_sigma_vox", np.nan))
    return sigma


def render_map(codes: np.ndarray, levels: np.ndarray, spreads: np.ndarray, sigma: float,
               seed: int = RENDER_SEED, textures: dict[int, PhaseTexture] | None = None,
               z_factor: float = 1.0) -> np.ndarray:
    """A grey volume from a phase map under the forward model's assumptions.

    ``G_σ * levels[codes] + n`` with ``G_σ`` a Gaussian of ``sigma`` voxels (``scipy.ndimage.gaussian_filter``,
    borders repeated) and ``n`` zero-mean noise of each code's spread and texture
    (:func:`detachment.texture.textured_noise`; white where ``textures`` is None).

    Parameters
    ----------
    codes : numpy.ndarray
        (z, y, x) uint8 phase codes.
    levels, spreads : numpy.ndarray
        (5,) grey level and standard deviation per code (:func:`levels_and_spreads`).
    sigma : float
        Point-spread σ, voxels (0: no blur).
    seed : int, default :data:`RENDER_SEED`
        Seed of the noise.
    textures : dict of int to detachment.texture.PhaseTexture, optional
        Each code's texture (:func:`detachment.texture.measure_textures`); absent codes are white.
    z_factor : float, default 1
        σ along z over ``sigma`` (the map's :func:`detachment.contact_level.map_z_factor`).

    Returns
    -------
    numpy.ndarray
        (z, y, x) float32 grey levels.

    Raises
    ------
    ValueError
        When a code the map holds has no finite level or spread.
    """
    codes = np.asarray(codes)
    held = np.flatnonzero(np.bincount(codes.ravel(), minlength=len(levels)))
    missing = [PHASE_NAMES.get(int(c), str(c)) for c in held
               if not (np.isfinite(levels[c]) and np.isfinite(spreads[c]))]
    if missing:
        raise ValueError(f"no grey level or spread for the phases {missing} the map holds")
    mean = np.asarray(levels, np.float32)[codes]
    if sigma > 0:
        sigma = float(sigma)
        mean = ndimage.gaussian_filter(mean, sigma if z_factor == 1 else (sigma * z_factor, sigma, sigma),
                                       mode="nearest")
    return (mean + textured_noise(codes, spreads, textures, seed)).astype(np.float32)


def read_contacts(volume, phases_path, level_path, qc_path, labels_path, links: pd.DataFrame,
                  settings: ThresholdSettings, science: dict, workers: int = 1, refine: bool = True,
                  fit_level: bool = True) -> tuple[ThresholdResult, ContactLevel | None, pd.DataFrame]:
    """Threshold a volume, fit its contact level and read its particles' faces, as the workflow does.

    Parameters
    ----------
    volume : str or os.PathLike
        The volume (``/volume``).
    phases_path, qc_path : str or os.PathLike
        Written: the phase map and ``phase_qc.csv``.
    level_path : str or os.PathLike
        ``contact_level.csv``: written with the level fitted here, or, without ``fit_level``, read (the
        reading another volume's level chose).
    labels_path : str or os.PathLike
        The particles' labels (``/labels``), on the volume's grid.
    links : pandas.DataFrame
        The particles to read (``particles_links.csv`` layout).
    settings : detachment.threshold.ThresholdSettings
        The thresholding.
    science : dict
        The config's ``science`` section, completed with the schema's defaults.
    workers : int, default 1
        Threads of the thresholding.
    refine : bool, default True
        Refine the particles' envelopes on the phase map (:func:`detachment.particles.refine_envelope`), as
        the workflow does; False reads the labels as they are.
    fit_level : bool, default True
        Fit the contact level here; False reads the faces as ``level_path`` says.

    Returns
    -------
    result : detachment.threshold.ThresholdResult
    fit : detachment.contact_level.ContactLevel or None
        The level fitted here (None without ``fit_level``).
    table : pandas.DataFrame
        The particle table (``particles.csv`` layout).
    """
    result, shade, _ = halo_removal.threshold_halo_free(volume, phases_path, settings, progress=False,
                                                       workers=workers)
    io.write_csv(qc_path, map_checks.check_map_files(result, shade, phases_path, volume).table)
    fit = None
    if fit_level:
        width = edge_width_from_map(phases_path, qc_path)
        fit, _, _ = contact_level_from_files(
            labels_path, phases_path, volume, links, progress=False, refine=refine,
            max_spread=science["contact_max_spread"], partition=science["envelope_partition"],
            sharpen=sharpening_weight(width) if science["contact_sharpen"] else 0.0,
            spill_sigma=float(width) if science["contact_spill"] and np.isfinite(width) else 0.0,
            on_map=not science["contact_gap_from_intensity"])
        io.write_csv(level_path, fit.to_frame())
    table = particle_table_from_files(
        labels_path, phases_path, volume, links, progress=False, refine=refine, probe=science["contact_probe_vox"],
        gap_from_intensity=science["contact_gap_from_intensity"], partition=science["envelope_partition"],
        **reading_settings(level_path, science["contact_level"], science["contact_partial_volume"]))
    return result, fit, table


@dataclass
class SelfConsistency:
    """How far the particles' detachment moved when read again on the rendered volume.

    Attributes
    ----------
    shift : float
        Mean over the particles of (read again − read first), detachment fraction; NaN without particles.
    shift_mae : float
        Mean |read again − read first|.
    n_particles : int
        Particles it is taken over.
    sigma_vox : float
        Point-spread σ the volume was rendered with, voxels.
    bound : float
        The largest |shift| that passes.
    textures : str
        The phases' textures it was rendered with (:func:`describe_textures`).
    """

    shift: float
    shift_mae: float
    n_particles: int
    sigma_vox: float
    bound: float = MAX_SHIFT
    textures: str = "white"

    @property
    def consistent(self) -> bool:
        """True where |shift| is within the bound (and where there was nothing to read)."""
        return not abs(self.shift) > self.bound

    def to_frame(self) -> pd.DataFrame:
        """One row: the attributes and ``consistent`` (the columns of ``self_consistency.csv``)."""
        return pd.DataFrame([{"shift": self.shift, "shift_mae": self.shift_mae, "n_particles": self.n_particles,
                              "sigma_vox": self.sigma_vox, "bound": self.bound, "consistent": self.consistent,
                              "textures": self.textures}])


def measure_shift(first: pd.DataFrame, second: pd.DataFrame, sigma_vox: float, exclude_border: bool = True,
                  bound: float = MAX_SHIFT) -> SelfConsistency:
    """The move of each particle's ``detachment`` from ``first`` to ``second`` (both ``particles.csv``
    layout, joined on ``label``), over the particles in both with a finite detachment in each and, with
    ``exclude_border``, not touching the volume's border in ``first``."""
    a = first.set_index("label")
    if exclude_border and "touches_border" in a:
        a = a[~a.touches_border.astype(bool)]
    d = (second.set_index("label").detachment.reindex(a.index) - a.detachment).dropna()
    if d.empty:
        return SelfConsistency(float("nan"), float("nan"), 0, float(sigma_vox), bound)
    return SelfConsistency(float(d.mean()), float(d.abs().mean()), int(d.size), float(sigma_vox), bound)


def check_reading(codes_path, fwhm: pd.DataFrame, sigma: float, voxel_size_um, labels_path, links: pd.DataFrame,
                  first: pd.DataFrame, level_path, settings: ThresholdSettings, science: dict, workers: int = 1,
                  exclude_border: bool = True, bound: float = MAX_SHIFT, workdir=None,
                  refine: bool = True, volume=None) -> SelfConsistency:
    """Render the phase map at ``codes_path`` (:func:`render_map`, levels from ``fwhm``, σ ``sigma`` within
    the slices and the map's z factor along z), read it again
    (:func:`read_contacts`) as the first reading's ``contact_level.csv`` at ``level_path`` says (the same
    reading, level and partial-volume rule: what is checked is how that reading holds, not which one a volume
    made without partial volume would choose) and measure how far the particles moved from their first
    reading ``first`` (:func:`measure_shift`). ``voxel_size_um``: the volume's, written with the rendered
    one; ``workdir``: where the rendered volume and its reading are written (a temporary folder by default),
    removed after; ``refine``: as :func:`read_contacts`; ``volume``: the sample's volume (``/volume``), on which
    each phase's texture is measured (:func:`detachment.texture.measure_textures`) to render it with (None:
    white noise)."""
    levels, spreads = levels_and_spreads(fwhm)
    codes = io.read_dataset(codes_path, "phases")
    with h5py.File(codes_path, "r") as f:
        z_factor = map_z_factor(f["phases"].attrs)
    textures = None if volume is None else measure_textures(io.read_dataset(volume, "volume"), codes, spreads, sigma)
    rendered = render_map(codes, levels, spreads, sigma, textures=textures, z_factor=z_factor)
    del codes
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        tmp = Path(tmp)
        io.write_volume(tmp / "volume.h5", rendered, voxel_size_um, "rendered from the phase map")
        del rendered
        _, _, second = read_contacts(tmp / "volume.h5", tmp / "phases.h5", level_path, tmp / "phase_qc.csv",
                                     labels_path, links, settings, science, workers, refine, fit_level=False)
    return replace(measure_shift(first, second, sigma, exclude_border, bound), textures=describe_textures(textures))


def describe_textures(textures: dict[int, PhaseTexture] | None) -> str:
    """``"nmc_low 0.81 over 1.02 vox; void white; ..."``: each phase's smooth share and its scale (voxels),
    as rendered; ``"white"`` without textures."""
    if not textures:
        return "white"
    return "; ".join(f"{PHASE_NAMES[c]} " + (f"{t.smooth_share:.2f} over {t.scale_vox:.2f} vox" if t.smooth_share > 0
                                              else "white") for c, t in sorted(textures.items()))


def enforce(check: SelfConsistency, sample: str, mode: str = "stop") -> None:
    """Warn, or stop (raise :class:`detachment.plausibility.AmbiguousContacts`), where a sample's reading is not
    self-consistent (config ``science.self_consistency``: ``"stop"``, the default, or ``"warn"``); nothing where
    it is.

    Raises
    ------
    detachment.plausibility.AmbiguousContacts
        With ``"stop"``: the message names the sample, the move, the bound and the way on.
    ValueError
        When ``mode`` is neither ``"stop"`` nor ``"warn"``.
    """
    if mode not in ("stop", "warn"):
        raise ValueError(f"science.self_consistency: {mode!r} is not 'stop' or 'warn'")
    if check.consistent:
        return
    msg = (f"sample '{sample}': the contact reading does not find itself again. Read again on a volume rendered "
           f"from its own phase map (each phase's grey level blurred by the point spread σ {check.sigma_vox:.2f} "
           f"voxels the map was refined with, plus noise of each phase's spread and texture), the detachment of its "
           f"{check.n_particles} particles moves by {check.shift:+.3f} on average (bound ±{check.bound:g}). Coats "
           f"and gaps one or two voxels thick are then read differently each time (lost to the forward model's "
           f"smoothness prior at low contrast, or lifted into CBD's grey range by partial volume), and the "
           f"detachment may be off by a few hundredths or more; particles.csv detachment_ambiguous gives the share of "
           f"each surface read as undecided. Under partial volume (surfaces that cut the voxels), which the "
           f"rendered volume lacks, a reading that holds can move by about the bound as well. ")
    if mode == "stop":
        raise plausibility.AmbiguousContacts(msg + "Set science.self_consistency: warn to go on with these numbers "
                                                   "(self_consistency.csv: consistent False).")
    log.warning("%sGoing on (science.self_consistency: warn).", msg)
