"""Adapter: gather the scatter parts of a per-particle table, sorted by label."""

from detachment import io
from detachment.logs import log_to

log_to(snakemake.log[0])
io.write_csv(snakemake.output[0], io.gather_tables(list(snakemake.input)))
