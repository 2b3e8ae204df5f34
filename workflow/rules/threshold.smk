# Phase thresholding of the reconstruction (Supp. Figs. 1 and 8).


rule threshold_phases:
    input:
        volume="results/{sample}/volume.h5",
    output:
        phases="results/{sample}/phases.h5",
        histogram="results/{sample}/histogram.csv",
        fwhm="results/{sample}/phase_fwhm.csv",
        qc="results/{sample}/phase_qc.csv",
        figure=report(
            "results/{sample}/fig1_phases.png",
            caption="../report/fig1_phases.rst",
            category="Phases",
            labels={"sample": "{sample}"},
        ),
    params:
        settings=threshold_settings,
    log:
        "logs/threshold_phases/{sample}.log",
    benchmark:
        "logs/benchmarks/threshold_phases/{sample}.tsv"
    threads: 2
    resources:
        mem_mb=4000,
    conda:
        "../envs/core.yaml"
    script:
        "../scripts/threshold_phases.py"
