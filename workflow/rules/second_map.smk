# An optional co-registered second map per sample (Supp. Fig. 7: Ni valence state) and its correlation
# with the electron density: the phantom's planted map or a user's (sample sheet column `second_map`).


rule phantom_second_map:
    input:
        volume="results/{sample}/volume.h5",
        truth="results/{sample}/truth.h5",
    output:
        "results/{sample}/second_map.h5",
    params:
        phantom=second_map_phantom_params,
        seed=phantom_seed,
        slab=config["io"]["slab"],
    wildcard_constraints:
        sample=sample_regex(PHANTOM_SECOND_MAP_SAMPLES),
    log:
        "logs/phantom_second_map/{sample}.log",
    benchmark:
        "logs/benchmarks/phantom_second_map/{sample}.tsv"
    resources:
        # whole phantom in memory, ~33 B per voxel measured: 0.05 GB default, ~2.8 GB at paper scale
        mem_mb=4000,
        runtime=10,
    conda:
        "../envs/core.yaml"
    script:
        "../scripts/phantom_second_map.py"


rule import_second_map:
    input:
        second_map=imported_second_map,
        volume="results/{sample}/volume.h5",
    output:
        "results/{sample}/second_map.h5",
    params:
        fields=imported_second_map_fields,
        slab=config["io"]["slab"],
    wildcard_constraints:
        sample=sample_regex(IMPORTED_SECOND_MAP_SAMPLES),
    log:
        "logs/import_second_map/{sample}.log",
    benchmark:
        "logs/benchmarks/import_second_map/{sample}.tsv"
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        "../envs/core.yaml"
    script:
        "../scripts/import_second_map.py"


rule second_map_particles:
    input:
        particles=rules.link_slices.output.particles,
        links=rules.link_slices.output.links,
        phases=rules.threshold_phases.output.phases,
        volume="results/{sample}/volume.h5",
        second_map="results/{sample}/second_map.h5",
    output:
        "results/{sample}/second_map_particles.csv",
    wildcard_constraints:
        sample=sample_regex(SECOND_MAP_SAMPLES),
    log:
        "logs/second_map_particles/{sample}.log",
    benchmark:
        "logs/benchmarks/second_map_particles/{sample}.tsv"
    conda:
        "../envs/core.yaml"
    script:
        "../scripts/second_map_particles.py"


rule second_map_correlation:
    input:
        tables=expand(rules.second_map_particles.output[0], sample=SECOND_MAP_SAMPLES),
        volumes=expand("results/{sample}/volume.h5", sample=SECOND_MAP_SAMPLES),
        maps=expand("results/{sample}/second_map.h5", sample=SECOND_MAP_SAMPLES),
    output:
        table="results/statistics/second_map_correlation.csv",
        figure=report(
            "results/statistics/fig7_second_map.png",
            caption="../report/fig7_second_map.rst",
            category="Science",
        ),
    params:
        samples=SECOND_MAP_SAMPLES,
        c_rates=[SAMPLES.c_rate[s] for s in SECOND_MAP_SAMPLES],
        cells=[SAMPLES.cell[s] for s in SECOND_MAP_SAMPLES],
        planted=[planted_valence_correlation(s) for s in SECOND_MAP_SAMPLES],
        exclude_border=config["science"]["exclude_border"],
        seed=config["seed"],
    log:
        "logs/second_map_correlation.log",
    benchmark:
        "logs/benchmarks/second_map_correlation.tsv"
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        "../envs/core.yaml"
    script:
        "../scripts/second_map_correlation.py"
