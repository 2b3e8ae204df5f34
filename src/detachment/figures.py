"""Figures of one sample drawn from its files: what to show (slice, particle, examples) and the plot.

Each function picks its view from the sample's outputs and returns a matplotlib figure from
:mod:`detachment.plots`; the workflow's scripts only save it.

Main entry points: :func:`damage_figure`, :func:`diffusion_figure`, :func:`comparison_examples`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from . import io, plots
from .diffusion import descent_path, particle_diffusion
from .particles import refine_envelope


def damage_figure(table: pd.DataFrame, profile: pd.DataFrame, particles_path, volume_path, sample: str):
    """Supp. Fig. 2-style figure through the z slice with the most particle voxels.

    Parameters
    ----------
    table : pandas.DataFrame
        The sample's particle table (``label``, ``crack_surface_per_volume_per_um`` in µm⁻¹).
    profile : pandas.DataFrame
        Its crack damage depth profile (:func:`detachment.damage.depth_profile`).
    particles_path, volume_path : str or os.PathLike
        ``particles.h5`` (``/labels``, uint32 particle labels) and ``volume.h5`` of the sample.
    sample : str
        Name in the title.

    Returns
    -------
    matplotlib.figure.Figure
        The slice with its particles coloured by crack surface per volume, and the depth profile.
    """
    _, voxel = io.read_volume_info(volume_path)
    z = int(np.argmax(io.count_per_slice(particles_path, "labels")))
    labels_z = io.read_region(particles_path, "labels", z)
    image_z = io.read_region(volume_path, io.VOLUME_DATASET, z)
    damage = dict(zip(table.label, table.crack_surface_per_volume_per_um))
    return plots.damage_figure(image_z, labels_z, damage, profile, voxel[1],
                               f"{sample}: z = {z}, particles coloured by crack surface per volume")


def diffusion_figure(table: pd.DataFrame, links: pd.DataFrame, particles_path, phases_path, volume_path):
    """Supp. Fig. 3-style figure of one particle's diffusion-length field and descent paths.

    The particle is, among the larger half (by voxels), the one with the largest detour ratio, shown
    through its widest slice; its envelope is the one the table used
    (:func:`detachment.diffusion.diffusion_table_from_files`). The paths are streamlines of the
    in-slice field from up to 12 seeded random starts among the slice's voxels in the top fifth of
    diffusion length.

    Parameters
    ----------
    table : pandas.DataFrame
        The sample's diffusion table (``label``, ``detour_ratio``).
    links : pandas.DataFrame
        The linking table (``links.csv``: ``label``, ``voxels`` and the bounding box columns).
    particles_path, phases_path, volume_path : str or os.PathLike
        ``particles.h5`` (``/labels``), ``phases.h5`` (``/phases``) and ``volume.h5`` of the sample.

    Returns
    -------
    matplotlib.figure.Figure
        An empty figure with a message when no particle has a finite diffusion length.
    """
    shape, voxel = io.read_volume_info(volume_path)
    finite = table.dropna(subset=["detour_ratio"]).merge(links[["label", "voxels"]], on="label")
    finite = finite[finite.voxels >= finite.voxels.median()]
    if not len(finite):
        return plots.empty_figure("no particle with a finite diffusion length in this sample")
    lab = int(finite.sort_values("detour_ratio").label.iloc[-1])
    crop = io.particle_crop(links[links.label == lab].iloc[0], shape, 2)
    lab_crop = io.read_region(particles_path, "labels", crop)
    phase_crop = io.read_region(phases_path, "phases", crop)
    env = refine_envelope(lab_crop == lab, (lab_crop > 0) & (lab_crop != lab), phase_crop)
    image_crop = io.read_region(volume_path, io.VOLUME_DATASET, crop)
    stats, field = particle_diffusion(env, phase_crop, voxel, lab)
    z = int(np.argmax(env.sum(axis=(1, 2))))
    f2 = field[z]
    reachable = np.isfinite(f2)
    starts = np.argwhere(reachable & (f2 >= np.percentile(f2[reachable], 80))) if reachable.any() else []
    rng = np.random.default_rng(0)
    pick = rng.choice(len(starts), min(12, len(starts)), replace=False) if len(starts) else []
    # streamlines of -grad within the slice (they stop where the nearest exit lies out of the slice)
    paths = [descent_path(f2, tuple(starts[i]), voxel[1:]) for i in pick]
    return plots.diffusion_figure(image_crop[z], f2, env[z], paths, voxel[1],
                                  f"particle {lab}: mean {stats.mean_um:.2f} µm, detour ×{stats.detour_ratio:.2f}")


def comparison_examples(images: np.ndarray, truth: np.ndarray, predictions: dict[str, np.ndarray], samples, zs):
    """Outlines of the truth and every method on up to three test slices spread over the split.

    Parameters
    ----------
    images : numpy.ndarray
        (n, y, x) float grey levels of the test slices.
    truth : numpy.ndarray
        (n, y, x) integer annotated instances, 0 = background.
    predictions : dict of str to numpy.ndarray
        Method name to its (n, y, x) integer instances on the same slices.
    samples, zs : sequence of length n
        Sample and z slice of each test slice (titles).

    Returns
    -------
    matplotlib.figure.Figure
        One row of panels per picked slice: the truth's and each method's outlines.
    """
    pick = np.linspace(0, len(images) - 1, min(3, len(images))).round().astype(int)
    panels = {"truth": truth[pick], **{k: v[pick] for k, v in predictions.items()}}
    return plots.outline_figure(images[pick], panels, [f"{samples[i]} z={zs[i]}" for i in pick])
