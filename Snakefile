# Detachment statistics of cathode particles from nano-tomography (after Jiang et al. 2020).
# The Snakefile only declares; validation and helpers live in workflow/rules/common.smk.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


scattergather:
    infer_slab=config.get("infer", {}).get("slabs", 2),


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/volume.smk"
include: "workflow/rules/threshold.smk"
include: "workflow/rules/cnn.smk"
include: "workflow/rules/compare.smk"
include: "workflow/rules/link.smk"
include: "workflow/rules/science.smk"


rule all:
    default_target: True
    input:
        expand(rules.threshold_phases.output.phases, sample=SAMPLES.index),
        expand(rules.threshold_phases.output.figure, sample=SAMPLES.index),
        expand(rules.gather_slices.output.labels, sample=SAMPLES.index),
        rules.train.output.figure,
        rules.activation_map.output[0],
        rules.compare.output.summary,
        expand(rules.link_slices.output.particles, sample=SAMPLES.index),
        rules.summarize_linking.output.table,
        expand(rules.damage.output.table, sample=SAMPLES.index),
        rules.statistics.output.fig4,
