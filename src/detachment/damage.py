"""Crack damage: local crack-surface concentration and its profile with depth (Supp. Fig. 2).

Crack surface = faces between the solid and void inside a particle's envelope. The local damage field
is the density of crack-surface voxels (solid voxels with a crack face) smoothed by a Gaussian of
``sigma_um``, over the smoothed envelope density and the voxel edge: a local crack surface per volume
in µm⁻¹. The depth profile averages the particles' crack surface per volume in slabs of their
centroid's height above the collector.

Main entry points: :func:`depth_profile` (the workflow's), :func:`local_damage`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import ndimage

from .phases import NMC_HIGH, NMC_LOW, VOID


def crack_surface_voxels(labels: np.ndarray, phases: np.ndarray) -> np.ndarray:
    """Solid voxels inside an envelope with a face neighbour that is crack (void inside an envelope).

    The crack voxel is not checked to lie in the same particle's envelope as the solid voxel.

    Parameters
    ----------
    labels : numpy.ndarray
        (z, y, x) integer particle labels, 0 = background (envelopes, cracks included).
    phases : numpy.ndarray
        (z, y, x) uint8 phase codes (:mod:`detachment.phases`).

    Returns
    -------
    numpy.ndarray
        (z, y, x) bool crack-surface voxels.
    """
    solid = (labels > 0) & ((phases == NMC_LOW) | (phases == NMC_HIGH))
    crack = (labels > 0) & (phases == VOID)
    return solid & ndimage.binary_dilation(crack, ndimage.generate_binary_structure(3, 1))


def local_damage(labels: np.ndarray, phases: np.ndarray, voxel_size_um, sigma_um: float = 1.0) -> np.ndarray:
    """Local crack surface per volume (µm⁻¹) inside particles, NaN outside.

    Parameters
    ----------
    labels : numpy.ndarray
        (z, y, x) integer particle labels, 0 = background (envelopes, cracks included).
    phases : numpy.ndarray
        (z, y, x) uint8 phase codes (:mod:`detachment.phases`).
    voxel_size_um : sequence of float
        (z, y, x) voxel edge lengths, µm.
    sigma_um : float, default 1.0
        Standard deviation of the Gaussian smoothing, µm (converted per axis to voxels).

    Returns
    -------
    numpy.ndarray
        (z, y, x) float: smoothed crack-surface voxel density over smoothed envelope density, divided by
        the voxel edge (geometric mean), µm⁻¹; NaN outside the envelopes.
    """
    vs = np.asarray(voxel_size_um, float)
    sigma = sigma_um / vs
    env = (labels > 0).astype(np.float32)
    surf = crack_surface_voxels(labels, phases).astype(np.float32)
    num = ndimage.gaussian_filter(surf, sigma)
    den = ndimage.gaussian_filter(env, sigma)
    with np.errstate(invalid="ignore", divide="ignore"):
        field = num / den / float(np.cbrt(np.prod(vs)))
    return np.where(labels > 0, field, np.nan)


def depth_profile(particles: pd.DataFrame, bin_um: float = 2.0) -> pd.DataFrame:
    """Mean ± std (and SEM, n) of particles' crack surface per volume in slabs of ``height_um``.

    Parameters
    ----------
    particles : pandas.DataFrame
        Particle table (:func:`detachment.particles.particle_table`) with ``height_um`` (centroid height
        above the collector, µm) and ``crack_surface_per_volume_per_um`` (µm⁻¹).
    bin_um : float, default 2.0
        Slab thickness, µm; slabs start at height 0 and cover the highest particle. Heights below 0
        fall in the first slab.

    Returns
    -------
    pandas.DataFrame
        One row per slab: ``height_low_um``, ``height_high_um`` (µm), ``n`` (particles),
        ``crack_surface_per_volume_mean``, ``_std`` (ddof 1) and ``_sem`` (µm⁻¹; NaN for an empty slab,
        std and SEM NaN below two particles).
    """
    height = particles.height_um
    edges = np.arange(0, float(height.max()) + bin_um, bin_um) if len(particles) else np.array([0.0, bin_um])
    which = np.clip(np.digitize(height, edges) - 1, 0, len(edges) - 2)
    rows = []
    for b in range(len(edges) - 1):
        v = particles.crack_surface_per_volume_per_um[which == b]
        rows.append({"height_low_um": edges[b], "height_high_um": edges[b + 1], "n": int(v.size),
                     "crack_surface_per_volume_mean": float(v.mean()) if v.size else np.nan,
                     "crack_surface_per_volume_std": float(v.std(ddof=1)) if v.size > 1 else np.nan,
                     "crack_surface_per_volume_sem": float(v.std(ddof=1) / np.sqrt(v.size)) if v.size > 1 else np.nan})
    return pd.DataFrame(rows)
