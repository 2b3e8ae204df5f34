"""Adapter: linking evaluation of all phantom samples in one table and figure."""

import pandas as pd

from detachment import io, plots
from detachment.logs import log_to

log_to(snakemake.log[0])
table = pd.concat([pd.read_csv(p) for p in snakemake.input], ignore_index=True)
io.write_csv(snakemake.output.table, table)
io.save_figure(plots.linking_figure(table), snakemake.output.figure)
