# The input volumes: generated phantoms (with ground truth) or imported user tomograms.


rule make_phantom:
    output:
        volume="results/{sample}/volume.h5",
        truth="results/{sample}/truth.h5",
        table="results/{sample}/truth_particles.csv",
    params:
        phantom=phantom_params,
        seed=phantom_seed,
    wildcard_constraints:
        sample=sample_regex(PHANTOM_SAMPLES),
    log:
        "logs/make_phantom/{sample}.log",
    benchmark:
        "logs/benchmarks/make_phantom/{sample}.tsv"
    resources:
        runtime=10,
    conda:
        "../envs/core.yaml"
    script:
        "../scripts/make_phantom.py"


rule import_volume:
    input:
        imported_volume,
    output:
        volume="results/{sample}/volume.h5",
    params:
        fields=imported_fields,
        slab=config["io"]["slab"],
    wildcard_constraints:
        sample=sample_regex(IMPORTED_SAMPLES),
    log:
        "logs/import_volume/{sample}.log",
    benchmark:
        "logs/benchmarks/import_volume/{sample}.tsv"
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        "../envs/core.yaml"
    script:
        "../scripts/import_volume.py"


rule import_labels:
    input:
        labels=imported_labels,
        volume="results/{sample}/volume.h5",
    output:
        "results/{sample}/labels.h5",
    params:
        fields=imported_label_fields,
        slab=config["io"]["slab"],
    wildcard_constraints:
        sample=sample_regex(IMPORTED_LABELLED_SAMPLES),
    log:
        "logs/import_labels/{sample}.log",
    benchmark:
        "logs/benchmarks/import_labels/{sample}.tsv"
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        "../envs/core.yaml"
    script:
        "../scripts/import_labels.py"
