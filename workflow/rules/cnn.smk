# Mask R-CNN: labelled-slice splits, augmentation, training (from scratch or fine-tuning model.checkpoint) or
# reuse of model.checkpoint as is, per-slice inference (Supp. Fig. 4, Note 1).


rule annotations:
    input:
        volumes=labelled_volumes,
        labels=[label_file(s) for s in LABELLED_SAMPLES],
    output:
        train="results/annotations/train.h5",
        val="results/annotations/val.h5",
        test="results/annotations/test.h5",
        table="results/annotations/split.csv",
    params:
        samples=LABELLED_SAMPLES,
        settings=config["annotations"],
        seed=config["seed"],
    log:
        "logs/annotations.log",
    benchmark:
        "logs/benchmarks/annotations.tsv"
    resources:
        runtime=10,
    conda:
        "../envs/core.yaml"
    script:
        "../scripts/annotations.py"


rule augment:
    input:
        train=rules.annotations.output.train,
    output:
        "results/annotations/train_augmented.h5",
    params:
        settings=config["augment"],
        context_slices=config["model"]["context_slices"],
        min_area=config["annotations"]["min_instance_area_px"],
        seed=config["seed"] + 1,
    log:
        "logs/augment.log",
    benchmark:
        "logs/benchmarks/augment.tsv"
    resources:
        mem_mb=4000,
        runtime=10,
    conda:
        "../envs/core.yaml"
    script:
        "../scripts/augment.py"


if MODEL_MODE != "reuse":

    rule train:
        input:
            tiles=rules.augment.output[0],
            val=rules.annotations.output.val,
            split=rules.annotations.output.train,
            volumes=expand("results/{sample}/volume.h5", sample=LABELLED_SAMPLES),
            **finetune_inputs(),
        output:
            weights=MODEL_WEIGHTS,
            meta=MODEL_META,
            log_table="results/model/training_log.csv",
            figure=report(
                "results/model/loss_curve.png",
                caption="../report/loss_curve.rst",
                category="Mask R-CNN",
            ),
        params:
            model=model_settings(),
            train=train_settings(),
            samples=LABELLED_SAMPLES,
            seed=config["seed"] + 2,
            checkpoints="results/model/checkpoints",
        log:
            "logs/train.log",
        benchmark:
            "logs/benchmarks/train.tsv"
        threads: config["train"]["threads"]
        resources:
            mem_mb=8000,
            runtime=config["train"]["runtime_min"],
            gpu=config["train"]["gpus"],
        conda:
            "../envs/torch.yaml"
        script:
            "../scripts/train.py"


if MODEL_MODE == "reuse":

    rule reuse_model:
        input:
            weights=MODEL_CHECKPOINT,
            meta=str(meta_path_for(MODEL_CHECKPOINT)),
        output:
            weights=MODEL_WEIGHTS,
            meta=MODEL_META,
        log:
            "logs/reuse_model.log",
        benchmark:
            "logs/benchmarks/reuse_model.tsv"
        resources:
            runtime=10,
        conda:
            "../envs/torch.yaml"
        script:
            "../scripts/reuse_model.py"


rule infer_slab:
    input:
        volume="results/{sample}/volume.h5",
        weights=MODEL_WEIGHTS,
        meta=MODEL_META,
    output:
        temp("results/{sample}/cnn/slabs/{scatteritem}.h5"),
    params:
        settings=config["infer"],
    log:
        "logs/infer_slab/{sample}/{scatteritem}.log",
    benchmark:
        "logs/benchmarks/infer_slab/{sample}/{scatteritem}.tsv"
    threads: config["infer"]["threads"]
    resources:
        mem_mb=4000,
        runtime=60,
        gpu=config["infer"]["gpus"],
    conda:
        "../envs/torch.yaml"
    script:
        "../scripts/infer_slab.py"


rule gather_slices:
    input:
        slabs=gather.infer_slab("results/{{sample}}/cnn/slabs/{scatteritem}.h5"),
        volume="results/{sample}/volume.h5",
    output:
        labels="results/{sample}/cnn/slices.h5",
        table="results/{sample}/cnn/slices.csv",
    log:
        "logs/gather_slices/{sample}.log",
    benchmark:
        "logs/benchmarks/gather_slices/{sample}.tsv"
    resources:
        runtime=10,
    conda:
        "../envs/core.yaml"
    script:
        "../scripts/gather_slices.py"


rule activation_map:
    input:
        test=rules.annotations.output.test,
        weights=MODEL_WEIGHTS,
        meta=MODEL_META,
    output:
        report(
            "results/model/fig9a_activation.png",
            caption="../report/activation.rst",
            category="Mask R-CNN",
        ),
    params:
        n_slices=3,
        device=config["infer"]["device"],
    log:
        "logs/activation_map.log",
    benchmark:
        "logs/benchmarks/activation_map.tsv"
    resources:
        runtime=10,
    conda:
        "../envs/torch.yaml"
    script:
        "../scripts/activation_map.py"
