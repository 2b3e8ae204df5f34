# Validation on phantoms: every headline metric per cell against the truth, in-sample and out-of-sample.


rule evaluate_sample:
    input:
        truth="results/{sample}/truth.h5",
        phases=rules.threshold_phases.output.phases,
        qc=rules.threshold_phases.output.qc,
        slices=rules.gather_slices.output.labels,
        particles=rules.link_slices.output.particles,
        science=rules.validate_science.output[0],
        contact_level=rules.contact_level.output.table,
        self_consistency=lambda w: self_consistency_tables([w.sample]),
        table=rules.particles.output[0],
        truth_table="results/{sample}/truth_particles.csv",
    output:
        "results/{sample}/robustness.csv",
    params:
        preset=preset_of,
        split=split_of,
        min_area=config["annotations"]["min_instance_area_px"],
        iou_threshold=config["watershed"]["iou_threshold"],
    wildcard_constraints:
        sample=sample_regex(PHANTOM_SAMPLES),
    log:
        "logs/evaluate_sample/{sample}.log",
    benchmark:
        "logs/benchmarks/evaluate_sample/{sample}.tsv"
    resources:
        mem_mb=4000,
        runtime=20,
    conda:
        "../envs/core.yaml"
    script:
        "../scripts/evaluate_sample.py"


rule robustness:
    input:
        evals=expand(rules.evaluate_sample.output[0], sample=PHANTOM_SAMPLES),
        truth_tables=expand("results/{sample}/truth_particles.csv", sample=PHANTOM_SAMPLES),
        tables=expand(rules.particles.output[0], sample=PHANTOM_SAMPLES),
    output:
        table=config["validation"]["table"],
        figure=report(
            robustness_figure_path(),
            caption="../report/robustness.rst",
            category="Validation",
        ),
    params:
        samples=PHANTOM_SAMPLES,
        presets=[sample_preset(s) for s in PHANTOM_SAMPLES],
        splits=[sample_split(s) for s in PHANTOM_SAMPLES],
        c_rates=[SAMPLES.c_rate[s] for s in PHANTOM_SAMPLES],
        exclude_border=config["science"]["exclude_border"],
    log:
        "logs/robustness.log",
    benchmark:
        "logs/benchmarks/robustness.tsv"
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        "../envs/core.yaml"
    script:
        "../scripts/robustness.py"
