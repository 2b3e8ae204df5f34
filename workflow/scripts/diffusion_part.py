"""Adapter: electron diffusion lengths of one scatter part of a sample's particles."""

import pandas as pd

from detachment import io
from detachment.diffusion import diffusion_table_from_files
from detachment.logs import log_to

log_to(snakemake.log[0])
_, voxel = io.read_volume_info(snakemake.input.volume)
links = io.part_rows(pd.read_csv(snakemake.input.links), snakemake.wildcards.scatteritem)
io.write_csv(snakemake.output[0], diffusion_table_from_files(snakemake.input.particles, snakemake.input.phases,
                                                             links, voxel))
