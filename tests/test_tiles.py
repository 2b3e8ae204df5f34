"""Tiled inference of large slices and flip fusion, against analytic disk scenes and brute-force oracles.

The model is an analytic stand-in (:class:`BlobModel`): it finds every bright blob exactly, so any error
is the tiling's or the merging's.
"""

from __future__ import annotations

import inspect
import logging
import math
import tracemalloc
import types

import h5py
import numpy as np
import pytest
import torch
import yaml
from scipy import ndimage
from torch import nn

from detachment import inference, io, metrics
from detachment.cnn.predict import (
    predict,
    predictions_to_labels,
)
from detachment.cnn.tiles import (
    AUTO_TILE_PX,
    MIN_OVERLAP_PX,
    Tile,
    axis_tiles,
    core_crops,
    paint_crops,
    resolve_tile_px,
    tile_overlap,
    tile_windows,
)

from .conftest import ROOT
from .test_maskrcnn import random_detections

CPU = torch.device("cpu")


class BlobModel(nn.Module):
    """An analytic stand-in for a trained Mask R-CNN: every bright connected blob (> 0.5) of an image is one
    detection, its mask the blob and its score the blob's mean grey value; those scoring above
    ``roi_heads.score_thresh``, at most ``roi_heads.detections_per_img`` of them, best first, as torchvision
    keeps (both read at each call, as torchvision does; the RPN's settings are held for the code that raises
    the cap). Masks are numpy-backed (seen by tracemalloc). Records the (h, w) of every image it sees and the
    most mask bytes one call returns."""

    def __init__(self, cap: int | None = None):
        super().__init__()
        self.transform = types.SimpleNamespace(min_size=(64,), max_size=64)
        if cap is not None:
            self.roi_heads = types.SimpleNamespace(detections_per_img=cap, score_thresh=0.05)
            self.rpn = types.SimpleNamespace(_pre_nms_top_n={"training": 1, "testing": 1000},
                                             _post_nms_top_n={"training": 1, "testing": 500})
        self.seen, self.output_bytes = [], 0

    @property
    def cap(self):
        return self.roi_heads.detections_per_img if hasattr(self, "roi_heads") else None

    def forward(self, images):
        out, size = [], 0
        for im in images:
            a = im[0].numpy()
            self.seen.append(a.shape)
            lab, n = ndimage.label(a > 0.5)
            score = np.asarray(ndimage.mean(a, lab, np.arange(1, n + 1)), np.float32).reshape(-1)
            ids = np.argsort(-score, kind="stable")[: self.cap] + 1
            if hasattr(self, "roi_heads"):
                ids = ids[score[ids - 1] > self.roi_heads.score_thresh]
            masks = np.zeros((len(ids), 1) + a.shape, np.float32)
            for i, k in enumerate(ids):
                masks[i, 0] = lab == k
            size += masks.nbytes
            out.append({"scores": torch.from_numpy(score[ids - 1].astype(np.float32)),
                        "masks": torch.from_numpy(masks)})
        self.output_bytes = max(self.output_bytes, size)
        return out


def disk_scene(size: int, radius: float, spacing: float, must=(), seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A (size, size) slice of non-overlapping disks, each of its own grey value in (0.55, 0.95) (a unique
    score for :class:`BlobModel`), on a jittered grid plus the centres ``must`` (px, pixel centres at +0.5);
    returns the image (float32) and the truth labels (uint32, 1..n)."""
    rng = np.random.default_rng(seed)
    centres = [tuple(map(float, c)) for c in must]
    fixed = np.array(centres).reshape(-1, 2)
    jitter = (spacing - 2 * radius - 3) / 2
    for cy in np.arange(spacing / 2, size - radius - 1, spacing):
        for cx in np.arange(spacing / 2, size - radius - 1, spacing):
            c = np.array([cy, cx]) + rng.uniform(-jitter, jitter, 2)
            inside = np.all(c >= radius + 1) and np.all(c <= size - radius - 1)
            if inside and (not len(fixed) or np.min(np.hypot(*(fixed - c).T)) >= 2 * radius + 3):
                centres.append(tuple(c))
    truth = np.zeros((size, size), np.uint32)
    image = np.zeros((size, size), np.float32)
    r = int(math.ceil(radius)) + 1
    grey = 0.55 + 0.4 * (np.arange(len(centres)) + 1) / (len(centres) + 1)
    for k, (cy, cx) in enumerate(centres, 1):
        y0, x0 = max(0, int(cy) - r), max(0, int(cx) - r)
        yy, xx = np.mgrid[y0:int(cy) + r + 1, x0:int(cx) + r + 1] + 0.5
        disk = (yy - cy) ** 2 + (xx - cx) ** 2 < radius ** 2
        truth[y0:y0 + disk.shape[0], x0:x0 + disk.shape[1]][disk] = k
        image[y0:y0 + disk.shape[0], x0:x0 + disk.shape[1]][disk] = grey[k - 1]
    return image, truth


def seam_centres(tiles: list[Tile]) -> list[tuple[float, float]]:
    """Disk centres on every crossing of the tiles' seams: core boundaries and window edges inside the slice."""
    ys = sorted({v for t in tiles for v in (t.y0, t.y1, t.cy0)} - {0, max(t.y1 for t in tiles)})
    xs = sorted({v for t in tiles for v in (t.x0, t.x1, t.cx0)} - {0, max(t.x1 for t in tiles)})
    return [(y, x) for y in ys for x in xs]


def same_instances(truth: np.ndarray, pred: np.ndarray) -> bool:
    """Whether two label images hold the same instances pixel for pixel (ids may differ)."""
    if not np.array_equal(truth > 0, pred > 0):
        return False
    pairs = np.unique(np.stack([truth[truth > 0], pred[truth > 0]]), axis=1)
    return len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]


# --- geometry


@pytest.mark.parametrize("tile,overlap", [(128, 16), (200, 64), (512, 64), (461, 100)])
def test_axis_tiles_are_equal_overlap_enough_and_their_cores_partition_the_axis(tile, overlap):
    for length in range(1, 2100, 37):
        tiles = axis_tiles(length, tile, overlap)
        starts = [t[0] for t in tiles]
        sides = {t[1] - t[0] for t in tiles}
        assert len(sides) == 1 and 0 < sides.pop() <= tile
        assert starts[0] == 0 and tiles[-1][1] == length and starts == sorted(starts)
        assert all(a[1] - b[0] >= overlap for a, b in zip(tiles, tiles[1:]))  # overlap with the next tile
        cover = np.concatenate([np.arange(c0, c1) for _, _, c0, c1 in tiles])
        np.testing.assert_array_equal(cover, np.arange(length))  # cores: a partition, in order
        for i, (s, e, c0, c1) in enumerate(tiles):
            assert s <= c0 < c1 <= e
            assert i == 0 or c0 - s >= overlap // 2
            assert i == len(tiles) - 1 or e - c1 >= overlap // 2
        n = len(tiles)  # as few as cover the axis: n - 1 tiles of the largest side overlapping by overlap do not
        assert n == 1 or (n - 1) * tile - (n - 2) * overlap < length


def test_tile_settings_resolve_and_refuse_what_cannot_work():
    assert resolve_tile_px("auto") == AUTO_TILE_PX == 256
    assert resolve_tile_px(None) is None and resolve_tile_px(256) == 256 and resolve_tile_px(384.0) == 384
    for bad in (100, "big", True, 300.5):
        with pytest.raises(ValueError, match="infer.tile_px"):
            resolve_tile_px(bad)
    assert tile_overlap({"scale": {"particle_diameter_px": 12.5}}) == MIN_OVERLAP_PX == 64
    assert tile_overlap({"scale": {"particle_diameter_px": 40.2}}) == 81
    assert tile_overlap({"model": {}}) == 64 and tile_overlap({"scale": None}) == 64
    assert tile_windows((512, 512), (1.0, 1.0), 512, 64) is None  # fits: whole
    assert tile_windows((256, 300), (2.0, 2.0), 512, 64) is not None  # 512 x 600 as the model sees it
    assert tile_windows((2000, 2000), (1.0, 1.0), None, 64) is None
    with pytest.raises(ValueError, match="under twice the tile overlap"):
        tile_windows((100, 100), (1.0, 1.0), 128, 80)
    schema = yaml.safe_load((ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text())
    default = schema["properties"]["infer"]["properties"]["tile_px"]["default"]
    assert inspect.signature(inference.infer_slab).parameters["tile_px"].default == default


# --- tiled prediction against the truth


@pytest.fixture(scope="module")
def seam_scene():
    """1024 x 1024 px: hundreds of disks (16 px) on a grid and on every crossing of the 512 px tiling's seams."""
    tiles = tile_windows((1024, 1024), (1.0, 1.0), 512, 64)
    image, truth = disk_scene(1024, 8.0, 40.0, must=seam_centres(tiles))
    return image, truth, tiles


def test_tiled_prediction_finds_every_disk_once_and_whole_across_seams_and_corners(seam_scene, caplog):
    image, truth, tiles = seam_scene
    n = int(truth.max())
    # the scene tests what it should: disks cut by tile windows, disks across cores, more than the cap
    cut = [k for k in range(1, n + 1) for t in tiles if _cut_by(truth == k, t)]
    across = [k for k in range(1, n + 1) if not any(_inside(truth == k, t, core=True) for t in tiles)]
    assert n > 500 and len(set(cut)) > 50 and len(across) > 30
    assert all(any(_inside(truth == k, t) for t in tiles) for k in range(1, n + 1))  # overlap ≥ diameter
    model = BlobModel(cap=150)
    assert all(len(np.unique(truth[t.y0:t.y1, t.x0:t.x1])) - 1 < 150 for t in tiles)
    with caplog.at_level(logging.WARNING):
        labels, rows = predict(model, image[None], CPU, 4, 0.5, 0.5, tile_px=512, overlap_px=64)
    assert not caplog.records
    assert {s for s in model.seen} == {(tiles[0].y1 - tiles[0].y0, tiles[0].x1 - tiles[0].x0)}
    scores = metrics.instance_scores(truth.astype(np.int64), labels[0].astype(np.int64), 0.5)
    assert scores.f1 == 1.0 and scores.mean_matched_iou == 1.0
    assert len(rows) == n and same_instances(truth, labels[0])  # no duplicates, every disk whole


def test_the_same_slice_untiled_hits_the_cap_and_says_so(seam_scene, caplog):
    image, truth, _ = seam_scene
    with caplog.at_level(logging.WARNING):
        labels, rows = predict(BlobModel(cap=150), image[None], CPU, 1, 0.5, 0.5, first_z=7)
    assert len(rows) == 150 < truth.max()
    assert any("slice z=7" in r.message and "cap" in r.message and "150" in r.message for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING):  # tiles too crowded for a smaller cap: named too
        predict(BlobModel(cap=40), image[None], CPU, 4, 0.5, 0.5, tile_px=512, overlap_px=64, first_z=3)
    assert any("slice z=3" in r.message and "of 9 tiles" in r.message and "cap of 40" in r.message
               for r in caplog.records)


def test_a_crowded_slice_is_predicted_again_with_the_cap_raised_until_nothing_is_lost(seam_scene, caplog):
    """The untiled slice of 635 disks fills the model's cap of 150: predicted again with 300, 600, then
    infer.max_detections (1000), every disk is found once and whole, without a warning; with infer.max_detections 300 the warning names
    the raised cap and 300 disks are kept, the best-scoring."""
    image, truth, _ = seam_scene
    n = int(truth.max())
    assert 600 < n < 1000
    model = BlobModel(cap=150)
    with caplog.at_level(logging.WARNING):
        labels, rows = predict(model, image[None], CPU, 1, 0.5, 0.5, max_detections=1000)
    assert not caplog.records
    assert len(model.seen) == 4  # 150, 300, 600, 1000
    assert len(rows) == n and same_instances(truth, labels[0])
    assert (model.cap, model.rpn._post_nms_top_n["testing"], model.rpn._pre_nms_top_n["testing"]) == (150, 500, 1000)
    with caplog.at_level(logging.WARNING):
        labels, rows = predict(BlobModel(cap=150), image[None], CPU, 1, 0.5, 0.5, first_z=2, max_detections=300)
    assert len(rows) == 300
    assert sorted(r["score"] for r in rows) == pytest.approx(np.sort(np.unique(image[truth > 0]))[-300:])
    assert any("slice z=2" in r.message and "cap" in r.message and "300" in r.message for r in caplog.records)


def test_detections_below_the_lowest_score_kept_take_no_place_under_the_cap(caplog):
    """120 bright disks (scores 0.55-0.95) and 200 dim ones (0.51-0.54) against a cap of 150: the dim ones
    are below the score kept (0.55), so they are not let in: no re-prediction, no warning, every bright disk
    found; with TTA (whose flips fuse scores down to 0.05) they count, and the cap is raised: the unflipped
    pass fills 150 and 300, so the other flips are run only at 600."""
    image, truth = disk_scene(640, 6.0, 30.0, seed=5)
    n = int(truth.max())
    assert 300 < n < 600
    dim = truth > 120
    image[dim] = 0.51 + 0.03 * truth[dim] / n
    bright = np.where(dim, 0, truth)
    model = BlobModel(cap=150)
    with caplog.at_level(logging.WARNING):
        labels, rows = predict(model, image[None], CPU, 1, 0.55, 0.5, max_detections=1000)
    assert not caplog.records and len(model.seen) == 1
    assert same_instances(bright, labels[0]) and model.roi_heads.score_thresh == 0.05
    model = BlobModel(cap=150)
    labels, _ = predict(model, image[None], CPU, 1, 0.55, 0.5, tta=True, max_detections=1000)
    assert len(model.seen) == 1 + 1 + 4
    assert same_instances(bright, labels[0])


def _inside(mask: np.ndarray, t: Tile, core: bool = False) -> bool:
    y0, y1, x0, x1 = (t.cy0, t.cy1, t.cx0, t.cx1) if core else (t.y0, t.y1, t.x0, t.x1)
    return mask[y0:y1, x0:x1].sum() == mask.sum()


def _cut_by(mask: np.ndarray, t: Tile) -> bool:
    part = mask[t.y0:t.y1, t.x0:t.x1].sum()
    return 0 < part < mask.sum()


@pytest.mark.parametrize("tta", [False, True])
def test_a_slice_that_fits_one_tile_is_predicted_whole_as_without_tiling(tta):
    image, truth = disk_scene(192, 6.0, 30.0, seed=1)
    a, b = BlobModel(), BlobModel()
    whole = predict(a, image[None], CPU, 2, 0.5, 0.5, tta=tta)
    tiled = predict(b, image[None], CPU, 2, 0.5, 0.5, tta=tta, tile_px=resolve_tile_px("auto"), overlap_px=64)
    np.testing.assert_array_equal(whole[0], tiled[0])
    assert whole[1] == tiled[1] and set(b.seen) == {(192, 192)}
    assert same_instances(truth, tiled[0][0])


@pytest.mark.parametrize("tta,scale", [(False, (1.0, 1.0)), (True, (1.0, 1.0)), (False, (2.0, 2.0))])
def test_forced_tiling_gives_the_whole_slice_labels(tta, scale):
    """Tiles of 128 px (as the model sees them) on a 320 px slice: the same labels, ids and rows as whole."""
    image, truth = disk_scene(320, 6.0, 26.0, seed=2)
    whole = predict(BlobModel(), image[None], CPU, 2, 0.5, 0.5, tta=tta, scale=scale)
    model = BlobModel()
    tiled = predict(model, image[None], CPU, 2, 0.5, 0.5, tta=tta, scale=scale, tile_px=128, overlap_px=32)
    assert max(max(s) for s in model.seen) <= 128
    np.testing.assert_array_equal(whole[0], tiled[0])
    assert whole[1] == tiled[1]
    assert same_instances(truth, tiled[0][0]) == (scale == (1.0, 1.0))
    assert metrics.instance_scores(truth.astype(np.int64), tiled[0][0].astype(np.int64), 0.5).f1 == 1.0


def test_tiled_inference_of_a_volume_is_threaded_through_infer_slab(tmp_path, monkeypatch, caplog):
    image, truth = disk_scene(640, 8.0, 40.0, seed=3)
    vol = tmp_path / "v.h5"
    io.write_volume(vol, np.stack([image, image[::-1]]), 0.5, "test")
    meta = {"model": {"context_slices": 0}, "scale": {"voxel_size_um": [0.5, 0.5], "particle_diameter_px": 16.0}}
    monkeypatch.setattr(inference, "load_model", lambda w, m, d: (BlobModel(cap=150), meta))
    with caplog.at_level(logging.INFO):
        inference.infer_slab(vol, "w.pt", "m.json", 0, 2, tmp_path / "s.h5", device="cpu", progress=False,
                             tile_px=256)
    assert any("predicted in 9 tiles" in r.message for r in caplog.records)
    with h5py.File(tmp_path / "s.h5") as f:
        assert same_instances(truth, f["labels"][0]) and same_instances(truth[::-1], f["labels"][1])
    meta["scale"]["particle_diameter_px"] = 40.0  # overlap 80 px: tiles of 128 px would be mostly overlap
    with pytest.raises(io.InputError, match=r"v.h5: infer.tile_px 128 is under twice the tile overlap 80 px"):
        inference.infer_slab(vol, "w.pt", "m.json", 0, 2, tmp_path / "t.h5", device="cpu", progress=False,
                             tile_px=128)


def test_painting_holds_crops_not_slice_sized_masks():
    """2048 x 2048 px, about 2000 disks: beyond the model's own tile-sized output, merging and painting
    allocate (numpy, traced) less than 4 slice-sized float arrays, where pasting every detection on the
    slice, as whole-slice painting does, would take about 2000."""
    image, truth = disk_scene(2048, 9.0, 44.0, seed=4)
    n = int(truth.max())
    assert n > 1900
    model = BlobModel()
    tracemalloc.start()
    try:
        labels, rows = predict(model, image[None], CPU, 1, 0.5, 0.5, tile_px=512, overlap_px=64)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    slice_bytes = image.nbytes
    assert max(max(s) for s in model.seen) <= 512
    assert peak - model.output_bytes < 4 * slice_bytes, (peak, model.output_bytes, slice_bytes)
    assert len(rows) == n and same_instances(truth, labels[0])


# --- painting and flip fusion against brute-force oracles


def paint_whole_masks(pred, shape, score_threshold, mask_threshold, fraction):
    """Brute-force painting on whole-slice masks: by decreasing score (stable), a detection takes the free
    pixels of its mask unless they are fewer than ``fraction`` of it (or none)."""
    scores, masks = pred["scores"].numpy(), pred["masks"][:, 0].numpy() >= mask_threshold
    out, rows = np.zeros(shape, np.uint32), []
    for k in sorted(np.flatnonzero(scores >= score_threshold), key=lambda i: -scores[i]):
        free = masks[k] & (out == 0)
        if not free.any() or free.sum() < fraction * masks[k].sum():
            continue
        out[free] = len(rows) + 1
        ys, xs = np.nonzero(free)
        rows.append({"label": len(rows) + 1, "score": float(scores[k]), "y0": int(ys.min()), "x0": int(xs.min()),
                     "y1": int(ys.max()) + 1, "x1": int(xs.max()) + 1, "area_px": int(free.sum())})
    return out, rows


@pytest.mark.parametrize("seed", range(4))
def test_painting_crops_and_predictions_equals_painting_whole_masks(seed):
    rng = np.random.default_rng(seed)
    pred = random_detections(rng, 60)
    whole = Tile(0, 64, 0, 80, 0, 64, 0, 80)
    for fraction in (0.0, 0.5, 0.9):
        expect = paint_whole_masks(pred, (64, 80), 0.4, 0.5, fraction)
        by_predictions = predictions_to_labels(pred, (64, 80), 0.4, 0.5, fraction)
        np.testing.assert_array_equal(by_predictions[0], expect[0])
        assert by_predictions[1] == expect[1]
        keep = pred["scores"].numpy() >= 0.4
        crops = core_crops(pred["scores"].numpy()[keep], pred["masks"][keep, 0].numpy(), whole, 0.5)
        got = paint_crops(crops, (64, 80), fraction)
        np.testing.assert_array_equal(got[0], expect[0])
        assert got[1] == expect[1]
