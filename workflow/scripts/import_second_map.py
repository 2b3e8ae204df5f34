"""Adapter: validate a user's co-registered second map and write it by the contract."""

from detachment.logs import log_to
from detachment.second_map import import_second_map

log_to(snakemake.log[0])
fields = snakemake.params.fields
import_second_map(fields["source"], snakemake.output[0], dataset=fields["dataset"],
                  volume_path=snakemake.input.volume, slab=snakemake.params.slab,
                  where=f"{fields['sheet']}: sample '{snakemake.wildcards.sample}', field 'second_map'")
