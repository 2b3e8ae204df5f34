"""Adapter: CNN (from cnn/slices.h5) and tuned watershed on the test slices; metrics, summary, figures."""

import json

from detachment import compare, figures, io, plots
from detachment.annotations import read_split
from detachment.logs import log_to

log_to(snakemake.log[0])
images, truth, samples, zs = read_split(snakemake.input.test)
slices = dict(zip(snakemake.params.samples, snakemake.input.slices))
cnn = compare.cnn_labels_on_split(slices, samples, zs, truth.shape)
predictions = compare.method_predictions(images, cnn, json.loads(open(snakemake.input.watershed).read()))
per_image = compare.per_image_table(truth, predictions, samples, zs, snakemake.params.iou_threshold)
summary = compare.summary_table(per_image, "cnn")
io.write_csv(snakemake.output.per_image, per_image)
io.write_csv(snakemake.output.summary, summary)
io.write_csv(snakemake.output.ap, compare.ap_table(truth, predictions))
io.save_figure(plots.fig9b(summary), snakemake.output.figure)
io.save_figure(figures.comparison_examples(images, truth, predictions, samples, zs), snakemake.output.examples)
