"""Export to TIFF and OME-Zarr: read back with tifffile and with a raw chunk reader (numpy + json), not the
writer, and compared with the HDF5 bitwise."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

from detachment import io
from detachment.export import export_ome_zarr, export_tiff

VOXEL = (0.5, 0.25, 0.2)


def read_ome_zarr(folder) -> tuple[np.ndarray, dict]:
    """Read level 0 of a zarr v2 OME-Zarr from its raw chunk files (uncompressed, '/' separator)."""
    folder = Path(folder)
    attrs = json.loads((folder / ".zattrs").read_text())
    meta = json.loads((folder / "0" / ".zarray").read_text())
    assert meta["compressor"] is None and meta["order"] == "C" and meta["dimension_separator"] == "/"
    shape, chunks, dtype = meta["shape"], meta["chunks"], np.dtype(meta["dtype"])
    grid = [-(-n // c) for n, c in zip(shape, chunks)]
    padded = np.zeros([g * c for g, c in zip(grid, chunks)], dtype)
    for idx in np.ndindex(*grid):
        raw = np.fromfile(folder / "0" / "/".join(map(str, idx)), dtype).reshape(chunks)
        padded[tuple(slice(i * c, (i + 1) * c) for i, c in zip(idx, chunks))] = raw
    return padded[tuple(slice(0, n) for n in shape)], attrs


@pytest.fixture
def h5(tmp_path):
    rng = np.random.default_rng(1)
    arrays = {"phases": rng.integers(0, 5, (21, 40, 300)).astype(np.uint8),
              "labels": rng.integers(0, 600, (21, 40, 30)).astype(np.uint32),
              "big_labels": rng.integers(0, 70000, (21, 40, 30)).astype(np.uint32)}
    path = tmp_path / "in.h5"
    io.write_arrays(path, arrays, voxel_size_um=VOXEL)
    return path, arrays


@pytest.mark.parametrize("name, dtype, imagej", [("phases", np.uint8, True), ("labels", np.uint16, True),
                                                 ("big_labels", np.uint32, False)])
def test_tiff_export_equals_the_hdf5_with_its_voxel_size(tmp_path, h5, name, dtype, imagej):
    path, arrays = h5
    out = tmp_path / f"{name}.tif"
    export_tiff(path, name, out, slab=4)
    with tifffile.TiffFile(out) as t:
        data = t.asarray()
        assert t.is_imagej == imagej and t.is_bigtiff == (not imagej)
        assert data.dtype == dtype and data.shape == arrays[name].shape
        np.testing.assert_array_equal(data, arrays[name])
        num, den = t.pages[0].tags["XResolution"].value
        if imagej:
            assert t.imagej_metadata["spacing"] == pytest.approx(VOXEL[0]) and t.imagej_metadata["unit"] == "um"
            assert den / num == pytest.approx(VOXEL[2])  # µm per pixel
        else:
            assert 1e4 * den / num == pytest.approx(VOXEL[2]) and t.pages[0].tags["ResolutionUnit"].value == 3
    assert not list(tmp_path.glob(".*tmp-*"))


@pytest.mark.parametrize("name", ["phases", "big_labels"])
def test_ome_zarr_export_equals_the_hdf5_and_states_the_scale(tmp_path, h5, name):
    path, arrays = h5
    out = tmp_path / f"{name}.ome.zarr"
    export_ome_zarr(path, name, out, slab=5)
    data, attrs = read_ome_zarr(out)
    assert data.dtype == arrays[name].dtype
    np.testing.assert_array_equal(data, arrays[name])
    ms = attrs["multiscales"][0]
    assert ms["version"] == "0.4" and [a["name"] for a in ms["axes"]] == ["z", "y", "x"]
    assert {a["unit"] for a in ms["axes"]} == {"micrometer"}
    assert ms["datasets"][0]["coordinateTransformations"] == [{"type": "scale", "scale": list(VOXEL)}]
    assert json.loads((out / ".zgroup").read_text()) == {"zarr_format": 2}
    assert not list(tmp_path.glob(".*tmp-*"))


def test_bad_input_export_of_a_missing_dataset_names_the_file(tmp_path, h5):
    path, _ = h5
    with pytest.raises(io.InputError, match=r"in.h5: has no dataset '/nope'"):
        export_tiff(path, "nope", tmp_path / "x.tif")
    assert not (tmp_path / "x.tif").exists()
