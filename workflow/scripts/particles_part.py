"""Adapter: per-particle table rows of one scatter part of a sample's particles."""

import pandas as pd

from detachment import io
from detachment.contact_level import reading_settings
from detachment.logs import log_to
from detachment.particles import particle_table_from_files

log_to(snakemake.log[0])
links = io.part_rows(pd.read_csv(snakemake.input.links), snakemake.wildcards.scatteritem)
table = particle_table_from_files(snakemake.input.particles, snakemake.input.phases, snakemake.input.volume, links,
                                  probe=snakemake.params.probe,
                                  gap_from_intensity=snakemake.params.gap_from_intensity,
                                  partition=snakemake.params.partition,
                                  **reading_settings(snakemake.input.contact_level, snakemake.params.contact_level,
                                                     snakemake.params.partial_volume))
io.write_csv(snakemake.output[0], table)
