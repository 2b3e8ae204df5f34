"""Validation across the phantom family: per-sample metrics and the planted effect per preset and split."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from detachment import robustness

from .test_validation import _balls


def _science(errors_pipeline, errors_true, voxel_pipeline=None, voxel_true=None):
    rows = [{"source": "pipeline", "detachment_error": e} for e in errors_pipeline]
    rows += [{"source": "true", "detachment_error": e} for e in errors_true]
    t = pd.DataFrame(rows)
    if voxel_pipeline is not None:
        t["detachment_error_voxel_truth"] = list(voxel_pipeline) + list(voxel_true)
    return t


def test_sample_metrics_of_a_perfect_and_of_a_flawed_pipeline():
    centres = [(8, 8, 8), (8, 8, 24), (8, 24, 8), (8, 24, 24)]
    truth = _balls((16, 32, 32), centres, 5)
    ph_true = (truth > 0).astype(np.uint8) * 2
    perfect = robustness.sample_metrics(truth, ph_true, ph_true, truth, truth, _science([0.0], [0.0]), 4)
    assert perfect["phase_accuracy"] == 1.0
    assert perfect["cnn_precision"] == perfect["cnn_sensitivity"] == 1.0
    assert perfect["recovery_3d"] == 1.0 and perfect["split_merge_3d"] == 0.0
    # flawed: a quarter of the voxels' phases wrong, one particle missed in every slice and in 3D, another
    # split in four quarters, detachment read 0.04 high on one particle and 0.02 low on the other
    ph = ph_true.copy()
    ph[:4] = 1
    missed = np.where(truth == 4, 0, truth)
    split = missed.copy()
    _, yy, xx = np.indices(truth.shape)
    split[truth == 1] = (5 + (yy >= 8) + 2 * (xx >= 8))[truth == 1]
    m = robustness.sample_metrics(truth, ph_true, ph, missed, split, _science([0.04, -0.02], [0.01, 0.01]), 4)
    assert m["phase_accuracy"] == pytest.approx(0.75)
    assert m["cnn_precision"] == 1.0 and m["cnn_sensitivity"] == pytest.approx(3 / 4)
    assert m["recovery_3d"] == pytest.approx(2 / 4)  # the missed one and the split one
    assert m["split_merge_3d"] == pytest.approx(1 / 4)
    assert m["detachment_mae"] == pytest.approx(0.03) and m["detachment_bias"] == pytest.approx(0.01)
    assert m["detachment_mae_true_envelopes"] == pytest.approx(0.01)
    assert np.isnan(m["detachment_mae_voxel_truth"])  # a science table without the voxelised truth
    m = robustness.sample_metrics(truth, ph_true, ph, missed, split,
                                  _science([0.04, -0.02], [0.01, 0.01], [0.01, -0.03], [0.0, 0.02]), 4)
    assert m["detachment_mae_voxel_truth"] == pytest.approx(0.02)
    assert m["detachment_mae_voxel_truth_true_envelopes"] == pytest.approx(0.01)


def test_long_table_layout_and_split_names():
    t = robustness.long_table("blurry", "b_1C", "out_of_sample", {"phase_accuracy": 0.9, "recovery_3d": 1})
    assert list(t.columns) == list(robustness.COLUMNS)
    assert t.value.tolist() == [0.9, 1.0] and set(t.split) == {"out_of_sample"}
    with pytest.raises(ValueError, match="split 'test'"):
        robustness.long_table("p", "s", "test", {})


def test_effect_rows_per_preset_and_split_against_a_direct_computation():
    rng = np.random.default_rng(0)

    def table(mean, n=40):
        return pd.DataFrame({"label": np.arange(1, n + 1), "detachment": rng.uniform(mean - 0.1, mean + 0.1, n),
                             "touches_border": np.arange(n) % 5 == 0})

    names = ["a_1C", "a_C10", "b_1C", "b_C10", "c_1C"]
    truth = {s: table(0.5 if s.endswith("1C") else 0.2) for s in names}
    measured = {s: t.assign(detachment=t.detachment * 0.8) for s, t in truth.items()}
    samples = pd.DataFrame({"sample": names, "preset": ["p", "p", "p", "p", "q"],
                            "split": ["in_sample", "in_sample", "out_of_sample", "out_of_sample", "out_of_sample"],
                            "c_rate": ["1C", "C/10", "1C", "C/10", "1C"]})
    rows = robustness.effect_rows(samples, truth, measured)
    ratio = rows[rows.metric == "effect_found_over_planted"]
    # preset q has no C/10 cell: no effect row; p has one per split, found = 0.8 x planted exactly
    assert sorted(ratio.split) == ["in_sample", "out_of_sample"] and set(ratio.preset) == {"p"}
    np.testing.assert_allclose(ratio.value, 0.8)
    planted = rows[(rows.metric == "effect_planted") & (rows.split == "out_of_sample")].value.item()
    inner = {s: t[~t.touches_border].detachment.mean() for s, t in truth.items()}
    assert planted == pytest.approx(inner["b_1C"] - inner["b_C10"])
    assert rows[rows.split == "out_of_sample"]["sample"].iloc[0] == "b_1C+b_C10"


def test_headline_averages_samples_per_preset_and_split():
    t = pd.concat([robustness.long_table("p", s, "out_of_sample", {"phase_accuracy": v})
                   for s, v in (("x", 0.9), ("y", 0.8))])
    h = robustness.headline(t)
    assert h.loc[("p", "out_of_sample"), "phase_accuracy"] == pytest.approx(0.85)


def test_declared_phase_accuracy_merges_nmc_densities_only_where_the_map_says_so():
    """Truth: a third of the solid high-density; the map one NMC class. Strict accuracy counts those voxels
    wrong; declared (merged) counts them right; other errors count in both."""
    truth = np.zeros((3, 10, 10), np.uint8)
    truth[:, :, 4:] = 2
    truth[:, :, 8:] = 3          # 20 % of the voxels high density
    found = np.where(truth == 3, 2, truth).astype(np.uint8)
    found[0, 0, 0] = 1           # one electrolyte voxel read as CBD
    n = truth.size
    assert robustness.phase_accuracy(found, truth) == pytest.approx(1 - (0.2 * n + 1) / n)
    assert robustness.phase_accuracy(found, truth, merge_nmc=True) == pytest.approx(1 - 1 / n)
    # counted on a subset of voxels: brute force over the mask
    where = np.zeros(found.shape, bool)
    where.flat[::3] = True
    assert robustness.phase_accuracy(found, truth, where=where) == pytest.approx(np.mean(found[where] == truth[where]))
    assert np.isnan(robustness.phase_accuracy(found, truth, where=np.zeros(found.shape, bool)))
    labels = np.zeros_like(truth, np.int32)
    m = robustness.sample_metrics(labels, truth, found, labels, labels, _science([0.0], [0.0]), 4, nmc_merged=True)
    # the headline accuracy merges NMC where the map declares it; every code must match in the other
    assert m["phase_accuracy"] == pytest.approx(1 - 1 / n) and m["phase_accuracy_every_code"] < 0.81
    assert m["phase_accuracy_pure_voxels"] == m["phase_accuracy"] and m["pure_voxel_share"] == 1.0
    purity = np.ones(truth.shape, np.float32)
    purity[0, 0, :5] = 0.625     # the misread voxel and four others hold two phases: left out
    m = robustness.sample_metrics(labels, truth, found, labels, labels, _science([0.0], [0.0]), 4, nmc_merged=True,
                                  purity=purity)
    assert m["phase_accuracy_pure_voxels"] == 1.0 and m["pure_voxel_share"] == pytest.approx(1 - 5 / n)
    m = robustness.sample_metrics(labels, truth, found, labels, labels, _science([0.0], [0.0]), 4)
    assert m["phase_accuracy_every_code"] == m["phase_accuracy"] < 0.81


def test_matched_errors_of_non_border_particles_nmc_high_and_collector_distance():
    science = pd.DataFrame({"source": ["pipeline", "pipeline", "pipeline", "true"], "label": [1, 2, 3, 1],
                            "truth_label": [10, 20, 30, 10], "border_truth": [False, False, True, False]})
    measured = pd.DataFrame({"label": [1, 2, 3], "nmc_high_fraction": [0.30, 0.10, 0.9]})
    truth = pd.DataFrame({"label": [10, 20, 30], "nmc_high_fraction": [0.25, 0.20, 0.1]})
    e = robustness.nmc_high_fraction_errors(science, measured, truth)
    assert e["nmc_high_fraction_mae"] == pytest.approx(0.075)  # (0.05 + 0.10) / 2; the border one left out
    assert e["nmc_high_fraction_bias"] == pytest.approx(-0.025)
    unresolved = measured.assign(nmc_high_fraction=np.nan)
    assert np.isnan(robustness.nmc_high_fraction_errors(science, unresolved, truth)["nmc_high_fraction_mae"])
    measured["distance_to_collector_um"] = [0.5, 2.0, 7.0]
    truth["distance_to_collector_um"] = [0.0, 3.0, 1.0]
    d = robustness.collector_distance_errors(science, measured, truth)
    assert d["collector_distance_mae_um"] == pytest.approx(0.75) and d["collector_distance_bias_um"] == pytest.approx(-0.25)


@pytest.mark.parametrize("sigma", [0.5, 1.0, 2.0])
def test_blurred_truth_keeps_flat_interfaces_and_loses_layers_thinner_than_the_blur(sigma):
    """A flat interface read through any Gaussian stays where it is; a one-voxel layer's own share at its
    centre is erf(1 / (2√2 σ)), under one half from σ ≈ 0.74, where its neighbours win it."""
    from scipy.special import erf

    truth = np.zeros((12, 16, 16), np.uint8)
    truth[:, :, 8:] = 1
    assert robustness.blurred_truth_accuracy(truth, sigma) == 1.0
    truth[...] = 0
    truth[6] = 2                 # a one-voxel NMC layer across electrolyte
    kept = erf(1 / (2 * np.sqrt(2) * sigma)) > 0.5
    assert robustness.blurred_truth_accuracy(truth, sigma) == pytest.approx(1.0 if kept else 1 - 1 / 12)
    truth[...] = 2
    truth[6] = 3                 # a high-density layer inside low: merged, nothing to lose
    assert robustness.blurred_truth_accuracy(truth, sigma) == pytest.approx(1.0 if kept else 1 - 1 / 12)
    assert robustness.blurred_truth_accuracy(truth, sigma, merge_nmc=True) == 1.0
    assert robustness.blurred_truth_accuracy(truth, 0.0) == 1.0
    labels = np.zeros_like(truth, np.int32)
    m = robustness.sample_metrics(labels, truth, truth, labels, labels, _science([0.0], [0.0]), 4, blur_sigma=sigma)
    assert m["phase_accuracy_blurred_truth"] == robustness.blurred_truth_accuracy(truth, sigma)
    m = robustness.sample_metrics(labels, truth, truth, labels, labels, _science([0.0], [0.0]), 4)
    assert np.isnan(m["phase_accuracy_blurred_truth"])


def test_blurred_truth_reads_a_point_spread_per_axis():
    """A one-voxel layer across z is lost to a blur along z (σ 1.0, its share at its centre erf(1 / (2√2)) < ½)
    and kept under the same blur within the slices only, which runs along it."""
    truth = np.zeros((12, 16, 16), np.uint8)
    truth[6] = 2
    assert robustness.blurred_truth_accuracy(truth, (1.0, 0.3, 0.3)) == pytest.approx(1 - 1 / 12)
    assert robustness.blurred_truth_accuracy(truth, (0.3, 1.0, 1.0)) == 1.0
    assert robustness.blurred_truth_accuracy(truth, (0.0, 0.0, 0.0)) == 1.0
    labels = np.zeros_like(truth, np.int32)
    m = robustness.sample_metrics(labels, truth, truth, labels, labels, _science([0.0], [0.0]), 4,
                                  blur_sigma=(1.0, 0.3, 0.3))
    assert m["phase_accuracy_blurred_truth"] == pytest.approx(1 - 1 / 12)


def test_contact_layer_accuracy_against_a_walk_over_each_voxels_six_neighbours():
    """The layer is every non-NMC voxel with an NMC face neighbour, found here by visiting each voxel's six
    neighbours in a loop; a map whose NMC grows by one voxel into the electrolyte on one side scores the
    share of the layer that side holds."""
    rng = np.random.default_rng(5)
    truth = rng.choice([0, 1, 2, 3], size=(7, 8, 9), p=[0.5, 0.2, 0.2, 0.1]).astype(np.uint8)
    layer = np.zeros(truth.shape, bool)
    nmc = (truth == 2) | (truth == 3)
    for z, y, x in np.ndindex(truth.shape):
        if nmc[z, y, x]:
            continue
        for dz, dy, dx in [(1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1)]:
            q = (z + dz, y + dy, x + dx)
            if all(0 <= q[i] < truth.shape[i] for i in range(3)) and nmc[q]:
                layer[z, y, x] = True
    np.testing.assert_array_equal(robustness.contact_layer(truth), layer)
    grown = truth.copy()
    grown[layer & (np.indices(truth.shape)[2] < 4)] = 2  # the layer's voxels in columns 0-3 read as NMC
    m = robustness.sample_metrics(np.zeros(truth.shape, np.int32), truth, grown, np.zeros(truth.shape, np.int32),
                                  np.zeros(truth.shape, np.int32), _science([0.0], [0.0]), 4)
    expected = 1 - np.sum(layer & (np.indices(truth.shape)[2] < 4)) / layer.sum()
    assert m["phase_accuracy_contact_layer"] == pytest.approx(expected)
    assert 0 < expected < 1


def test_the_figure_draws_the_cells_a_warning_falls_on_in_orange():
    """Written out: b_1C weakly separated (D 2.5), b_C10 clear, c_1C clear but not self-consistent (a stop under
    the default science.self_consistency), c_C10 weakly separated but stopped (a stop outranks the warning), d_1C
    clear with edges wider than the reading is checked on, d_C10 at that width; the pairs follow their cells."""
    import matplotlib.pyplot as plt
    import pandas as pd

    from detachment.plots import robustness_figure, stopped_samples, warned_samples

    rows = []
    for sample, d, consistent, plausible in (("b_1C", 2.5, 1, 1), ("b_C10", 4.0, 1, 1), ("c_1C", 5.0, 0, 1),
                                             ("c_C10", 2.5, 1, 0)):
        rows += [(sample[0], sample, "out_of_sample", "contact_separation", d),
                 (sample[0], sample, "out_of_sample", "contact_reading_self_consistent", float(consistent)),
                 (sample[0], sample, "out_of_sample", "contact_reading_plausible", float(plausible)),
                 (sample[0], sample, "out_of_sample", "detachment_mae", d / 100)]
    rows += [("d", s, "out_of_sample", m, v) for s, width in (("d_1C", 0.75), ("d_C10", 0.7))
             for m, v in (("contact_separation", 4.0), ("contact_edge_width", width))]
    rows += [("b", "b_1C+b_C10", "out_of_sample", "effect_found_over_planted", 0.9),
             ("c", "c_1C+c_C10", "out_of_sample", "effect_found_over_planted", 0.8)]
    table = pd.DataFrame(rows, columns=["preset", "sample", "split", "metric", "value"])
    assert warned_samples(table) == {"b_1C", "b_1C+b_C10", "d_1C"}
    assert stopped_samples(table) == {"c_1C", "c_C10", "c_1C+c_C10"}
    fig = robustness_figure(table, ["detachment_mae", "effect_found_over_planted"])
    drawn = {ax.get_title(): {c.get_label(): sorted(c.get_offsets()[:, 1].tolist()) for c in ax.collections}
             for ax in fig.axes if ax.get_title()}
    assert drawn["detachment_mae"] == {"out of sample": [0.04], "out of sample, run warns": [0.025],
                                       "out of sample, run stops": [0.025, 0.05]}
    assert drawn["effect_found_over_planted"] == {"out of sample, run warns": [0.9],
                                                  "out of sample, run stops": [0.8]}
    plt.close(fig)


def test_the_figure_draws_the_cells_a_check_stops_as_crosses():
    """A cell whose phase map or contact reading failed its check, and the pair holding it, are drawn as
    crosses; the others as filled (out of sample) or open (in sample) dots, each value once."""
    import matplotlib.pyplot as plt
    import pandas as pd

    from detachment.plots import robustness_figure, stopped_samples

    rows = []
    for preset, sample, split, plausible in (("a", "a_1C", "out_of_sample", 1), ("a", "a_C10", "out_of_sample", 0),
                                             ("d", "d_1C", "in_sample", 1)):
        rows += [(preset, sample, split, "phase_map_plausible", 1.0),
                 (preset, sample, split, "contact_reading_plausible", float(plausible)),
                 (preset, sample, split, "detachment_mae", 0.01 + 0.1 * (1 - plausible))]
    rows.append(("a", "a_1C+a_C10", "out_of_sample", "effect_found_over_planted", 0.9))
    table = pd.DataFrame(rows, columns=["preset", "sample", "split", "metric", "value"])
    assert stopped_samples(table) == {"a_C10", "a_1C+a_C10"}
    fig = robustness_figure(table, ["detachment_mae", "effect_found_over_planted"])
    drawn = {ax.get_title(): {c.get_label(): c.get_offsets()[:, 1].tolist() for c in ax.collections}
             for ax in fig.axes if ax.get_title()}
    assert drawn["detachment_mae"] == {"out of sample": [0.01], "out of sample, run stops": [pytest.approx(0.11)],
                                       "in sample": [0.01]}
    assert drawn["effect_found_over_planted"] == {"out of sample, run stops": [0.9]}
    plt.close(fig)


def test_the_contact_separation_is_read_from_the_contact_table_or_unknown(tmp_path):
    import pandas as pd

    from detachment.contact_level import ContactLevel
    from detachment.robustness import contact_separation

    fit = ContactLevel(0.1, True, gap_mean=0.05, gap_sigma=0.03, cbd_mean=0.2, cbd_sigma=0.04)
    fit.to_frame().to_csv(tmp_path / "new.csv", index=False)
    assert contact_separation(tmp_path / "new.csv") == pytest.approx(np.sqrt(2) * 0.15 / np.hypot(0.03, 0.04))
    fit.to_frame().drop(columns="separation").to_csv(tmp_path / "old.csv", index=False)
    assert np.isnan(contact_separation(tmp_path / "old.csv"))
    pd.DataFrame({"level": [np.nan], "fitted": [False]}).to_csv(tmp_path / "phases_only.csv", index=False)
    assert np.isnan(contact_separation(tmp_path / "phases_only.csv"))
