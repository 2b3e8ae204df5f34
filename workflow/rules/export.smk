# Copies of the phase map and the 3D particles for napari and Fiji (config export.formats): TIFF, OME-Zarr.


rule export_tiff:
    input:
        export_source,
    output:
        "results/{sample}/export/{layer}.tif",
    params:
        dataset=export_dataset,
        format="tiff",
        slab=config["io"]["slab"],
    wildcard_constraints:
        layer="phases|particles",
    log:
        "logs/export_tiff/{sample}_{layer}.log",
    benchmark:
        "logs/benchmarks/export_tiff/{sample}_{layer}.tsv"
    resources:
        runtime=30,
    conda:
        "../envs/core.yaml"
    script:
        "../scripts/export.py"


rule export_ome_zarr:
    input:
        export_source,
    output:
        directory("results/{sample}/export/{layer}.ome.zarr"),
    params:
        dataset=export_dataset,
        format="ome-zarr",
        slab=config["io"]["slab"],
    wildcard_constraints:
        layer="phases|particles",
    log:
        "logs/export_ome_zarr/{sample}_{layer}.log",
    benchmark:
        "logs/benchmarks/export_ome_zarr/{sample}_{layer}.tsv"
    resources:
        runtime=30,
    conda:
        "../envs/core.yaml"
    script:
        "../scripts/export.py"
