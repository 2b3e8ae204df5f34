"""Adapter: split labelled slices into train / val / test HDF5 files without leakage."""

from detachment import io
from detachment.annotations import SplitSettings, build_splits
from detachment.logs import log_to

log_to(snakemake.log[0])
settings = SplitSettings(**snakemake.params.settings, seed=snakemake.params.seed)
out = snakemake.output
table = build_splits(snakemake.params.samples, list(snakemake.input.volumes), list(snakemake.input.labels),
                     settings, {"train": out.train, "val": out.val, "test": out.test})
io.write_csv(out.table, table)
