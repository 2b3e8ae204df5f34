"""Adapter: 3D recovery of Hungarian linking, greedy stitching and 3D watershed against a phantom's truth."""

import json

from detachment import io
from detachment.linking import LinkSettings, evaluate_linking, read_candidates
from detachment.logs import log_to
from detachment.watershed import WatershedParams, segment

log_to(snakemake.log[0])
s = snakemake.params.settings
settings = LinkSettings(**{k: v for k, v in s.items() if k != "greedy_threshold"})
truth = io.read_dataset(snakemake.input.truth, "labels")
dataset, scores = read_candidates(snakemake.input.slices)
cnn = io.read_dataset(snakemake.input.slices, dataset)
volume, _ = io.read_volume(snakemake.input.volume)
tuned = json.loads(open(snakemake.input.watershed).read())["per_marker"]
ws = segment(volume, WatershedParams(**tuned.get("distance", next(iter(tuned.values())))))
table = evaluate_linking(truth, cnn, settings, ws, s["greedy_threshold"], scores)
table.insert(0, "sample", snakemake.wildcards.sample)
io.write_csv(snakemake.output[0], table)
