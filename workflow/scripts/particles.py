"""Adapter: per-particle table of one sample (results/{sample}/particles.csv), particle by particle."""

import pandas as pd

from detachment import io
from detachment.logs import log_to
from detachment.particles import particle_table_from_files

log_to(snakemake.log[0])
links = pd.read_csv(snakemake.input.links)
table = particle_table_from_files(snakemake.input.particles, snakemake.input.phases, snakemake.input.volume, links,
                                  probe=snakemake.params.probe)
io.write_csv(snakemake.output[0], table)
