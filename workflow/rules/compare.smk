# Marker-controlled watershed baseline (tuned on train/val only) and the six-metric comparison (Supp. Fig. 9b).


rule tune_watershed:
    input:
        train=rules.annotations.output.train,
        val=rules.annotations.output.val,
    output:
        params="results/watershed/params.json",
        table="results/watershed/tuning.csv",
    params:
        settings=config["watershed"],
        min_area=config["annotations"]["min_instance_area_px"],
    log:
        "logs/tune_watershed.log",
    benchmark:
        "logs/benchmarks/tune_watershed.tsv"
    resources:
        runtime=60,
    conda:
        "../envs/core.yaml"
    script:
        "../scripts/tune_watershed.py"


rule compare:
    input:
        test=rules.annotations.output.test,
        slices=expand(rules.gather_slices.output.labels, sample=LABELLED_SAMPLES),
        watershed=rules.tune_watershed.output.params,
    output:
        per_image="results/comparison/metrics_per_image.csv",
        summary="results/comparison/metrics_summary.csv",
        ap="results/comparison/ap_curve.csv",
        figure=report(
            "results/comparison/fig9b.png",
            caption="../report/fig9b.rst",
            category="Comparison",
        ),
        examples=report(
            "results/comparison/fig9b_examples.png",
            caption="../report/fig9b_examples.rst",
            category="Comparison",
        ),
    params:
        samples=LABELLED_SAMPLES,
        iou_threshold=config["watershed"]["iou_threshold"],
    log:
        "logs/compare.log",
    benchmark:
        "logs/benchmarks/compare.tsv"
    resources:
        runtime=10,
    conda:
        "../envs/core.yaml"
    script:
        "../scripts/compare.py"
