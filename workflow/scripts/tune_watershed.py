"""Adapter: tune the watershed baseline on the train and val slices only."""

import json

import numpy as np

from detachment import io
from detachment.annotations import read_split
from detachment.logs import log_to
from detachment.watershed import best_per_marker, default_grid, foreground_guess, tune

log_to(snakemake.log[0])
s = snakemake.params.settings
train, val = read_split(snakemake.input.train), read_split(snakemake.input.val)
images = np.concatenate([train[0], val[0]])
masks = np.concatenate([train[1], val[1]])
grid = default_grid(*foreground_guess(images))
grid["markers"] = s["markers"]
best, table = tune(images, masks, grid, s["iou_threshold"], snakemake.params.min_area, s["search"])
io.write_csv(snakemake.output.table, table)
result = {"best": best.__dict__, "per_marker": {k: v.__dict__ for k, v in best_per_marker(table).items()},
          "grid": grid, "search": s["search"], "tuned_on": ["train", "val"], "n_slices": len(images)}
with io.atomic_output(snakemake.output.params) as tmp:
    tmp.write_text(json.dumps(result, indent=2))
