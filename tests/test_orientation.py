"""Orientation on import: the collector on any face is brought to z = 0, labels and second maps follow.

The oracle for each face is written here with numpy's own swapaxes / moveaxis / reversal, independently of
detachment.orientation's transpose tables.
"""

from __future__ import annotations

import re
from pathlib import Path

import h5py
import numpy as np
import pytest
import tifffile

from detachment import io
from detachment.orientation import SIDES, face_statistics, to_source_layout
from detachment.second_map import import_second_map

from .conftest import TINY_PHANTOM

# the file a volume V (z away from the collector, y, x) is stored as when its collector lies on each face
AS_FILE = {
    "z0": lambda v: v,
    "z1": lambda v: v[::-1],
    "y0": lambda v: np.swapaxes(v, 0, 1),
    "y1": lambda v: np.swapaxes(v[::-1], 0, 1),
    "x0": lambda v: np.moveaxis(v, 0, 2),
    "x1": lambda v: np.moveaxis(v[::-1], 0, 2),
}
# the file axis each output axis (z, y, x) comes from, for the voxel size
FILE_AXES = {"z": (0, 1, 2), "y": (1, 0, 2), "x": (2, 0, 1)}


def _vol(shape=(18, 20, 23), seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


@pytest.fixture(scope="module")
def phantom():
    from detachment.phantom import PhantomParams, generate_phantom

    return generate_phantom(PhantomParams(**TINY_PHANTOM), 5)


@pytest.mark.parametrize("side", SIDES)
def test_import_brings_each_face_to_z0_with_attrs_and_voxel_size(tmp_path, side):
    vol = _vol()
    src = tmp_path / "in.h5"
    with h5py.File(src, "w") as f:
        f["d"] = AS_FILE[side](vol)
    out = tmp_path / "volume.h5"
    file_voxel = (0.1, 0.2, 0.3)
    shape = io.import_volume(src, out, dataset="d", voxel_size_um=" ".join(map(str, file_voxel)), slab=4,
                             collector_side=side)
    data, voxel = io.read_volume(out)
    assert shape == vol.shape
    np.testing.assert_array_equal(data, vol)
    assert voxel == tuple(file_voxel[a] for a in FILE_AXES[side[0]])
    with h5py.File(out) as f:
        a = f["volume"].attrs
        assert a["collector_side"] == side and bool(a["flipped"]) == (side[1] == "1")
        assert tuple(a["axes_order"]) == FILE_AXES[side[0]]
    np.testing.assert_array_equal(to_source_layout(data, side), AS_FILE[side](vol))


@pytest.mark.parametrize("layout", ["folder", "zlib_stack", "plain_stack", "folder_of_one_stack"])
def test_tiff_layouts_are_reoriented_block_by_block(tmp_path, layout):
    vol = (_vol(seed=2) * 100 + 1000).astype(np.uint16)
    file = AS_FILE["x1"](vol)
    if layout == "folder":
        src = tmp_path / "slices"
        src.mkdir()
        for z, img in enumerate(file):
            tifffile.imwrite(src / f"s{z:03d}.tif", img)
    elif layout == "folder_of_one_stack":  # a folder whose only TIFF is the multi-page stack
        src = tmp_path / "one"
        src.mkdir()
        tifffile.imwrite(src / "stack.tif", file)
    else:
        src = tmp_path / "stack.tif"
        tifffile.imwrite(src, file, compression="zlib" if layout == "zlib_stack" else None)
    out = tmp_path / "volume.h5"
    io.import_volume(src, out, dataset=None, voxel_size_um=0.5, slab=5, collector_side="x1")
    np.testing.assert_array_equal(io.read_volume(out)[0], vol.astype(np.float32))


def test_bad_input_nonfinite_voxel_is_located_in_the_file_axes(tmp_path):
    file = _vol(shape=(20, 30, 22))
    file[4, 25, 7] = np.nan
    src = tmp_path / "in.h5"
    with h5py.File(src, "w") as f:
        f["d"] = file
    with pytest.raises(io.InputError, match=r"z=4, y=25, x=7"):
        io.import_volume(src, tmp_path / "o.h5", dataset="d", voxel_size_um=1.0, slab=3, collector_side="y1")


@pytest.mark.parametrize("side", ["z0", "y1", "x0"])
def test_auto_finds_the_collector_face_of_a_phantom(tmp_path, phantom, side):
    src = tmp_path / "in.tif"
    tifffile.imwrite(src, AS_FILE[side]((phantom.volume * 10000).astype(np.int32)))
    out = tmp_path / "volume.h5"
    io.import_volume(src, out, dataset=None, voxel_size_um=0.5, slab=4, collector_side="auto")
    with h5py.File(out) as f:
        assert f["volume"].attrs["collector_side"] == side
        np.testing.assert_array_equal(f["volume"][...], (phantom.volume * 10000).astype(np.int32))


def test_face_statistics_equal_numpy_on_the_whole_array(phantom):
    v = phantom.volume.astype(np.float64)
    stats = face_statistics(((z0, v[z0:z0 + 5]) for z0 in range(0, len(v), 5)), v.shape, depth=2)
    lo, hi = np.percentile(v[:, ::1, ::1], [1, 99])  # the sample is every voxel at this size
    faces = {"z0": v[:2], "z1": v[-2:], "y0": v[:, :2], "y1": v[:, -2:], "x0": v[:, :, :2], "x1": v[:, :, -2:]}
    for side, face in faces.items():
        assert stats[side]["level"] == pytest.approx((face.mean() - lo) / (hi - lo))
        assert stats[side]["spread"] == pytest.approx(face.std() / (hi - lo))


@pytest.mark.parametrize("case", ["noise", "two_faces"])
def test_bad_input_auto_refuses_no_or_several_collector_faces(tmp_path, phantom, case):
    if case == "noise":
        file, expected = _vol(shape=(20, 24, 24)), "no face looks like"
    else:  # the collector slab mirrored onto the top as well
        file, expected = np.concatenate([phantom.volume, phantom.volume[::-1]]), "several faces (z0, z1)"
    src = tmp_path / "in.h5"
    with h5py.File(src, "w") as f:
        f["d"] = file
    out = tmp_path / "o.h5"
    with pytest.raises(io.InputError, match=re.escape(expected)) as err:
        io.import_volume(src, out, dataset="d", voxel_size_um=1.0, collector_side="auto",
                         where="samples.tsv: sample 'a', field 'collector_side'")
    msg = str(err.value)
    assert "samples.tsv: sample 'a'" in msg and str(src) in msg and "set the sheet column 'collector_side'" in msg
    assert not out.exists()


def test_bad_input_unknown_collector_side(tmp_path):
    src = tmp_path / "in.h5"
    with h5py.File(src, "w") as f:
        f["d"] = _vol()
    with pytest.raises(io.InputError, match=r"where: collector side 'top' is not one of z0, z1"):
        io.import_volume(src, tmp_path / "o.h5", dataset="d", voxel_size_um=1.0, collector_side="top",
                         where="where")


def _imported(tmp_path, vol, side):
    src = tmp_path / "in.h5"
    with h5py.File(src, "w") as f:
        f["d"] = AS_FILE[side](vol)
    out = tmp_path / "volume.h5"
    io.import_volume(src, out, dataset="d", voxel_size_um=0.5, slab=4, collector_side=side)
    return out


@pytest.mark.parametrize("layout", ["stack", "folder", "hdf5"])
def test_labels_are_imported_like_the_volume(tmp_path, layout):
    vol = _vol()
    labels = np.random.default_rng(3).integers(0, 300, vol.shape).astype(np.uint16)
    labels[5] = 0  # an unlabelled slice
    volume = _imported(tmp_path, vol, "y1")
    file = AS_FILE["y1"](labels)
    if layout == "stack":
        src = tmp_path / "labels.tif"
        tifffile.imwrite(src, file)
    elif layout == "folder":
        src = tmp_path / "lab"
        src.mkdir()
        for z, img in enumerate(file):
            tifffile.imwrite(src / f"l{z:03d}.tif", img)
        src = str(src / "l*.tif")
    else:
        src = tmp_path / "labels.h5"
        with h5py.File(src, "w") as f:
            f["labels"] = file
    out = tmp_path / "labels_out.h5"
    io.import_labels(src, out, volume_path=volume, slab=3)
    with h5py.File(out) as f:
        assert f["labels"].dtype == np.uint32 and f["labels"].attrs["collector_side"] == "y1"
        np.testing.assert_array_equal(f["labels"][...], labels)


@pytest.mark.parametrize("case", ["shape", "float", "negative", "no_dataset"])
def test_bad_input_labels_are_refused_naming_the_file_and_field(tmp_path, case):
    vol = _vol()
    volume = _imported(tmp_path, vol, "x0")
    file = AS_FILE["x0"](np.ones(vol.shape, np.int32))
    expected = {"shape": "labels shape (20, 23, 17) (file axes) differs from the volume's (20, 23, 18)",
                "float": "instance labels must be integers", "negative": "label ids must lie in 0..",
                "no_dataset": "has no dataset 'labels'"}[case]
    if case == "shape":
        file = file[:, :, :-1]
    elif case == "float":
        file = file.astype(np.float32)
    elif case == "negative":
        file[3, 4, 5] = -2
    src = tmp_path / ("labels.h5" if case == "no_dataset" else "labels.tif")
    if case == "no_dataset":
        with h5py.File(src, "w") as f:
            f["seg"] = file
    else:
        tifffile.imwrite(src, file)
    where = "samples.tsv: sample 'a', field 'labels'"
    with pytest.raises(io.InputError, match=re.escape(expected)) as err:
        io.import_labels(src, tmp_path / "l.h5", volume_path=volume, where=where)
    assert str(src) in str(err.value) and where in str(err.value)
    assert not (tmp_path / "l.h5").exists()


def test_second_map_follows_the_volume_orientation(tmp_path):
    vol = _vol()
    volume = _imported(tmp_path, vol, "z1")
    values = _vol(seed=9)
    values[2, 3, 4] = np.nan
    src = tmp_path / "map.tif"
    tifffile.imwrite(src, AS_FILE["z1"](values))
    out = tmp_path / "second_map.h5"
    import_second_map(src, out, dataset=None, volume_path=volume, slab=4)
    with h5py.File(out) as f:
        np.testing.assert_array_equal(f["second_map"][...], values)  # NaN at the same place compares equal
        assert f["second_map"].attrs["collector_side"] == "z1"


def test_bad_input_second_map_inf_is_located_in_the_file_axes(tmp_path):
    vol = _vol()
    volume = _imported(tmp_path, vol, "x1")
    file = AS_FILE["x1"](_vol(seed=4))
    file[17, 20, 3] = np.inf
    src = tmp_path / "map.tif"
    tifffile.imwrite(src, file)
    with pytest.raises(io.InputError, match=r"z=17, y=20, x=3\) is inf"):
        import_second_map(src, tmp_path / "m.h5", dataset=None, volume_path=volume, slab=4)


@pytest.mark.parametrize("side", ["auto", "y1"])
def test_import_reads_the_file_one_slab_at_a_time(tmp_path, phantom, monkeypatch, side):
    src = tmp_path / "in.h5"
    with h5py.File(src, "w") as f:
        f["d"] = AS_FILE["y1"](phantom.volume)
    reads = []
    block = io.VolumeSource.block

    def recording(self, axis, lo, hi, dtype=np.float32):
        out = block(self, axis, lo, hi, dtype)
        reads.append((axis, out.shape))
        return out

    monkeypatch.setattr(io.VolumeSource, "block", recording)
    io.import_volume(src, tmp_path / "o.h5", dataset="d", voxel_size_um=0.5, slab=4, collector_side=side)
    assert reads and all(shape[axis] <= 4 for axis, shape in reads)
    assert {axis for axis, _ in reads} == ({0, 1} if side == "auto" else {1})  # auto: one pass along axis 0
    file_shape = AS_FILE["y1"](phantom.volume).shape
    assert sum(shape[1] for axis, shape in reads if axis == 1) == file_shape[1]  # each y slice read once


def test_bad_input_auto_reports_a_nonfinite_voxel_before_looking_for_the_face(tmp_path):
    file = _vol(shape=(20, 30, 22))
    file[11, 2, 9] = np.inf
    src = tmp_path / "in.h5"
    with h5py.File(src, "w") as f:
        f["d"] = file
    with pytest.raises(io.InputError, match=r"voxel \(z=11, y=2, x=9\) is inf"):
        io.import_volume(src, tmp_path / "o.h5", dataset="d", voxel_size_um=1.0, slab=4, collector_side="auto")


def test_folder_of_slices_with_a_side_collector_is_read_once_and_the_staging_copy_removed(tmp_path, monkeypatch):
    vol = (_vol(shape=(30, 20, 23), seed=6) * 100 + 1000).astype(np.uint16)
    src = tmp_path / "slices"
    src.mkdir()
    for z, img in enumerate(AS_FILE["y0"](vol)):
        tifffile.imwrite(src / f"s{z:03d}.tif", img)
    reads = []
    imread = tifffile.imread
    monkeypatch.setattr(tifffile, "imread", lambda f, *a, **k: reads.append(Path(f).name) or imread(f, *a, **k))
    out = tmp_path / "res" / "volume.h5"
    io.import_volume(src, out, dataset=None, voxel_size_um=0.5, slab=4, collector_side="y0")
    np.testing.assert_array_equal(io.read_volume(out)[0], vol.astype(np.float32))
    assert sorted(reads) == sorted(p.name for p in src.iterdir())  # every slice once, not once per slab
    assert [p.name for p in out.parent.iterdir()] == ["volume.h5"]
