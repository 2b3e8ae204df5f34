"""Adapter: gather the diffusion parts of a sample into one table and draw a Supp. Fig. 3-style figure."""

import pandas as pd

from detachment import figures, io
from detachment.logs import log_to

log_to(snakemake.log[0])
links = pd.read_csv(snakemake.input.links)
table = io.gather_tables(list(snakemake.input.parts))
io.write_csv(snakemake.output.table, table)
fig = figures.diffusion_figure(table, links, snakemake.input.particles, snakemake.input.phases,
                               snakemake.input.volume)
io.save_figure(fig, snakemake.output.figure)
