"""Adapter: train Mask R-CNN, from scratch or fine-tuning model.checkpoint (resumes from
results/model/checkpoints after a kill); the training scale is recorded in the metadata."""

import pandas as pd

from detachment import io, plots
from detachment.cnn.scale import training_scale
from detachment.inference import record_probe_diameter
from detachment.logs import log_to
from detachment.maskrcnn import train_from_files

log_to(snakemake.log[0])
p = snakemake.params
train_cfg = {k: v for k, v in p.train.items() if k not in ("gpus", "runtime_min")}
voxels = {s: io.read_volume_info(v)[1] for s, v in zip(p.samples, snakemake.input.volumes)}
rows = train_from_files(snakemake.input.tiles, snakemake.input.val, snakemake.output.weights,
                        snakemake.output.meta, p.model, {**train_cfg, "seed": p.seed}, p.checkpoints,
                        scale=training_scale(snakemake.input.split, voxels),
                        init_from=getattr(snakemake.input, "init", None))
# the particle size the trained model finds on its own volumes, for infer.rescale: particle_size
record_probe_diameter(snakemake.output.weights, snakemake.output.meta, snakemake.input.volumes,
                      threads=snakemake.threads)
table = pd.DataFrame(rows)
io.write_csv(snakemake.output.log_table, table)
io.save_figure(plots.loss_curve_figure(table), snakemake.output.figure)
