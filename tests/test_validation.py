"""Science validation against truth: matching, per-particle errors, the planted effect."""

import numpy as np
import pandas as pd
from scipy.stats import mannwhitneyu

from detachment import validation
from detachment.particles import STAIRCASE


def _balls(shape, centres, r, shift=(0, 0, 0)):
    zz, yy, xx = np.indices(shape)
    out = np.zeros(shape, np.uint32)
    for k, c in enumerate(centres, start=1):
        c = np.add(c, shift)
        out[(zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 <= r * r] = k
    return out


def test_matched_particles_pairs_shifted_balls_and_drops_a_missing_one():
    truth = _balls((20, 40, 40), [(10, 10, 10), (10, 28, 28), (10, 10, 30)], 6)
    pred = _balls((20, 40, 40), [(10, 28, 28), (10, 10, 10)], 6, shift=(0, 1, 0))  # ids swapped, shifted
    m = validation.matched_particles(truth, pred)
    assert dict(zip(m.truth_label, m.label)) == {1: 2, 2: 1}
    assert (m.iou > 0.5).all() and (m.iou < 1).all()


def test_links_from_labels_boxes_follow_the_links_layout():
    lab = np.zeros((5, 8, 9), np.uint32)
    lab[1:3, 2:5, 0:4] = 7
    t = validation.links_from_labels(lab)
    row = t.set_index("label").loc[7]
    assert (row.z_min, row.z_max, row.y_min, row.y_max, row.x_min, row.x_max) == (1, 2, 2, 5, 0, 4)
    assert bool(row.touches_border)  # x starts at 0


def test_compare_and_summarize_errors_and_the_crack_surface_definition():
    truth = pd.DataFrame({"label": [1, 2, 3], "detachment": [0.2, 0.5, 0.8], "crack_area_um2": [30.0, 0.0, 60.0],
                          "volume_um3": [100.0, 100.0, 200.0], "touches_border": [False, False, True]})
    measured = pd.DataFrame({"label": [11, 12], "detachment": [0.25, 0.4], "detachment_std": [0.01, 0.01],
                             "crack_surface_per_volume_per_um": [0.22, 0.0]})
    pairs = pd.DataFrame({"truth_label": [1, 2], "label": [11, 12], "iou": [0.8, 0.7]})
    c = validation.compare_particles(truth, measured, pairs, "pipeline").assign(sample="s")
    np.testing.assert_allclose(c.detachment_error, [0.05, -0.1])
    np.testing.assert_allclose(c.crack_surface_truth, [30 * STAIRCASE / 100, 0.0])
    assert np.isnan(c.crack_surface_rel_error.iloc[1])  # no cracks in truth: no relative error
    summary = validation.summarize(c, {"s": 3})
    assert summary["sample"].tolist() == ["s", "all"]
    s = summary.iloc[0]
    assert s.n_matched == 2 and s.n_truth == 3
    assert np.isclose(s.detachment_mae, 0.075) and np.isclose(s.detachment_bias, -0.025)
    assert np.isclose(s.crack_surface_rel_error_of_mean, (0.11 - 0.1) / 0.1)
    assert c.detachment_error_voxel_truth.isna().all()  # a truth without the voxelised detachment
    voxel = truth.assign(detachment_voxel_faces=[0.22, 0.35, 0.7])
    c = validation.compare_particles(voxel, measured, pairs, "pipeline")
    np.testing.assert_allclose(c.detachment_error_voxel_truth, [0.03, 0.05])
    np.testing.assert_allclose(c.detachment_error, [0.05, -0.1])


def test_effect_size_matches_a_direct_computation_and_leaves_border_particles_out():
    rng = np.random.default_rng(3)
    hi, lo = rng.uniform(0.3, 0.6, 40), rng.uniform(0.1, 0.3, 50)
    border_hi = np.zeros(40, bool)
    border_hi[:5] = True
    hi_t = pd.DataFrame({"detachment": hi, "touches_border": border_hi})
    lo_t = pd.DataFrame({"detachment": lo, "touches_border": np.zeros(50, bool)})
    hi_m, lo_m = hi_t.assign(detachment=hi * 0.9), lo_t.assign(detachment=lo * 0.9)
    e = validation.effect_size({"a": hi_t, "b": lo_t}, {"a": hi_m, "b": lo_m}, {"a": "1C", "b": "C/10"})
    planted = hi[5:].mean() - lo.mean()
    assert np.isclose(e["planted_difference"], planted)
    assert np.isclose(e["found_over_planted"], 0.9)
    assert np.isclose(e["mann_whitney_p"], mannwhitneyu(0.9 * hi[5:], 0.9 * lo).pvalue)
    assert validation.effect_size({"a": hi_t}, {"a": hi_m}, {"a": "1C"}) == {}


def test_effect_on_the_truths_own_particles_reads_the_true_rows_of_the_comparison():
    # the true-source rows of compare_particles, fed back to effect_size, give the direct computation
    rng = np.random.default_rng(4)
    frames = []
    for sample, n, lo_hi in (("a", 30, (0.3, 0.6)), ("b", 20, (0.1, 0.3))):
        det = rng.uniform(*lo_hi, n)
        border = np.arange(n) < 3
        truth = pd.DataFrame({"label": np.arange(1, n + 1), "detachment": det, "crack_area_um2": 1.0,
                              "volume_um3": 10.0, "touches_border": border})
        measured = pd.DataFrame({"label": np.arange(1, n + 1), "detachment": det + 0.05})
        frames.append((sample, truth, validation.compare_particles(truth, measured, None, "true")
                       .assign(sample=sample)))
    pipeline = frames[0][2].assign(source="pipeline")  # rows of another source are not read
    per_particle = pd.concat([f for _, _, f in frames] + [pipeline], ignore_index=True)
    tables = validation.true_particle_tables(per_particle)
    assert sorted(tables) == ["a", "b"] and len(tables["a"]) == 30
    e = validation.effect_size({s: t for s, t, _ in frames}, tables, {"a": "1C", "b": "C/10"})
    ta, tb = frames[0][1], frames[1][1]
    planted = ta.detachment[3:].mean() - tb.detachment[3:].mean()
    assert np.isclose(e["planted_difference"], planted)
    assert np.isclose(e["found_difference"], planted)  # the same +0.05 bias in both cells cancels


def test_compare_particles_with_an_empty_pipeline_table_gives_no_rows():
    truth = pd.DataFrame({"label": [1], "detachment": [0.2], "crack_area_um2": [3.0], "volume_um3": [10.0],
                          "touches_border": [False]})
    empty = pd.DataFrame(columns=["label", "detachment"])
    pairs = pd.DataFrame({"truth_label": pd.Series([], dtype=int), "label": pd.Series([], dtype=int),
                          "iou": pd.Series([], dtype=float)})
    c = validation.compare_particles(truth, empty, pairs, "pipeline")
    assert len(c) == 0 and "detachment_error" in c


def test_tuning_cells_are_measured_as_the_reported_cells_are():
    # the tuning config chooses settings for make validate: it must let stopped maps and contact readings
    # through the same way (one stopped tuning cell otherwise stops the whole tuning run)
    from pathlib import Path

    import yaml

    config = Path(__file__).resolve().parents[1] / "config"
    validate = yaml.safe_load((config / "validate.yaml").read_text())
    tuning = yaml.safe_load((config / "tuning.yaml").read_text())
    for section in ("threshold", "science"):
        assert tuning.get(section) == validate.get(section), section
