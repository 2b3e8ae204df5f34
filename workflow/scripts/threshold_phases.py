"""Adapter: phase thresholding of one sample (phases.h5, histogram, FWHMs, Supp. Fig. 1 figure, checks)."""

import logging
import math
import shutil
from pathlib import Path

from detachment import edge_halo, halo_removal, io, map_checks, plausibility, plots, shading, z_blur
from detachment.logs import log_to
from detachment.phase_fit import PhaseModelError
from detachment.threshold import ThresholdSettings, histogram_table

log_to(snakemake.log[0])
settings = ThresholdSettings(**snakemake.params.settings)
on_implausible = snakemake.config["threshold"]["on_implausible"]
try:
    result, shade, _ = halo_removal.threshold_halo_free(snakemake.input.volume, snakemake.output.phases, settings,
                                                       workers=snakemake.threads)
except PhaseModelError as e:
    # the data do not support the informed model (no collector slab, ...): stop, or go on with gmm
    plausibility.enforce_model(e, snakemake.wildcards.sample, on_implausible)
    settings.method = "gmm"
    result, shade, _ = halo_removal.threshold_halo_free(snakemake.input.volume, snakemake.output.phases, settings,
                                                       workers=snakemake.threads)
io.write_csv(snakemake.output.histogram, histogram_table(result))
io.write_csv(snakemake.output.fwhm, result.fwhm)

checked = map_checks.check_map_files(result, shade, snakemake.output.phases, snakemake.input.volume)
halo, steps, checks = checked.halo, checked.steps, checked.table
logging.getLogger("threshold_phases").info(
    "edge halo: electrolyte 1-%d voxels from NMC less its slice's open electrolyte, over the contrast: %s "
    "(undershoot %.3f; voxels read %s)", edge_halo.NEAR_VOX, " ".join(f"{v:+.3f}" for v in halo.profile),
    halo.undershoot, " ".join(str(int(v)) for v in halo.voxels))
logging.getLogger("threshold_phases").info(
    "step widths on %s: along z %.3f voxels (%d edges), within the slices %.3f (%d): ratio %.3f%s",
    "the NMC / background edges the surface crosses nearly square" if steps.reading == z_blur.SQUARE else
    "every NMC / background edge (those crossed nearly square give no ratio)",
    steps.width_z, steps.edges_z, steps.width_yx, steps.edges_yx, steps.ratio,
    f" (too few edges along z, or steps within the slices no wider than {z_blur.MIN_WIDTH_YX} voxel, too sharp "
    "to fit: the z blur is not checked)" if math.isnan(steps.ratio) else "")
logging.getLogger("threshold_phases").info(
    "ring artefacts about the slices' centre: %.4f grey levels shared by the two halves along z (profiles "
    "correlated r %.2f), %.3f of the CBD - electrolyte contrast", checked.ring.rms, checked.ring.correlation,
    checked.ring.ratio)
z = result.most_solid_slice
phase_slice = io.read_region(snakemake.output.phases, "phases", z)
shape, voxel = io.read_volume_info(snakemake.input.volume)
with shading.open_flat(snakemake.output.phases, snakemake.input.volume) as (_, grey):
    image = grey[z]  # as the phases were read
y = shape[1] // 2
section = plots.SideSection(io.read_region(snakemake.output.phases, "phases", (slice(None), y)), y,
                            result.collector_heights(y, shape[2]), tuple(voxel))
fig = plots.phase_figure(image, phase_slice, result.histogram.counts, result.histogram.edges,
                         result.model.thresholds, result.model.names, result.fwhm, voxel[1],
                         title=plots.phase_title(snakemake.wildcards.sample, z, result.model.method,
                                                 result.unresolved, result.nmc_split, result.layer,
                                                 result.blur_sigma_vox, result.blur_sigma_se_vox,
                                                 result.collector_tilt_deg, halo.undershoot, steps.ratio,
                                                 steps.reading, result.refine_z_factor,
                                                 halo_removal.recorded(snakemake.output.phases)),
                         domain_split=result.domain_split, edges=result.edges, section=section)
io.save_figure(fig, snakemake.output.figure)

io.write_csv(snakemake.output.qc, checks)
if not checks.passed.all():
    # a failed job's outputs are removed: keep the figure beside the log for the user to look at
    kept = Path(snakemake.log[0]).with_suffix(".png")
    shutil.copyfile(snakemake.output.figure, kept)
    plausibility.enforce(checks, snakemake.wildcards.sample, on_implausible, figure_hint=str(kept))
