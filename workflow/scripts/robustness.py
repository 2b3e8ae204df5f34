"""Adapter: every phantom cell's metrics and the planted C-rate effect per preset and split; the figure."""

import pandas as pd

from detachment import io, plots, robustness
from detachment.logs import log_to

log_to(snakemake.log[0])
p = snakemake.params
samples = pd.DataFrame({"sample": p.samples, "preset": p.presets, "split": p.splits, "c_rate": p.c_rates})
truth = {s: pd.read_csv(f) for s, f in zip(p.samples, snakemake.input.truth_tables)}
measured = {s: pd.read_csv(f) for s, f in zip(p.samples, snakemake.input.tables)}
table = pd.concat([*(pd.read_csv(f) for f in snakemake.input.evals),
                   robustness.effect_rows(samples, truth, measured, p.exclude_border)], ignore_index=True)
io.write_csv(snakemake.output.table, table)
io.save_figure(plots.robustness_figure(table), snakemake.output.figure)
