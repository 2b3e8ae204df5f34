"""Adapter: statistics across samples and cells (Fig. 4 panels, Supp. Fig. 8)."""

import pandas as pd

from detachment import io, plots
from detachment.logs import log_to
from detachment.stats import by_cell, by_group, by_size, cell_level_test, correlation

log_to(snakemake.log[0])
p = snakemake.params
tables = []
for sample, rate, cell, path, dpath in zip(p.samples, p.c_rates, p.cells, snakemake.input.particles,
                                           snakemake.input.diffusion):
    t = pd.read_csv(path).merge(pd.read_csv(dpath), on="label", how="left")
    t.insert(0, "sample", sample)
    t.insert(1, "cell", cell)
    t.insert(2, "c_rate", rate)
    tables.append(t)
# a sample with no particle contributes no rows (its empty table would turn every column to object dtype)
particles = pd.concat([t for t in tables if len(t)] or tables[:1], ignore_index=True)
io.write_csv(snakemake.output.all_particles, particles)
if "touches_border" in particles:  # an empty sample's table leaves the column as object dtype
    particles["touches_border"] = particles.touches_border.astype("boolean").fillna(False).astype(bool)
used = particles[~particles.touches_border] if p.exclude_border and "touches_border" in particles else particles
cells = by_cell(used, "c_rate", "cell", "detachment")
by_rate = by_group(used, "c_rate", "detachment", seed=p.seed)
if len(by_rate):  # particle-level columns, then the cell-level test beside them
    by_rate = by_rate.merge(cell_level_test(cells, "c_rate"), on="c_rate", how="left")
io.write_csv(snakemake.output.by_cell, cells)
size = by_size(used, p.size_bins)
io.write_csv(snakemake.output.by_rate, by_rate)
io.write_csv(snakemake.output.by_size, size)
rows = []
for x, y in (("detachment", "electron_density_mean"), ("detachment", "nmc_high_fraction"),
             ("detachment", "mean_um"), ("detachment", "diameter_um"), ("crack_surface_per_volume_per_um", "height_um")):
    r, pv = correlation(used[x], used[y])
    rows.append({"x": x, "y": y, "pearson_r": r, "p_value": pv, "n": int(used[[x, y]].dropna().shape[0])})
io.write_csv(snakemake.output.correlations, pd.DataFrame(rows))
io.save_figure(plots.fig4(used, by_rate, size), snakemake.output.fig4)
hists = {s: pd.read_csv(h) for s, h in zip(p.samples, snakemake.input.histograms)}
fwhm = {s: pd.read_csv(f) for s, f in zip(p.samples, snakemake.input.fwhm)}
io.save_figure(plots.fig8(used, (rows[0]["pearson_r"], rows[0]["p_value"]), hists, fwhm), snakemake.output.fig8)
