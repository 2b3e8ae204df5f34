"""Watershed baseline on shapes with known answers, and its tuning on train data only."""

from __future__ import annotations

import numpy as np
import pytest

from detachment.metrics import instance_scores
from detachment.watershed import WatershedParams, default_grid, segment, tune


def two_disks(gap: int, size=64, r=12):
    yy, xx = np.mgrid[:size, :size]
    truth = np.zeros((size, size), np.int32)
    c1, c2 = size // 2 - r - gap // 2, size // 2 + r + (gap - gap // 2)
    truth[(yy - size // 2) ** 2 + (xx - c1) ** 2 < r * r] = 1
    truth[((yy - size // 2) ** 2 + (xx - c2) ** 2 < r * r) & (truth == 0)] = 2
    # grey particles brighter in the centre (as blurred cross-sections are)
    d1 = np.sqrt((yy - size // 2) ** 2 + (xx - c1) ** 2)
    d2 = np.sqrt((yy - size // 2) ** 2 + (xx - c2) ** 2)
    img = np.where(truth > 0, 0.7 + 0.1 * (1 - np.minimum(d1, d2) / r), 0.1).astype(np.float32)
    return img, truth


@pytest.mark.parametrize("markers", ["intensity", "distance"])
def test_separated_and_touching_disks_are_two_instances(markers):
    for gap in (4, 0):
        img, truth = two_disks(gap)
        p = WatershedParams(markers=markers, sigma=1.0, fg_threshold=0.4, h=0.02, footprint=5)
        s = instance_scores(truth, segment(img, p))
        assert (s.tp, s.fp, s.fn) == (2, 0, 0), (markers, gap)


def test_3d_segmentation_of_two_touching_balls():
    zz, yy, xx = np.mgrid[:32, :32, :48]
    truth = np.zeros(zz.shape, np.int32)
    truth[(zz - 16) ** 2 + (yy - 16) ** 2 + (xx - 13) ** 2 < 100] = 1
    truth[((zz - 16) ** 2 + (yy - 16) ** 2 + (xx - 33) ** 2 < 100) & (truth == 0)] = 2
    img = np.where(truth > 0, 0.8, 0.1).astype(np.float32)
    lab = segment(img, WatershedParams(markers="distance", sigma=0.5, fg_threshold=0.4, h=0.05, footprint=5,
                                       min_area=50))
    s = instance_scores(truth, lab)
    assert (s.tp, s.fp, s.fn) == (2, 0, 0)


def test_unknown_marker_type_is_refused():
    with pytest.raises(ValueError, match="'gradient' is not 'intensity' or 'distance'"):
        segment(np.zeros((20, 20), np.float32), WatershedParams(markers="gradient"))


@pytest.mark.parametrize("search", ["coordinate", "grid"])
def test_tuning_finds_a_foreground_threshold_that_works(search):
    imgs, truths = zip(*(two_disks(g) for g in (0, 2, 6)))
    grid = {"markers": ["distance"], "sigma": [1.0], "fg_threshold": [0.05, 0.4, 0.95], "h": [0.05],
            "footprint": [5], "compactness": [0.0]}
    best, table = tune(np.stack(imgs), np.stack(truths), grid, search=search, progress=False)
    assert best.fg_threshold == 0.4
    assert table.iloc[0]["f"] == 1.0
    assert table.f.is_monotonic_decreasing


def test_default_grid_centres_the_foreground_threshold():
    g = default_grid(0.5, 0.05)
    assert 0.5 in g["fg_threshold"] and min(g["fg_threshold"]) < 0.5 < max(g["fg_threshold"])
