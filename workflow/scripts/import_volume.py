"""Adapter: validate a user's tomogram and write it in the project's HDF5 contract (collector at z = 0)."""

from detachment.io import import_volume
from detachment.logs import log_to

log_to(snakemake.log[0])
fields = snakemake.params.fields
import_volume(fields["source"], snakemake.output.volume, dataset=fields["dataset"],
              voxel_size_um=fields["voxel_size_um"], slab=snakemake.params.slab,
              collector_side=fields["collector_side"],
              where=f"{fields['sheet']}: sample '{snakemake.wildcards.sample}', field 'collector_side'")
