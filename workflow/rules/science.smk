# The paper's science: per-particle table, crack damage profile, electron diffusion length, statistics.


rule contact_level:
    input:
        particles=rules.link_slices.output.particles,
        links=rules.link_slices.output.links,
        phases=rules.threshold_phases.output.phases,
        qc=rules.threshold_phases.output.qc,
        volume="results/{sample}/volume.h5",
    output:
        table="results/{sample}/contact_level.csv",
        figure=report(
            "results/{sample}/contact_level.png",
            caption="../report/contact_level.rst",
            category="Science",
            labels={"sample": "{sample}"},
        ),
    params:
        # science.on_ambiguous_contacts changes no table (only whether an ambiguous sample stops, which the figure
        # says): the script reads it from the config, so switching it reruns nothing
        max_spread=config["science"]["contact_max_spread"],
        max_ambiguity=config["science"]["contact_max_ambiguity"],
        partition=config["science"]["envelope_partition"],
        sharpen=config["science"]["contact_sharpen"],
        spill=config["science"]["contact_spill"],
        gap_from_intensity=config["science"]["contact_gap_from_intensity"],
        partial_volume=config["science"]["contact_partial_volume"],
    log:
        "logs/contact_level/{sample}.log",
    benchmark:
        "logs/benchmarks/contact_level/{sample}.tsv"
    resources:
        mem_mb=4000,
    conda:
        "../envs/core.yaml"
    script:
        "../scripts/contact_level.py"


rule particles_part:
    input:
        particles=rules.link_slices.output.particles,
        links=rules.link_slices.output.links,
        phases=rules.threshold_phases.output.phases,
        volume="results/{sample}/volume.h5",
        contact_level=rules.contact_level.output.table,
    output:
        temp("results/{sample}/parts/particles_{scatteritem}.csv"),
    params:
        probe=config["science"]["contact_probe_vox"],
        gap_from_intensity=config["science"]["contact_gap_from_intensity"],
        contact_level=config["science"]["contact_level"],
        partial_volume=config["science"]["contact_partial_volume"],
        partition=config["science"]["envelope_partition"],
    log:
        "logs/particles/{sample}/{scatteritem}.log",
    benchmark:
        "logs/benchmarks/particles/{sample}/{scatteritem}.tsv"
    resources:
        mem_mb=4000,
    conda:
        "../envs/core.yaml"
    script:
        "../scripts/particles_part.py"


rule particles:
    input:
        gather.particle_parts("results/{{sample}}/parts/particles_{scatteritem}.csv"),
    output:
        "results/{sample}/particles.csv",
    log:
        "logs/particles/{sample}.log",
    benchmark:
        "logs/benchmarks/particles/{sample}.tsv"
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        "../envs/core.yaml"
    script:
        "../scripts/gather_table.py"


rule self_consistency:
    input:
        particles=rules.link_slices.output.particles,
        links=rules.link_slices.output.links,
        phases=rules.threshold_phases.output.phases,
        fwhm=rules.threshold_phases.output.fwhm,
        qc=rules.threshold_phases.output.qc,
        volume="results/{sample}/volume.h5",
        contact_level=rules.contact_level.output.table,
        table=rules.particles.output[0],
    output:
        "results/{sample}/self_consistency.csv",
    params:
        settings=threshold_settings,
        # the reading's own settings (science.self_consistency: warn or stop changes no table; it is read from the
        # config)
        science={k: config["science"][k] for k in SELF_CONSISTENCY_KEYS},
    log:
        "logs/self_consistency/{sample}.log",
    benchmark:
        "logs/benchmarks/self_consistency/{sample}.tsv"
    threads: 2
    resources:
        mem_mb=6000,
    conda:
        "../envs/core.yaml"
    script:
        "../scripts/self_consistency.py"


rule damage:
    input:
        table=rules.particles.output[0],
        particles=rules.link_slices.output.particles,
        phases=rules.threshold_phases.output.phases,
        volume="results/{sample}/volume.h5",
    output:
        table="results/{sample}/damage_profile.csv",
        figure=report(
            "results/{sample}/fig2_damage.png",
            caption="../report/fig2.rst",
            category="Science",
            labels={"sample": "{sample}"},
        ),
    params:
        bin_um=config["science"]["damage_bin_um"],
    log:
        "logs/damage/{sample}.log",
    benchmark:
        "logs/benchmarks/damage/{sample}.tsv"
    resources:
        runtime=10,
    conda:
        "../envs/core.yaml"
    script:
        "../scripts/damage.py"


rule diffusion_part:
    input:
        particles=rules.link_slices.output.particles,
        links=rules.link_slices.output.links,
        phases=rules.threshold_phases.output.phases,
        volume="results/{sample}/volume.h5",
    output:
        temp("results/{sample}/parts/diffusion_{scatteritem}.csv"),
    log:
        "logs/diffusion/{sample}/{scatteritem}.log",
    benchmark:
        "logs/benchmarks/diffusion/{sample}/{scatteritem}.tsv"
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        "../envs/core.yaml"
    script:
        "../scripts/diffusion_part.py"


rule diffusion:
    input:
        parts=gather.particle_parts("results/{{sample}}/parts/diffusion_{scatteritem}.csv"),
        particles=rules.link_slices.output.particles,
        links=rules.link_slices.output.links,
        phases=rules.threshold_phases.output.phases,
        volume="results/{sample}/volume.h5",
    output:
        table="results/{sample}/diffusion.csv",
        figure=report(
            "results/{sample}/fig3_diffusion.png",
            caption="../report/fig3.rst",
            category="Science",
            labels={"sample": "{sample}"},
        ),
    log:
        "logs/diffusion/{sample}.log",
    benchmark:
        "logs/benchmarks/diffusion/{sample}.tsv"
    resources:
        mem_mb=4000,
        runtime=10,
    conda:
        "../envs/core.yaml"
    script:
        "../scripts/diffusion.py"


rule statistics:
    input:
        particles=expand(rules.particles.output[0], sample=SAMPLES.index),
        diffusion=expand(rules.diffusion.output.table, sample=SAMPLES.index),
        histograms=expand(rules.threshold_phases.output.histogram, sample=SAMPLES.index),
        fwhm=expand(rules.threshold_phases.output.fwhm, sample=SAMPLES.index),
        contact_level=expand(rules.contact_level.output.table, sample=SAMPLES.index),
        self_consistency=self_consistency_tables(SAMPLES.index),
        qc=expand(rules.threshold_phases.output.qc, sample=SAMPLES.index),
    output:
        all_particles="results/statistics/particles_all.csv",
        by_rate="results/statistics/detachment_by_c_rate.csv",
        by_cell="results/statistics/detachment_by_cell.csv",
        by_size="results/statistics/detachment_by_size.csv",
        correlations="results/statistics/correlations.csv",
        fig4=report("results/statistics/fig4.png", caption="../report/fig4.rst", category="Science"),
        fig8=report("results/statistics/fig8.png", caption="../report/fig8.rst", category="Science"),
    params:
        samples=list(SAMPLES.index),
        c_rates=list(SAMPLES.c_rate),
        cells=list(SAMPLES.cell),
        size_bins=config["science"]["size_bins"],
        seed=config["seed"],
        exclude_border=config["science"]["exclude_border"],
    log:
        "logs/statistics.log",
    benchmark:
        "logs/benchmarks/statistics.tsv"
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        "../envs/core.yaml"
    script:
        "../scripts/statistics.py"


rule validate_science:
    input:
        truth="results/{sample}/truth.h5",
        truth_table="results/{sample}/truth_particles.csv",
        particles=rules.link_slices.output.particles,
        table=rules.particles.output[0],
        phases=rules.threshold_phases.output.phases,
        volume="results/{sample}/volume.h5",
        contact_level=rules.contact_level.output.table,
    output:
        "results/{sample}/science_eval.csv",
    params:
        probe=config["science"]["contact_probe_vox"],
        gap_from_intensity=config["science"]["contact_gap_from_intensity"],
        contact_level=config["science"]["contact_level"],
        partial_volume=config["science"]["contact_partial_volume"],
    wildcard_constraints:
        sample=sample_regex(PHANTOM_SAMPLES),
    log:
        "logs/validate_science/{sample}.log",
    benchmark:
        "logs/benchmarks/validate_science/{sample}.tsv"
    resources:
        mem_mb=4000,
    conda:
        "../envs/core.yaml"
    script:
        "../scripts/validate_science.py"


rule summarize_science_validation:
    input:
        evals=expand(rules.validate_science.output[0], sample=PHANTOM_SAMPLES),
        truth_tables=expand("results/{sample}/truth_particles.csv", sample=PHANTOM_SAMPLES),
        tables=expand(rules.particles.output[0], sample=PHANTOM_SAMPLES),
    output:
        table="results/statistics/validation.csv",
        figure=report(
            "results/statistics/validation.png",
            caption="../report/validation.rst",
            category="Science",
        ),
    params:
        samples=PHANTOM_SAMPLES,
        c_rates=[SAMPLES.c_rate[s] for s in PHANTOM_SAMPLES],
        exclude_border=config["science"]["exclude_border"],
    log:
        "logs/summarize_science_validation.log",
    benchmark:
        "logs/benchmarks/summarize_science_validation.tsv"
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        "../envs/core.yaml"
    script:
        "../scripts/summarize_science_validation.py"
