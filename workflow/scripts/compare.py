"""Adapter: CNN (from cnn/slices.h5) and tuned watershed on the test slices; metrics, summary, figures."""

import json

import h5py
import numpy as np
import pandas as pd

from detachment import io, plots
from detachment.annotations import read_split
from detachment.compare import per_image_table, summary_table
from detachment.logs import log_to
from detachment.metrics import ap_curve
from detachment.watershed import WatershedParams, segment

log_to(snakemake.log[0])
images, truth, samples, zs = read_split(snakemake.input.test)
slices = dict(zip(snakemake.params.samples, snakemake.input.slices))
cnn = np.zeros(truth.shape, np.uint32)
for i, (sample, z) in enumerate(zip(samples, zs)):
    with h5py.File(slices[sample], "r") as f:
        cnn[i] = f["labels"][z]
tuned = json.loads(open(snakemake.input.watershed).read())
predictions = {"cnn": cnn}
for markers, params in tuned["per_marker"].items():
    name = "watershed" if markers == "intensity" else f"watershed_{markers}"
    p = WatershedParams(**params)
    predictions[name] = np.stack([segment(im, p) for im in images])
predictions = {k: predictions[k] for k in sorted(predictions, key=lambda k: (k != "cnn", k != "watershed", k))}
thr = snakemake.params.iou_threshold
per_image = per_image_table(truth, predictions, samples, zs, thr)
summary = summary_table(per_image, "cnn")
io.write_csv(snakemake.output.per_image, per_image)
io.write_csv(snakemake.output.summary, summary)
ap = pd.DataFrame([{"method": m, "image": i, "iou_threshold": t, "score": v}
                   for m, pred in predictions.items() for i, (t_img, p_img) in enumerate(zip(truth, pred))
                   for t, v in ap_curve(t_img, p_img).items()])
io.write_csv(snakemake.output.ap, ap)
io.save_figure(plots.fig9b(summary), snakemake.output.figure)
pick = np.linspace(0, len(images) - 1, min(3, len(images))).round().astype(int)
panels = {"truth": truth[pick], **{k: v[pick] for k, v in predictions.items()}}
io.save_figure(plots.outline_figure(images[pick], panels, [f"{samples[i]} z={zs[i]}" for i in pick]),
               snakemake.output.examples)
