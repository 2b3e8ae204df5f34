"""Adapter: statistics across samples and cells (Fig. 4 panels, Supp. Fig. 8)."""

import logging

import pandas as pd

from detachment import io, plots, stats
from detachment.checks_record import failed_checks
from detachment.logs import log_to

log_to(snakemake.log[0])
p = snakemake.params
tables = [pd.read_csv(path).merge(pd.read_csv(dpath), on="label", how="left")
          for path, dpath in zip(snakemake.input.particles, snakemake.input.diffusion)]
particles = stats.all_particles(tables, p.samples, p.cells, p.c_rates)
io.write_csv(snakemake.output.all_particles, particles)
used = stats.analysed_particles(particles, p.exclude_border)
cells = stats.by_cell(used, "c_rate", "cell", "detachment")
levels = {s: pd.read_csv(c) for s, c in zip(p.samples, snakemake.input.contact_level)}
spreads, separations, widths = ({s: t.get(column, pd.Series([float("nan")])).iloc[0] for s, t in levels.items()}
                                for column in ("spread", "separation", "edge_width"))
cells = stats.with_reading_uncertainty(cells, spreads, dict(zip(p.samples, p.cells)))
cells = stats.with_undecided_share(cells, used)
cells = stats.with_least_separation(cells, separations, dict(zip(p.samples, p.cells)))
cells = stats.with_widest_edges(cells, widths, dict(zip(p.samples, p.cells)))
consistency = dict(zip(p.samples, snakemake.input.self_consistency)) if snakemake.input.self_consistency else {}
failed = {s: failed_checks(qc, level, [consistency[s]] if s in consistency else [])
          for s, qc, level in zip(p.samples, snakemake.input.qc, snakemake.input.contact_level)}
cells = stats.with_failed_checks(cells, failed, dict(zip(p.samples, p.cells)))
for note in (stats.failed_cells_note(cells), stats.uncertain_cells_note(cells)):
    if note:
        logging.getLogger(__name__).warning(note)
by_rate = stats.by_group(used, "c_rate", "detachment", seed=p.seed)
if len(by_rate):  # particle-level columns, then the cell-level test beside them
    by_rate = by_rate.merge(stats.cell_level_test(cells, "c_rate"), on="c_rate", how="left")
io.write_csv(snakemake.output.by_cell, cells)
size = stats.by_size(used, p.size_bins)
io.write_csv(snakemake.output.by_rate, by_rate)
io.write_csv(snakemake.output.by_size, size)
correlations = stats.correlation_table(used)
io.write_csv(snakemake.output.correlations, correlations)
io.save_figure(plots.fig4(used, by_rate, size), snakemake.output.fig4)
hists = {s: pd.read_csv(h) for s, h in zip(p.samples, snakemake.input.histograms)}
fwhm = {s: pd.read_csv(f) for s, f in zip(p.samples, snakemake.input.fwhm)}
first = correlations.iloc[0]
io.save_figure(plots.fig8(used, (first.pearson_r, first.p_value), hists, fwhm), snakemake.output.fig8)
