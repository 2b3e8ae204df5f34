"""Adapter: gather the diffusion parts of a sample into one table and draw a Supp. Fig. 3-style figure."""

import h5py
import numpy as np
import pandas as pd

from detachment import io, plots
from detachment.diffusion import descent_path, particle_diffusion
from detachment.logs import log_to
from detachment.particles import refine_envelope

log_to(snakemake.log[0])
shape, voxel = io.read_volume_info(snakemake.input.volume)
links = pd.read_csv(snakemake.input.links)
table = io.gather_tables(list(snakemake.input.parts))
io.write_csv(snakemake.output.table, table)
# figure: among the larger half of the particles, the one with the largest detour, through its widest slice
finite = table.dropna(subset=["detour_ratio"]).merge(links[["label", "voxels"]], on="label")
finite = finite[finite.voxels >= finite.voxels.median()]
if len(finite):
    lab = int(finite.sort_values("detour_ratio").label.iloc[-1])
    row = links[links.label == lab].iloc[0]
    crop = io.particle_crop(row, shape, 2)
    with h5py.File(snakemake.input.particles) as f:
        lab_crop = f["labels"][crop]
    with h5py.File(snakemake.input.phases) as f:
        phase_crop = f["phases"][crop]
    # the same envelope as the table (diffusion_table_from_files)
    env = refine_envelope(lab_crop == lab, (lab_crop > 0) & (lab_crop != lab), phase_crop)
    with h5py.File(snakemake.input.volume) as f:
        image_crop = f[io.VOLUME_DATASET][crop]
    stats, field = particle_diffusion(env, phase_crop, voxel, lab)
    z = int(np.argmax(env.sum(axis=(1, 2))))
    f2 = field[z]
    reachable = np.isfinite(f2)
    starts = np.argwhere(reachable & (f2 >= np.percentile(f2[reachable], 80))) if reachable.any() else []
    rng = np.random.default_rng(0)
    pick = rng.choice(len(starts), min(12, len(starts)), replace=False) if len(starts) else []
    # streamlines of -grad within the slice (they stop where the nearest exit lies out of the slice)
    paths = [descent_path(f2, tuple(starts[i]), voxel[1:]) for i in pick]
    fig = plots.diffusion_figure(image_crop[z], f2, env[z], paths, voxel[1],
                                 f"particle {lab}: mean {stats.mean_um:.2f} µm, detour ×{stats.detour_ratio:.2f}")
else:
    fig = plots.empty_figure("no particle with a finite diffusion length in this sample")
io.save_figure(fig, snakemake.output.figure)
