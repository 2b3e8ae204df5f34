"""Adapter: phase thresholding of one sample (phases.h5, histogram, FWHMs, Supp. Fig. 1 figure, checks)."""

import shutil
from pathlib import Path

from detachment import io, plausibility, plots
from detachment.logs import log_to
from detachment.threshold import ThresholdSettings, histogram_table, threshold_volume

log_to(snakemake.log[0])
settings = ThresholdSettings(**snakemake.params.settings)
result = threshold_volume(snakemake.input.volume, snakemake.output.phases, settings)
io.write_csv(snakemake.output.histogram, histogram_table(result))
io.write_csv(snakemake.output.fwhm, result.fwhm)

z = result.most_solid_slice
phase_slice = io.read_region(snakemake.output.phases, "phases", z)
_, voxel = io.read_volume_info(snakemake.input.volume)
image = io.read_region(snakemake.input.volume, io.VOLUME_DATASET, z)
fig = plots.phase_figure(image, phase_slice, result.histogram.counts, result.histogram.edges,
                         result.model.thresholds, result.model.names, result.fwhm, voxel[1],
                         title=f"{snakemake.wildcards.sample}: slice z={z}, {settings.method}")
io.save_figure(fig, snakemake.output.figure)

checks = plausibility.check_phase_map(plausibility.PhaseCounts(result.counts_per_slice))
io.write_csv(snakemake.output.qc, checks)
if not checks.passed.all():
    # a failed job's outputs are removed: keep the figure beside the log for the user to look at
    kept = Path(snakemake.log[0]).with_suffix(".png")
    shutil.copyfile(snakemake.output.figure, kept)
    plausibility.enforce(checks, snakemake.wildcards.sample, snakemake.config["threshold"]["on_implausible"],
                         figure_hint=str(kept))
