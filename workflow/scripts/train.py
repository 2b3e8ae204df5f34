"""Adapter: train Mask R-CNN (resumes from results/model/checkpoints after a kill)."""

import pandas as pd

from detachment import io, plots
from detachment.logs import log_to
from detachment.maskrcnn import train_from_files

log_to(snakemake.log[0])
p = snakemake.params
train_cfg = {k: v for k, v in p.train.items() if k not in ("gpus", "runtime_min")}
rows = train_from_files(snakemake.input.tiles, snakemake.input.val, snakemake.output.weights,
                        snakemake.output.meta, p.model, {**train_cfg, "seed": p.seed}, p.checkpoints)
table = pd.DataFrame(rows)
io.write_csv(snakemake.output.log_table, table)
io.save_figure(plots.loss_curve_figure(table), snakemake.output.figure)
