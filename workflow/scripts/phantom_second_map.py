"""Adapter: the phantom's co-registered Ni valence map (results/{sample}/second_map.h5)."""

from detachment import io
from detachment.logs import log_to
from detachment.phantom import PhantomParams, noise_free_density, valence_map
from detachment.second_map import write_second_map

log_to(snakemake.log[0])
sample = snakemake.wildcards.sample
params = PhantomParams.from_dict(snakemake.params.phantom, where=f"phantom parameters of {sample}")
_, voxel = io.read_volume_info(snakemake.input.volume)
labels = io.read_dataset(snakemake.input.truth, "labels")
phases = io.read_dataset(snakemake.input.truth, "phases")
# planted against the density without noise: the grey level's noise attenuates what a measurement finds
values = valence_map(noise_free_density(phases, params), labels, phases, params, seed=snakemake.params.seed)
r = params.valence_density_correlation
write_second_map(snakemake.output[0], values, voxel, source=f"phantom seed={snakemake.params.seed}",
                 quantity="Ni valence", slab=snakemake.params.slab, attrs={"planted_pearson_r": r})
