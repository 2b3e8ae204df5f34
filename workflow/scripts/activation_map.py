"""Adapter: activation maps of the trained network on a few test slices (Supp. Fig. 9a)."""

import numpy as np

from detachment import io, plots
from detachment.annotations import read_model_images, read_split
from detachment.logs import log_to
from detachment.maskrcnn import activation_map, load_model, select_device

log_to(snakemake.log[0])
device = select_device(snakemake.params.device)
model, meta = load_model(snakemake.input.weights, snakemake.input.meta, device)
images, _, samples, zs = read_split(snakemake.input.test)
inputs = read_model_images(snakemake.input.test, meta["model"].get("context_slices", 0))
pick = np.linspace(0, len(images) - 1, min(snakemake.params.n_slices, len(images))).round().astype(int)
maps = [activation_map(model, inputs[i], device) for i in pick]
fig = plots.activation_figure([images[i] for i in pick], maps, [f"{samples[i]} z={zs[i]}" for i in pick])
io.save_figure(fig, snakemake.output[0])
