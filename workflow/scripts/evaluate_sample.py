"""Adapter: one phantom cell's headline metrics against its truth (long rows of robustness.csv)."""

import json

import h5py
import pandas as pd

from detachment import io, robustness
from detachment.contact_level import edge_width_from_map
from detachment.logs import log_to
from detachment.particles import phases_not_resolved

log_to(snakemake.log[0])
p = snakemake.params
with h5py.File(snakemake.input.phases, "r") as f:
    nmc_merged = "nmc_high" in phases_not_resolved(f["phases"].attrs)
with h5py.File(snakemake.input.truth, "r") as f:  # drawn on sub-voxels: the share of each voxel in its phase
    purity = f["phase_purity"][()] if "phase_purity" in f else None
    planted = json.loads(f.attrs["params"]) if "params" in f.attrs else {}  # a phantom's own parameters
science = pd.read_csv(snakemake.input.science)
sigma = float(planted.get("blur_sigma_vox", "nan"))
psf = (float(planted.get("blur_z_factor", 1.0)) * sigma, sigma, sigma)  # (z, y, x)
metrics = robustness.sample_metrics(
    io.read_dataset(snakemake.input.truth, "labels"), io.read_dataset(snakemake.input.truth, "phases"),
    io.read_dataset(snakemake.input.phases, "phases"), io.read_dataset(snakemake.input.slices, "labels"),
    io.read_dataset(snakemake.input.particles, "labels"), science, p.min_area, p.iou_threshold, nmc_merged,
    purity, psf)
measured, truth_table = pd.read_csv(snakemake.input.table), pd.read_csv(snakemake.input.truth_table)
metrics.update(robustness.nmc_high_fraction_errors(science, measured, truth_table))
metrics.update(robustness.collector_distance_errors(science, measured, truth_table))
metrics["phase_map_plausible"] = float(pd.read_csv(snakemake.input.qc).passed.all())
metrics["contact_reading_plausible"] = robustness.contact_reading_plausible(snakemake.input.contact_level)
metrics["contact_separation"] = robustness.contact_separation(snakemake.input.contact_level)
metrics["contact_edge_width"] = edge_width_from_map(snakemake.input.phases, snakemake.input.qc)
metrics.update(robustness.self_consistency_metrics(snakemake.input.self_consistency))
io.write_csv(snakemake.output[0], robustness.long_table(p.preset, snakemake.wildcards.sample, p.split, metrics))
