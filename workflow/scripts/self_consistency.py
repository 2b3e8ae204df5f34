"""Adapter: whether a sample's contact reading finds itself again on a volume rendered from its own phase map."""

import logging

import pandas as pd

from detachment import io
from detachment.logs import log_to
from detachment.self_consistency import check_reading, enforce, map_sigma
from detachment.threshold import ThresholdSettings

log_to(snakemake.log[0])
p = snakemake.params
sigma = map_sigma(snakemake.input.phases, snakemake.input.qc)
_, voxel = io.read_volume_info(snakemake.input.volume)
check = check_reading(snakemake.input.phases, pd.read_csv(snakemake.input.fwhm), sigma, voxel,
                      snakemake.input.particles, pd.read_csv(snakemake.input.links),
                      pd.read_csv(snakemake.input.table), snakemake.input.contact_level,
                      ThresholdSettings(**p.settings), p.science, workers=snakemake.threads,
                      exclude_border=p.science["exclude_border"], workdir=snakemake.resources.get("tmpdir"),
                      volume=snakemake.input.volume)
io.write_csv(snakemake.output[0], check.to_frame())
logging.getLogger(__name__).info(
    "read again on its phase map rendered at σ %.3f voxels (textures: %s), the detachment of %d particles moves by "
    "%+.4f on average (|move| %.4f; bound ±%g): %s", check.sigma_vox, check.textures, check.n_particles, check.shift,
    check.shift_mae, check.bound, "consistent" if check.consistent else "NOT consistent")
enforce(check, snakemake.wildcards.sample, snakemake.config["science"]["self_consistency"])
