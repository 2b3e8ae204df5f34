"""Adapter: electron density vs second map per sample (table and Supp. Fig. 7-style figure)."""

import numpy as np
import pandas as pd

from detachment import io, plots
from detachment.logs import log_to
from detachment.second_map import (
    correlations,
    figure_slice,
    read_second_map_info,
    read_slices,
    used_particles,
)

log_to(snakemake.log[0])
p = snakemake.params
rows, panels = [], []
for sample, rate, cell, planted, tpath, vpath, mpath in zip(p.samples, p.c_rates, p.cells, p.planted,
                                                            snakemake.input.tables, snakemake.input.volumes,
                                                            snakemake.input.maps):
    table = pd.read_csv(tpath)
    found = correlations(table, exclude_border=p.exclude_border, seed=p.seed)
    rows += [{"sample": sample, "cell": cell, "c_rate": rate, **r,
              "planted_pearson_r": np.nan if planted is None else planted} for r in found]
    shape, voxel = io.read_volume_info(vpath)
    _, quantity = read_second_map_info(mpath)
    used = used_particles(table, p.exclude_border)
    z = figure_slice(used, voxel[0], shape[0])
    density, second = read_slices(vpath, mpath, z)
    panels.append({"sample": sample, "z": z, "density": density, "second_map": second, "voxel_size_um": voxel[1],
                   "quantity": quantity, "particles": used, "rows": {r["level"]: r for r in found},
                   "planted": planted})
io.write_csv(snakemake.output.table, pd.DataFrame(rows))
io.save_figure(plots.second_map_figure(panels), snakemake.output.figure)
