"""Adapter: crack damage depth profile and Supp. Fig. 2-style figure of one sample."""

import h5py
import numpy as np
import pandas as pd

from detachment import io, plots
from detachment.damage import depth_profile
from detachment.logs import log_to

log_to(snakemake.log[0])
table = pd.read_csv(snakemake.input.table)
profile = depth_profile(table, snakemake.params.bin_um)
io.write_csv(snakemake.output.table, profile)
_, voxel = io.read_volume_info(snakemake.input.volume)
with h5py.File(snakemake.input.particles) as f:
    d = f["labels"]
    counts = np.concatenate([(d[z0:z1] > 0).sum(axis=(1, 2)) for z0, z1 in io.slab_ranges(d.shape[0], 16)])
    z = int(np.argmax(counts))
    labels_z = d[z]
with h5py.File(snakemake.input.volume) as f:
    image_z = f[io.VOLUME_DATASET][z]
damage = dict(zip(table.label, table.crack_surface_per_volume_per_um))
fig = plots.damage_figure(image_z, labels_z, damage, profile, voxel[1],
                          f"{snakemake.wildcards.sample}: z = {z}, particles coloured by crack surface per volume")
io.save_figure(fig, snakemake.output.figure)
