"""Adapter: gather the z-slabs of a sample into cnn/slices.h5 and cnn/slices.csv."""

from detachment.inference import gather_slabs
from detachment.logs import log_to

log_to(snakemake.log[0])
gather_slabs(list(snakemake.input.slabs), snakemake.input.volume, snakemake.output.labels, snakemake.output.table)
