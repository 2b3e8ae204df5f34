"""Adapter: per-particle table of one sample (results/{sample}/particles.csv)."""

import pandas as pd

from detachment import io
from detachment.logs import log_to
from detachment.particles import particle_table

log_to(snakemake.log[0])
labels = io.read_dataset(snakemake.input.particles, "labels")
phases = io.read_dataset(snakemake.input.phases, "phases")
volume, voxel = io.read_volume(snakemake.input.volume)
links = pd.read_csv(snakemake.input.links)
table = particle_table(labels, phases, volume, voxel, border=dict(zip(links.label, links.touches_border)))
io.write_csv(snakemake.output[0], table)
