"""Adapter: one phantom sample's per-particle detachment and crack surface against its truth."""

import pandas as pd

from detachment import io, validation
from detachment.contact_level import reading_settings
from detachment.logs import log_to
from detachment.particles import particle_table_from_files

log_to(snakemake.log[0])
truth_table = pd.read_csv(snakemake.input.truth_table)
truth = io.read_dataset(snakemake.input.truth, "labels")
pred = io.read_dataset(snakemake.input.particles, "labels")
# the truth's own particles taken as the segmentation's masks and measured as the pipeline measures the CNN's:
# envelopes refined on the pipeline's phase map (unrefined, a voxel that partial volume makes solid beside a
# particle would count as a contact with another particle, a reading the pipeline never makes), at the
# contact level fitted on the pipeline's particles (a property of the volume, not of the envelopes)
true_measured = particle_table_from_files(snakemake.input.truth, snakemake.input.phases, snakemake.input.volume,
                                          validation.links_from_labels(truth), probe=snakemake.params.probe,
                                          gap_from_intensity=snakemake.params.gap_from_intensity,
                                          **reading_settings(snakemake.input.contact_level, snakemake.params.contact_level,
                                                             snakemake.params.partial_volume),
                                          refine=True)
pipeline = pd.read_csv(snakemake.input.table)
pairs = validation.matched_particles(truth, pred)
table = pd.concat([validation.compare_particles(truth_table, true_measured, None, "true"),
                   validation.compare_particles(truth_table, pipeline, pairs, "pipeline")], ignore_index=True)
table.insert(0, "sample", snakemake.wildcards.sample)
table["n_truth"] = len(truth_table)
io.write_csv(snakemake.output[0], table)
