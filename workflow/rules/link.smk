# 3D particles: Hungarian linking of the per-slice CNN instances, and its evaluation on phantoms.


rule link_slices:
    input:
        slices=rules.gather_slices.output.labels,
    output:
        particles="results/{sample}/cnn/particles.h5",
        links="results/{sample}/cnn/links.csv",
    params:
        settings=link_settings(),
    log:
        "logs/link_slices/{sample}.log",
    benchmark:
        "logs/benchmarks/link_slices/{sample}.tsv"
    conda:
        "../envs/core.yaml"
    script:
        "../scripts/link_slices.py"


rule evaluate_linking:
    input:
        truth="results/{sample}/truth.h5",
        slices=rules.gather_slices.output.labels,
        volume="results/{sample}/volume.h5",
        watershed=rules.tune_watershed.output.params,
    output:
        "results/{sample}/linking_eval.csv",
    params:
        settings=link_settings(),
    wildcard_constraints:
        sample=sample_regex(PHANTOM_SAMPLES),
    log:
        "logs/evaluate_linking/{sample}.log",
    benchmark:
        "logs/benchmarks/evaluate_linking/{sample}.tsv"
    resources:
        mem_mb=4000,
    conda:
        "../envs/core.yaml"
    script:
        "../scripts/evaluate_linking.py"


rule summarize_linking:
    input:
        expand(rules.evaluate_linking.output[0], sample=PHANTOM_SAMPLES),
    output:
        table="results/linking/summary.csv",
        figure=report(
            "results/linking/linking.png",
            caption="../report/linking.rst",
            category="3D particles",
        ),
    params:
        samples=PHANTOM_SAMPLES,
    log:
        "logs/summarize_linking.log",
    benchmark:
        "logs/benchmarks/summarize_linking.tsv"
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        "../envs/core.yaml"
    script:
        "../scripts/summarize_linking.py"
