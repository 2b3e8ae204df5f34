"""Adapter: the grey level separating an electrolyte gap from CBD beside the particles of one sample."""

import logging

import pandas as pd

from detachment import io, plots
from detachment.logs import log_to
from detachment.particles import contact_level_from_files

log_to(snakemake.log[0])
links = pd.read_csv(snakemake.input.links)
fit, values, midpoint = contact_level_from_files(snakemake.input.particles, snakemake.input.phases,
                                                 snakemake.input.volume, links)
logging.getLogger(__name__).info("contact level %.4f (%s) from %d faces: gap %.3f ± %.3f (weight %.2f), "
                                 "CBD %.3f ± %.3f", fit.level, "fitted" if fit.fitted else "fallback",
                                 fit.n_faces, fit.gap_mean, fit.gap_sigma, fit.gap_weight, fit.cbd_mean,
                                 fit.cbd_sigma)
io.write_csv(snakemake.output.table, fit.to_frame())
io.save_figure(plots.contact_level_figure(values, fit, midpoint, title=snakemake.wildcards.sample),
               snakemake.output.figure)
