# Detachment statistics of cathode particles from nano-tomography (after Jiang et al. 2020).
# The Snakefile only declares; validation and helpers live in workflow/rules/common.smk.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


scattergather:
    infer_slab=config.get("infer", {}).get("slabs", 2),
    particle_parts=config.get("science", {}).get("particle_parts", 2),


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/volume.smk"
include: "workflow/rules/threshold.smk"
include: "workflow/rules/cnn.smk"
include: "workflow/rules/compare.smk"
include: "workflow/rules/link.smk"
include: "workflow/rules/science.smk"
include: "workflow/rules/second_map.smk"
include: "workflow/rules/validation.smk"


rule all:
    default_target: True
    input:
        final_targets(),
