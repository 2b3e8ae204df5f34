"""Adapter: model.checkpoint, checked and copied as the run's model (no training)."""

from detachment.cnn.reuse import copy_model
from detachment.logs import log_to

log_to(snakemake.log[0])
copy_model(snakemake.input.weights, snakemake.output.weights, snakemake.output.meta)
