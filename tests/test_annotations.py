"""Leakage-free splits and augmentation that keeps masks on their particles."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from detachment.annotations import SplitSettings, relabel_slice, split_slices
from detachment.augment import AugmentSettings, augment, random_affine, warp_pair


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("margin", [0, 2, 3])
def test_no_test_slice_has_a_training_slice_within_the_margin(seed, margin):
    available = {"a": list(range(4, 32)), "b": list(range(3, 29)), "c": [0, 1, 2, 10, 11, 12, 13, 30, 31]}
    s = SplitSettings(margin_slices=margin, seed=seed)
    out = split_slices(available, s)
    for t in out["test"]:
        for r in out["train"]:
            if r.sample == t.sample:
                assert abs(r.z - t.z) > margin, (t, r)
    for v in out["val"]:  # val is held out too: no training slice within the margin either
        for r in out["train"]:
            if r.sample == v.sample:
                assert abs(r.z - v.z) > margin
    seen = [(x.sample, x.z) for k in out for x in out[k]]
    assert len(seen) == len(set(seen))  # a slice is in at most one split
    total = sum(len(v) for v in available.values())
    assert abs(len(out["test"]) - round(s.test_fraction * total)) <= 1
    assert split_slices(available, s) == out  # reproducible by seed


def test_paper_proportions_and_counts_override():
    available = {"a": list(range(221))}
    out = split_slices(available, SplitSettings(margin_slices=0, seed=1))
    assert len(out["test"]) == 66
    out = split_slices(available, SplitSettings(n_test=10, n_val=5, margin_slices=1, seed=1))
    assert (len(out["test"]), len(out["val"])) == (10, 5)
    with pytest.raises(ValueError, match="leave training slices"):
        split_slices({"a": list(range(20))}, SplitSettings(n_test=15, n_val=5))


def test_relabel_slice_drops_small_instances_and_makes_ids_consecutive():
    m = np.zeros((20, 20), np.int32)
    m[2:8, 2:8] = 40
    m[10:12, 10:12] = 7  # 4 px
    m[12:19, 12:19] = 3
    out = relabel_slice(m, 12)
    assert sorted(np.unique(out)) == [0, 1, 2]
    assert (out[10:12, 10:12] == 0).all()


def test_augmented_masks_follow_the_image():
    # image = a distinct grey level per instance: after any augmentation each instance's pixels
    # must still show its own grey level (nearest-neighbour masks, linear image)
    rng = np.random.default_rng(0)
    mask = np.zeros((96, 96), np.uint16)
    for k in range(1, 7):
        cy, cx = rng.integers(15, 81, 2)
        yy, xx = np.mgrid[:96, :96]
        mask[((yy - cy) ** 2 + (xx - cx) ** 2 < 100) & (mask == 0)] = k
    image = (mask * 10.0).astype(np.float32)
    s = AugmentSettings(tile=64, copies=1, gain_range=(1, 1), offset_range=(0, 0), noise_sigma_max=0)
    for seed in range(20):
        m = random_affine(np.random.default_rng(seed), image.shape, s)
        img, msk = warp_pair(image, mask, m, s.tile)
        # linear interpolation blends grey levels only where an instance meets another or background
        inner = (msk > 0) & (ndimage.minimum_filter(msk, 5) == ndimage.maximum_filter(msk, 5))
        # and away from where the tile leaves the image (filled with the median grey level)
        _, inside = warp_pair(image, np.ones(image.shape, np.uint8), m, s.tile)
        inner &= ndimage.binary_erosion(inside > 0, iterations=2)
        np.testing.assert_allclose(img[inner], msk[inner] * 10.0, atol=1e-3)


def test_augment_is_deterministic_and_relabels_per_tile():
    rng = np.random.default_rng(1)
    images = rng.random((2, 80, 80)).astype(np.float32)
    masks = np.zeros((2, 80, 80), np.uint16)
    masks[:, 20:40, 20:40] = 5
    masks[:, 50:70, 45:75] = 9
    s = AugmentSettings(tile=48, copies=3, seed=3)
    a, b = augment(images, masks, s), augment(images, masks, s)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    tiles, tmasks, source = a
    assert tiles.shape == (6, 48, 48) and source.tolist() == [0, 0, 0, 1, 1, 1]
    for tm in tmasks:
        ids = np.unique(tm[tm > 0])
        assert ids.tolist() == list(range(1, len(ids) + 1))


@pytest.mark.parametrize("case", ["shape", "dataset", "dtype"])
def test_bad_input_label_slices_that_do_not_fit_the_volume(tmp_path, case):
    import h5py

    from detachment.annotations import check_label_volume
    from detachment.io import InputError

    p = tmp_path / "labels.h5"
    arr = np.zeros((10, 32, 32), np.uint16 if case != "dtype" else np.float32)
    with h5py.File(p, "w") as f:
        f["other" if case == "dataset" else "labels"] = arr
    expected = {"shape": "label slices must index the volume", "dataset": "has no dataset '/labels'",
                "dtype": "must be integers"}[case]
    with pytest.raises(InputError, match=expected) as e:
        check_label_volume(p, "labels", (10, 32, 40) if case == "shape" else (10, 32, 32))
    assert str(p) in str(e.value)


def test_bad_input_split_counts_larger_than_the_labelled_slices():
    with pytest.raises(ValueError, match=r"n_test \(30\) and n_val \(5\) must be >= 1 and leave training slices"):
        split_slices({"a": list(range(20))}, SplitSettings(n_test=30, n_val=5))


def test_split_files_carry_neighbour_slices_for_a_2_5d_model(tmp_path):
    import h5py

    from detachment import io
    from detachment.annotations import LabelledSlice, read_model_images, write_split
    from detachment.augment import augment_file

    rng = np.random.default_rng(2)
    vol = rng.random((6, 40, 40)).astype(np.float32)
    labels = np.zeros((6, 40, 40), np.uint16)
    labels[:, 10:25, 10:25] = 1
    io.write_volume(tmp_path / "v.h5", vol, 0.5, "test")
    with h5py.File(tmp_path / "l.h5", "w") as f:
        f.create_dataset("labels", data=labels)
    zs = [0, 3, 5]  # both faces of the volume and one inside
    write_split(tmp_path / "s.h5", [LabelledSlice("a", z) for z in zs], {"a": tmp_path / "v.h5"},
                {"a": tmp_path / "l.h5"}, "labels", 12)
    np.testing.assert_array_equal(read_model_images(tmp_path / "s.h5", 0), vol[zs])
    stacked = read_model_images(tmp_path / "s.h5", 1)
    assert stacked.shape == (3, 3, 40, 40)
    for i, z in enumerate(zs):  # z-1, z, z+1, the edge slice repeated at the faces
        np.testing.assert_array_equal(stacked[i], vol[[max(z - 1, 0), z, min(z + 1, 5)]])
    # augmented tiles keep the channels, every channel under the same map
    s = AugmentSettings(tile=32, copies=2, seed=1, noise_sigma_max=0, gain_range=(1, 1), offset_range=(0, 0))
    augment_file(tmp_path / "s.h5", tmp_path / "t.h5", s, context_slices=1)
    tiles = io.read_dataset(tmp_path / "t.h5", "images")
    assert tiles.shape == (6, 3, 32, 32)
    m = random_affine(np.random.default_rng(1), (40, 40), s)  # the first tile's map
    for c in range(3):
        np.testing.assert_allclose(tiles[0, c], warp_pair(stacked[0, c], labels[0], m, 32)[0], atol=1e-6)
    # a split file written before neighbour slices were stored is refused by name
    with h5py.File(tmp_path / "old.h5", "w") as f:
        f.create_dataset("images", data=vol[:2])
    with pytest.raises(io.InputError, match="old.h5.*context"):
        read_model_images(tmp_path / "old.h5", 1)
