"""Every plausibility check of a phase map as the thresholding wrote it: the counts and the phase model's checks
(:mod:`detachment.plausibility`) with the two measures read on the map and the volume it was read from, the
edge halo (:mod:`detachment.edge_halo`), the z blur (:mod:`detachment.z_blur`) and the ring artefacts
(:mod:`detachment.rings`). One function, so that the
workflow's threshold step, the self-consistency reading and the benchmarks check a map the same way."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from . import edge_halo, plausibility, rings, shading, z_blur


@dataclass
class MapChecks:
    """The checks of a phase map and the measures behind the last two.

    Attributes
    ----------
    table : pandas.DataFrame
        :func:`detachment.plausibility.check_phase_map`'s table (``phase_qc.csv``).
    halo : detachment.edge_halo.EdgeHalo
        The electrolyte beside the particles against the open electrolyte.
    steps : detachment.z_blur.ZBlur
        The step widths along z and within the slices.
    ring : detachment.rings.Rings, optional
        The ring artefacts read on the volume.
    """

    table: pd.DataFrame
    halo: edge_halo.EdgeHalo
    steps: z_blur.ZBlur
    ring: rings.Rings | None = None


def check_map_files(result, shade, phases_path, volume_path) -> MapChecks:
    """Every check of the phase map ``phases_path`` read from ``volume_path``.

    Parameters
    ----------
    result : detachment.threshold.ThresholdResult
        The thresholding that wrote the map (counts per slice, per-phase table, blur, tilted collector).
    shade : detachment.shading.Shading
        The shading it read (:func:`detachment.shading.threshold_flattened`).
    phases_path, volume_path : str or os.PathLike
        ``phases.h5`` and the volume.

    Returns
    -------
    MapChecks
    """
    halo = edge_halo.measure_map(phases_path, volume_path, result.fwhm)
    ring = rings.measure_file(volume_path, shading.contrast_from_fwhm(result.fwhm))
    steps = z_blur.measure_files(phases_path, volume_path)
    # where the forward model followed a z blur apart from the slices', the point spread along z is checked rather
    # than the steps' ratio, which bounds a z blur it would not follow: the flat edges' σ (within the slices)
    # times the model's z factor, so that both axes meet the same bound on the same measure
    z_factor = result.refine_z_factor
    z_sigma = result.blur_sigma_vox * z_factor if np.isfinite(z_factor) and z_factor != 1 else None
    table = plausibility.check_phase_map(plausibility.PhaseCounts(result.counts_per_slice), result.fwhm,
                                         result.blur_sigma_vox, result.tilted_collector_top, shade.ratio,
                                         halo.undershoot, steps.ratio, steps.reading, z_sigma,
                                         z_factor if z_sigma is not None else None, ring.ratio)
    return MapChecks(table, halo, steps, ring)
