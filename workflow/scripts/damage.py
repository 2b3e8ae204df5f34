"""Adapter: crack damage depth profile and Supp. Fig. 2-style figure of one sample."""

import numpy as np
import pandas as pd

from detachment import io, plots
from detachment.damage import depth_profile
from detachment.logs import log_to

log_to(snakemake.log[0])
table = pd.read_csv(snakemake.input.table)
profile = depth_profile(table, snakemake.params.bin_um)
io.write_csv(snakemake.output.table, profile)
labels = io.read_dataset(snakemake.input.particles, "labels")
volume, voxel = io.read_volume(snakemake.input.volume)
z = int(np.argmax((labels > 0).sum(axis=(1, 2))))
damage = dict(zip(table.label, table.crack_surface_per_volume_per_um))
fig = plots.damage_figure(volume[z], labels[z], damage, profile, voxel[1],
                          f"{snakemake.wildcards.sample}: z = {z}, particles coloured by crack surface per volume")
io.save_figure(fig, snakemake.output.figure)
