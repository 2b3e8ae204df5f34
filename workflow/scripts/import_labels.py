"""Adapter: validate a user's instance labels and write them oriented as the imported volume."""

from detachment.io import import_labels
from detachment.logs import log_to

log_to(snakemake.log[0])
fields = snakemake.params.fields
import_labels(fields["source"], snakemake.output[0], volume_path=snakemake.input.volume,
              slab=snakemake.params.slab,
              where=f"{fields['sheet']}: sample '{snakemake.wildcards.sample}', field 'labels'")
