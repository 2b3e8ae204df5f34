"""Adapter: generate one phantom sample and its ground truth."""

from detachment.logs import log_to
from detachment.phantom import PhantomParams, generate_phantom, write_phantom

log_to(snakemake.log[0])
params = PhantomParams.from_dict(snakemake.params.phantom, where=f"phantom parameters of {snakemake.wildcards.sample}")
phantom = generate_phantom(params, seed=snakemake.params.seed)
write_phantom(phantom, snakemake.output.volume, snakemake.output.truth, snakemake.output.table)
