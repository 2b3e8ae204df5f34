"""Adapter: link a sample's per-slice CNN instances into 3D particles."""

from detachment import io
from detachment.linking import LinkSettings, link_file
from detachment.logs import log_to

log_to(snakemake.log[0])
s = snakemake.params.settings
settings = LinkSettings(**{k: v for k, v in s.items() if k != "greedy_threshold"})
table = link_file(snakemake.input.slices, snakemake.output.particles, settings)
io.write_csv(snakemake.output.links, table)
