"""Adapter: one phantom cell's headline metrics against its truth (long rows of robustness.csv)."""

import pandas as pd

from detachment import io, robustness
from detachment.logs import log_to

log_to(snakemake.log[0])
p = snakemake.params
metrics = robustness.sample_metrics(
    io.read_dataset(snakemake.input.truth, "labels"), io.read_dataset(snakemake.input.truth, "phases"),
    io.read_dataset(snakemake.input.phases, "phases"), io.read_dataset(snakemake.input.slices, "labels"),
    io.read_dataset(snakemake.input.particles, "labels"), pd.read_csv(snakemake.input.science),
    p.min_area, p.iou_threshold)
metrics["phase_map_plausible"] = float(pd.read_csv(snakemake.input.qc).passed.all())
metrics["contact_reading_plausible"] = robustness.contact_reading_plausible(snakemake.input.contact_level)
io.write_csv(snakemake.output[0], robustness.long_table(p.preset, snakemake.wildcards.sample, p.split, metrics))
