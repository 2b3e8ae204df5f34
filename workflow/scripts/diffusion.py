"""Adapter: electron diffusion lengths of every particle and a Supp. Fig. 3-style figure."""

import numpy as np
from scipy import ndimage

from detachment import io, plots
from detachment.diffusion import descent_path, diffusion_table, particle_diffusion
from detachment.logs import log_to

log_to(snakemake.log[0])
labels = io.read_dataset(snakemake.input.particles, "labels")
phases = io.read_dataset(snakemake.input.phases, "phases")
volume, voxel = io.read_volume(snakemake.input.volume)
table = diffusion_table(labels, phases, voxel)
io.write_csv(snakemake.output.table, table)
# figure: the particle with the largest detour, through its widest slice
finite = table.dropna(subset=["detour_ratio"])
if len(finite):
    lab = int(finite.sort_values("detour_ratio").label.iloc[-1])
    sl = ndimage.find_objects(labels, max_label=lab)[lab - 1]
    crop = tuple(slice(max(0, s.start - 2), min(n, s.stop + 2)) for s, n in zip(sl, labels.shape))
    env = labels[crop] == lab
    stats, field = particle_diffusion(env, phases[crop], voxel, lab)
    z = int(np.argmax(env.sum(axis=(1, 2))))
    f2 = field[z]
    starts = np.argwhere(np.isfinite(f2) & (f2 >= np.nanpercentile(f2, 80)))
    rng = np.random.default_rng(0)
    pick = rng.choice(len(starts), min(12, len(starts)), replace=False) if len(starts) else []
    paths = [descent_path(f2, tuple(starts[i])) for i in pick]
    fig = plots.diffusion_figure(volume[crop][z], f2, env[z], paths, voxel[1],
                                 f"particle {lab}: mean {stats.mean_um:.2f} µm, detour ×{stats.detour_ratio:.2f}")
else:
    fig = plots.empty_figure("no particle with a finite diffusion length in this sample")
io.save_figure(fig, snakemake.output.figure)
