"""Adapter: Mask R-CNN instances for one z-slab of a sample (scatter item)."""

from detachment import io
from detachment.inference import infer_slab, scatter_range
from detachment.logs import log_to

log_to(snakemake.log[0])
s = snakemake.params.settings
shape, _ = io.read_volume_info(snakemake.input.volume)
z0, z1 = scatter_range(snakemake.wildcards.scatteritem, shape[0])
infer_slab(snakemake.input.volume, snakemake.input.weights, snakemake.input.meta, z0, z1, snakemake.output[0],
           batch_size=s["batch_size"], score_threshold=s["score_threshold"], mask_threshold=s["mask_threshold"],
           min_visible_fraction=s["min_visible_fraction"],
           candidate_threshold=s["candidate_threshold"], device=s["device"], threads=snakemake.threads,
           tta=s["tta"], rescale=s["rescale"], tile_px=s["tile_px"], max_detections=s["max_detections"])
