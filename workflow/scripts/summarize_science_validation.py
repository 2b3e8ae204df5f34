"""Adapter: detachment / crack-surface errors of all phantom samples and the planted C-rate effect."""

import pandas as pd

from detachment import io, plots, validation
from detachment.logs import log_to

log_to(snakemake.log[0])
samples = list(snakemake.params.samples)
per_particle = pd.concat([pd.read_csv(p) for p in snakemake.input.evals], ignore_index=True)
n_truth = {s: int(g.n_truth.iloc[0]) for s, g in per_particle.groupby("sample")}
table = validation.summarize(per_particle, n_truth)
effect = validation.effect_size(
    {s: pd.read_csv(p) for s, p in zip(samples, snakemake.input.truth_tables)},
    {s: pd.read_csv(p) for s, p in zip(samples, snakemake.input.tables)},
    dict(zip(samples, snakemake.params.c_rates)), exclude_border=snakemake.params.exclude_border)
if effect:
    table = pd.concat([table, pd.DataFrame([{"sample": "all", "source": "pipeline", **effect}])],
                      ignore_index=True)
io.write_csv(snakemake.output.table, table)
io.save_figure(plots.validation_figure(per_particle, effect), snakemake.output.figure)
