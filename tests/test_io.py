"""Volume import and atomic writes: round trips against the source arrays, and bad inputs."""

from __future__ import annotations

import re

import h5py
import numpy as np
import pytest
import tifffile

from detachment import io


def _vol(shape=(6, 20, 24), seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def test_import_hdf5_round_trip_streams_slabs(tmp_path):
    vol = (_vol() * 1000).astype(np.int16)
    src = tmp_path / "in.h5"
    with h5py.File(src, "w") as f:
        f["recon/data"] = vol
    out = tmp_path / "volume.h5"
    shape = io.import_volume(src, out, dataset="recon/data", voxel_size_um="0.1 0.05 0.05", slab=4)
    assert shape == vol.shape
    data, voxel = io.read_volume(out)
    np.testing.assert_array_equal(data, vol.astype(np.float32))
    assert voxel == (0.1, 0.05, 0.05)
    with h5py.File(out) as f:
        assert f["volume"].dtype == np.float32
        assert f["volume"].chunks[0] == 1
        assert "in.h5:recon/data" in f["volume"].attrs["source"]


def test_import_multipage_tiff_and_folder_of_slices(tmp_path):
    vol = (_vol(seed=1) * 100 + 1000).astype(np.uint16)
    tifffile.imwrite(tmp_path / "stack.tif", vol)
    folder = tmp_path / "slices"
    folder.mkdir()
    for z, img in enumerate(vol):
        tifffile.imwrite(folder / f"slice_{z:03d}.tif", img)
    for src in (tmp_path / "stack.tif", folder, str(folder / "slice_*.tif")):
        out = tmp_path / "out.h5"
        io.import_volume(src, out, dataset=None, voxel_size_um=0.5, slab=4)
        data, voxel = io.read_volume(out)
        np.testing.assert_array_equal(data, vol.astype(np.float32))
        assert voxel == (0.5, 0.5, 0.5)


def _h5(tmp_path, arr, name="data"):
    p = tmp_path / "bad.h5"
    with h5py.File(p, "w") as f:
        f[name] = arr
    return p


BAD_ARRAYS = {
    "2d": (np.zeros((20, 20), np.float32), "3 (z, y, x)"),
    "4d": (np.zeros((2, 3, 20, 20), np.float32), "3 (z, y, x)"),
    "tiny_slices": (np.zeros((4, 8, 8), np.float32), "too small"),
    "complex": (np.ones((3, 20, 20), np.complex64), "not a real number type"),
    "bool": (np.ones((3, 20, 20), bool), "not a real number type"),
    "constant": (np.full((3, 20, 20), 7.0, np.float32), "constant"),
}


@pytest.mark.parametrize("case", sorted(BAD_ARRAYS))
def test_bad_input_volume_array_is_refused_and_leaves_nothing(tmp_path, case):
    arr, expected = BAD_ARRAYS[case]
    src = _h5(tmp_path, arr)
    out = tmp_path / "volume.h5"
    with pytest.raises(io.InputError, match=re.escape(expected)) as err:
        io.import_volume(src, out, dataset="data", voxel_size_um=1.0)
    assert str(src) in str(err.value)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == [src]  # no temporary file left behind


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_bad_input_nonfinite_voxel_is_located(tmp_path, bad):
    arr = _vol(shape=(40, 20, 20))
    arr[33, 5, 7] = bad
    src = _h5(tmp_path, arr)
    out = tmp_path / "volume.h5"
    with pytest.raises(io.InputError, match=r"z=33, y=5, x=7"):
        io.import_volume(src, out, dataset="data", voxel_size_um=1.0, slab=8)
    assert not out.exists()


def test_bad_input_missing_dataset_lists_what_exists(tmp_path):
    src = _h5(tmp_path, _vol(), name="recon")
    with pytest.raises(io.InputError, match=r"no dataset 'volume'.*found: recon"):
        io.import_volume(src, tmp_path / "o.h5", dataset="volume", voxel_size_um=1.0)


def test_bad_input_missing_file_and_unknown_format(tmp_path):
    with pytest.raises(io.InputError, match="does not exist"):
        io.import_volume(tmp_path / "nope.h5", tmp_path / "o.h5", dataset="d", voxel_size_um=1.0)
    (tmp_path / "vol.raw").write_bytes(b"\0" * 100)
    with pytest.raises(io.InputError, match="unknown volume format"):
        io.import_volume(tmp_path / "vol.raw", tmp_path / "o.h5", dataset=None, voxel_size_um=1.0)


def test_bad_input_truncated_hdf5(tmp_path):
    src = _h5(tmp_path, _vol())
    data = src.read_bytes()
    src.write_bytes(data[: len(data) // 3])
    with pytest.raises(io.InputError, match="cannot be read as HDF5"):
        io.import_volume(src, tmp_path / "o.h5", dataset="data", voxel_size_um=1.0)


def test_bad_input_tiff_slices_with_inconsistent_shapes(tmp_path):
    folder = tmp_path / "slices"
    folder.mkdir()
    for z in range(4):
        tifffile.imwrite(folder / f"s{z}.tif", np.full((20, 20 if z != 2 else 22), z, np.uint16))
    with pytest.raises(io.InputError, match=r"s2.tif: slice shape \(20, 22\) differs"):
        io.import_volume(folder, tmp_path / "o.h5", dataset=None, voxel_size_um=1.0)
    assert not (tmp_path / "o.h5").exists()


@pytest.mark.parametrize("voxel", ["-1", "0", "a b c", "1 2", "nan", [1, 2, 3, 4]])
def test_bad_input_voxel_size(tmp_path, voxel):
    src = _h5(tmp_path, _vol())
    with pytest.raises(io.InputError, match="voxel size"):
        io.import_volume(src, tmp_path / "o.h5", dataset="data", voxel_size_um=voxel)


def test_atomic_output_keeps_previous_result_on_failure(tmp_path):
    target = tmp_path / "table.csv"
    target.write_text("previous\n")
    with pytest.raises(OSError, match="No space left"):
        with io.atomic_output(target) as tmp:
            tmp.write_text("half-writ")
            raise OSError(28, "No space left on device")
    assert target.read_text() == "previous\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.csv"]


def test_scatter_parts_cover_every_row_once_and_gather_restores_label_order(tmp_path):
    import pandas as pd

    from detachment.io import gather_tables, part_rows, scatter_part

    table = pd.DataFrame({"label": np.arange(1, 12), "v": np.arange(11) * 2.0})
    for n in (1, 2, 3, 20):
        parts = [part_rows(table, f"{k}-of-{n}") for k in range(1, n + 1)]
        assert sorted(np.concatenate([p.label.to_numpy() for p in parts]).tolist()) == table.label.tolist()
        paths = []
        for k, p in enumerate(reversed(parts)):
            paths.append(tmp_path / f"{n}_{k}.csv")
            p.to_csv(paths[-1], index=False)
        pd.testing.assert_frame_equal(gather_tables(paths), table)
    assert scatter_part("2-of-5") == (2, 5)
    for bad in ("0-of-2", "3-of-2", "2of5"):
        with pytest.raises(ValueError):
            scatter_part(bad)


def test_read_region_and_count_per_slice_equal_numpy(tmp_path):
    rng = np.random.default_rng(4)
    labels = (rng.random((37, 9, 11)) < 0.3) * rng.integers(1, 50, (37, 9, 11))
    path = tmp_path / "p.h5"
    io.write_arrays(path, {"labels": labels.astype(np.uint32)})
    crop = (slice(3, 30), slice(2, 7), slice(0, 11))
    np.testing.assert_array_equal(io.read_region(path, "labels", crop), labels[crop])
    np.testing.assert_array_equal(io.read_region(path, "labels", 17), labels[17])
    # slab of 16 does not divide 37: the seams must not drop or repeat slices
    np.testing.assert_array_equal(io.count_per_slice(path, "labels"), (labels > 0).sum(axis=(1, 2)))
    with pytest.raises(io.InputError, match="no dataset '/phases'"):
        io.read_region(path, "phases", 0)


@pytest.mark.parametrize("key", [np.s_[3], np.s_[1:4], np.s_[-2, 2:], np.s_[:, 5, 1:3], np.s_[2:2], np.s_[0, 0, -1]])
def test_view_regions_read_what_numpy_indexing_reads(key):
    """A view's regions and squeezed axes, against numpy indexing an array of indices (the oracle)."""
    shape = (5, 6, 7)
    regions, squeeze = io.view_regions(key, shape, "View")
    grid = np.indices(shape)
    want = grid[(slice(None),) + (key if isinstance(key, tuple) else (key,))]
    got = grid[(slice(None),) + tuple(slice(a, b) for a, b in regions)]
    assert np.array_equal(got.squeeze(axis=tuple(a + 1 for a in squeeze)), want)


def test_view_regions_refuse_a_step_naming_the_view():
    with pytest.raises(IndexError, match="HaloFreeView: slice step 2 on axis 1"):
        io.view_regions(np.s_[:, ::2], (4, 4, 4), "HaloFreeView")
