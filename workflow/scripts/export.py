"""Adapter: copy a label volume (phase map, 3D particles) to TIFF or OME-Zarr for napari and Fiji."""

from detachment.export import export_ome_zarr, export_tiff
from detachment.logs import log_to

log_to(snakemake.log[0])
write = export_tiff if snakemake.params.format == "tiff" else export_ome_zarr
write(snakemake.input[0], snakemake.params.dataset, snakemake.output[0], slab=snakemake.params.slab)
