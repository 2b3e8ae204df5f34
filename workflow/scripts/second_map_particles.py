"""Adapter: per-particle second map and electron density moments (results/{sample}/second_map_particles.csv)."""

import pandas as pd

from detachment import io
from detachment.logs import log_to
from detachment.second_map import particle_map_table

log_to(snakemake.log[0])
links = pd.read_csv(snakemake.input.links)
table = particle_map_table(snakemake.input.particles, snakemake.input.phases, snakemake.input.volume,
                           snakemake.input.second_map, links)
io.write_csv(snakemake.output[0], table)
