"""Adapter: cached augmentation of the training split."""

from detachment.augment import AugmentSettings, augment_file
from detachment.logs import log_to

log_to(snakemake.log[0])
p = snakemake.params
settings = AugmentSettings(**p.settings, min_instance_area_px=p.min_area, seed=p.seed)
augment_file(snakemake.input.train, snakemake.output[0], settings, p.context_slices)
