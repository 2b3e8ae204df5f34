"""Adapter: the grey level separating an electrolyte gap from CBD beside the particles of one sample."""

import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from detachment import io, plausibility, plots
from detachment.contact_level import (
    blur_sigma_from_qc,
    edge_width_from_map,
    map_is_refined,
    reads_through_layer,
    sharpening_weight,
)
from detachment.logs import log_to
from detachment.particles import contact_level_from_files

log_to(snakemake.log[0])
links = pd.read_csv(snakemake.input.links)
on_map = not snakemake.params.gap_from_intensity
if on_map and not map_is_refined(snakemake.input.phases):
    logging.getLogger(__name__).warning(
        "%s: the phase map was not refined against the blurred forward model (phases.h5 attribute psf_refine), "
        "so its codes beside the particles are a voxel-by-voxel threshold that misreads one-voxel coats and gaps; "
        "contacts are read on it all the same (science.contact_gap_from_intensity: false). Set "
        "science.contact_gap_from_intensity: true to read them on the grey levels instead.", snakemake.input.phases)
sigma = blur_sigma_from_qc(snakemake.input.qc)
width = edge_width_from_map(snakemake.input.phases, snakemake.input.qc)
weight = sharpening_weight(width) if snakemake.params.sharpen else 0.0
spill_sigma = float(width) if snakemake.params.spill and np.isfinite(width) else 0.0
logging.getLogger(__name__).info("point-spread σ %.3f voxels (phase_qc.csv), steps along the grid %.3f voxels wide "
                                 "(phases.h5 edge_width_vox): grey levels sharpened with weight %.3f voxels², the "
                                 "particles' spill through σ %.3f subtracted, before the level is fitted", sigma,
                                 width, weight, spill_sigma)
fit, values, midpoint = contact_level_from_files(snakemake.input.particles, snakemake.input.phases,
                                                 snakemake.input.volume, links,
                                                 max_spread=snakemake.params.max_spread,
                                                 partition=snakemake.params.partition, sharpen=weight,
                                                 spill_sigma=spill_sigma, on_map=on_map)
logging.getLogger(__name__).info("contact level %.4f (%s) from %d faces: gap %.3f ± %.3f (weight %.2f), "
                                 "CBD %.3f ± %.3f", fit.level, "fitted" if fit.fitted else "fallback",
                                 fit.n_faces, fit.gap_mean, fit.gap_sigma, fit.gap_weight, fit.cbd_mean,
                                 fit.cbd_sigma)
logging.getLogger(__name__).info("gap and CBD components separated by Ashman's D %.2f (at least %.1f needed to read "
                                 "the faces)", fit.separation, plausibility.MIN_CONTACT_SEPARATION)
logging.getLogger(__name__).info("open electrolyte's spread %.4f: the gap faces spread %.2f times as wide (bound %.2f)",
                                 fit.electrolyte_sigma, fit.gap_width_ratio, plausibility.MAX_GAP_WIDTH_RATIO)
p = snakemake.params
through = reads_through_layer(fit, p.partial_volume)
if through:
    logging.getLogger(__name__).warning(
        "the voxels across the faces hold mixtures (the gap faces spread %.2f times as wide as the open electrolyte, "
        "bound %.2f: partial volume or blur): a CBD layer one or two voxels thick between a particle and electrolyte "
        "reads as the particle's surface around it reads (a voxel the particle's surface cuts looks like CBD, and "
        "so does a thin coat); particles.csv detachment_ambiguous counts the faces read as electrolyte so: %.1f %% "
        "of the background faces "
        "(science.contact_partial_volume: %s)", fit.gap_width_ratio, plausibility.MAX_GAP_WIDTH_RATIO,
        100 * fit.gap_share_through_layer, p.partial_volume)
if fit.reading == "map":
    logging.getLogger(__name__).info(
        "contacts read on the phase map: %.1f %% of the faces electrolyte; the fitted level reads %.1f %% "
        "(contact_level.csv: spread, the reading's uncertainty)", 100 * fit.gap_share_map, 100 * fit.gap_share)
elif fit.reading == "deconvolved":
    logging.getLogger(__name__).warning(
        "the fitted level reads %.0f %% of the faces as electrolyte, the deconvolved reading %.0f %%: the level's "
        "two Gaussians did not separate gap from CBD; contacts are read deconvolved (outside + inside - the "
        "particle's solid grey level) against the void/CBD midpoint %.4f. The disagreement is the reading's "
        "uncertainty (contact_level.csv: spread).", 100 * fit.gap_share, 100 * fit.gap_share_deconvolved, fit.level)
table = fit.to_frame()
checks = (fit.spread, p.max_ambiguity, sigma, fit.gap_width_ratio, through, fit.gap_share_through_layer, fit.separation)
table["ambiguous"] = plausibility.contacts_ambiguous(*checks)
table["separation_weak"] = plausibility.weakly_separated(fit.separation)
table["edge_width"] = width
table["edges_wide"] = plausibility.edges_wide(width)
io.write_csv(snakemake.output.table, table)
io.save_figure(plots.contact_level_figure(values, fit, midpoint, title=snakemake.wildcards.sample,
                                          through_layer=through, failed=plausibility.ambiguity_checks_failed(*checks),
                                          on_ambiguous=snakemake.config["science"]["on_ambiguous_contacts"],
                                          edge_width=width),
               snakemake.output.figure)
if table.ambiguous.iloc[0]:
    # a failed job's outputs are removed: keep the figure beside the log for the user to look at
    kept = Path(snakemake.log[0]).with_suffix(".png")
    shutil.copyfile(snakemake.output.figure, kept)
    plausibility.enforce_contacts(fit.spread, p.max_ambiguity, snakemake.wildcards.sample,
                                  snakemake.config["science"]["on_ambiguous_contacts"], figure_hint=str(kept),
                                  blur_sigma=sigma, reading=fit.reading, undecided=fit.ambiguous_faces,
                                  width_ratio=fit.gap_width_ratio, through_layer=through,
                                  through_share=fit.gap_share_through_layer, separation=fit.separation)
else:
    plausibility.warn_weak_separation(fit.separation, snakemake.wildcards.sample, snakemake.output.figure)
    plausibility.warn_wide_edges(width, snakemake.wildcards.sample, snakemake.output.figure)
