"""Adapter: crack damage depth profile and Supp. Fig. 2-style figure of one sample."""

import pandas as pd

from detachment import figures, io
from detachment.damage import depth_profile
from detachment.logs import log_to

log_to(snakemake.log[0])
table = pd.read_csv(snakemake.input.table)
profile = depth_profile(table, snakemake.params.bin_um)
io.write_csv(snakemake.output.table, profile)
fig = figures.damage_figure(table, profile, snakemake.input.particles, snakemake.input.volume,
                            snakemake.wildcards.sample)
io.save_figure(fig, snakemake.output.figure)
