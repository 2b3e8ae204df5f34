"""Adapter: detachment / crack-surface errors of all phantom samples and the planted C-rate effect."""

import pandas as pd

from detachment import io, plots, validation
from detachment.logs import log_to

log_to(snakemake.log[0])
samples = list(snakemake.params.samples)
per_particle = pd.concat([pd.read_csv(p) for p in snakemake.input.evals], ignore_index=True)
n_truth = {s: int(g.n_truth.iloc[0]) for s, g in per_particle.groupby("sample")}
table = validation.summarize(per_particle, n_truth)
truth_tables = {s: pd.read_csv(p) for s, p in zip(samples, snakemake.input.truth_tables)}
rates = dict(zip(samples, snakemake.params.c_rates))
# the planted effect found on the truth's own particles (thresholding and surface estimator only) and on the
# pipeline's (every particle it found, as the statistics rule sees them)
measured = {"true": validation.true_particle_tables(per_particle),
            "pipeline": {s: pd.read_csv(p) for s, p in zip(samples, snakemake.input.tables)}}
effects = {src: validation.effect_size(truth_tables, m, rates, exclude_border=snakemake.params.exclude_border)
           for src, m in measured.items()}
rows = [{"sample": "all", "source": src, **e} for src, e in effects.items() if e]
if rows:
    table = pd.concat([table, pd.DataFrame(rows)], ignore_index=True)
io.write_csv(snakemake.output.table, table)
io.save_figure(plots.validation_figure(per_particle, effects["pipeline"], effects["true"]), snakemake.output.figure)
