"""The self-consistency check of the contact reading: the rendered volume against analytic cases, the shift
against hand arithmetic, and the whole check on a phantom whose reading holds and on one rendered wider
than the map was read at."""

import math

import numpy as np
import pandas as pd
import pytest

from detachment import io
from detachment.phantom import PhantomParams, generate_phantom
from detachment.phases import CBD, NMC_LOW, VOID
from detachment.presets import preset_params
from detachment.self_consistency import (
    MAX_SHIFT,
    SelfConsistency,
    check_reading,
    levels_and_spreads,
    measure_shift,
    read_contacts,
    render_map,
)
from detachment.threshold import ThresholdSettings
from detachment.validation import links_from_labels


def _fwhm_table(rows):
    return pd.DataFrame(rows, columns=["phase", "code", "centre", "fwhm", "model_mean", "model_fwhm"])


def test_levels_and_spreads_take_the_interior_fit_and_fall_back_to_the_model():
    """Level = the interior ``centre``, spread = ``fwhm`` / (2 sqrt(2 ln 2)); where the interior fit is NaN the
    phase model's mean and FWHM; a code without a row stays NaN."""
    t = _fwhm_table([["void", 0, 0.05, 0.053, 0.06, 0.07], ["cbd", 1, np.nan, np.nan, 0.31, 0.064],
                     ["nmc_low", 2, 0.72, 0.147, 0.7, 0.2]])
    levels, spreads = levels_and_spreads(t)
    k = 2 * math.sqrt(2 * math.log(2))
    np.testing.assert_allclose(levels[:3], [0.05, 0.31, 0.72], rtol=1e-6)
    np.testing.assert_allclose(spreads[:3], [0.053 / k, 0.064 / k, 0.147 / k], rtol=1e-6)
    assert np.isnan(levels[3:]).all() and np.isnan(spreads[3:]).all()


def test_an_interior_fit_far_from_the_model_is_not_rendered():
    """NMC high of a tiny phantom: 436 interior voxels spread over the fine histogram's 1024 bins, whose
    Gaussian fit escaped to the electrolyte's level with a FWHM of 0.42. Rendered, the particles' dense
    domains would read as electrolyte; the phase model's mean and FWHM are taken instead, as for the forward
    model, and a centre within one model FWHM of the mean is still taken."""
    t = _fwhm_table([["void", 0, 0.0036, 0.0536, 0.0051, 0.0555], ["nmc_low", 2, 0.7102, 0.0649, 0.7183, 0.0498],
                     ["nmc_high", 3, -0.0002, 0.4242, 0.8422, 0.1069]])
    levels, spreads = levels_and_spreads(t)
    k = 2 * math.sqrt(2 * math.log(2))
    np.testing.assert_allclose(levels[[0, 2, 3]], [0.0036, 0.7102, 0.8422], rtol=1e-6)
    np.testing.assert_allclose(spreads[[0, 2, 3]], [0.0536 / k, 0.0649 / k, 0.1069 / k], rtol=1e-6)


def test_rendered_step_is_the_error_function_and_its_noise_the_spread():
    """A flat step between two phases blurred by σ reads ``a + (b - a) Φ((x - x0) / σ)`` across it (the
    continuous Gaussian's; the sampled kernel is within 1 % of the contrast), and far from it each phase's
    mean and standard deviation are its level and spread."""
    codes = np.zeros((24, 24, 64), np.uint8)
    codes[..., 32:] = NMC_LOW
    levels = np.array([0.05, 0.3, 0.72, 0.9, 0.5], np.float32)
    flat = render_map(codes, levels, np.zeros(5, np.float32), 1.2)
    x = np.arange(64)
    expected = 0.05 + 0.67 * np.array([0.5 * (1 + math.erf((xi - 31.5) / (1.2 * math.sqrt(2)))) for xi in x])
    assert np.abs(flat[12, 12] - expected).max() < 0.01 * 0.67
    spreads = np.array([0.02, 0.03, 0.06, 0.06, 0.02], np.float32)
    noisy = render_map(codes, levels, spreads, 1.2, seed=3)
    for sl, code in ((np.s_[..., :20], VOID), (np.s_[..., 44:], NMC_LOW)):
        v = noisy[sl]
        assert abs(v.mean() - levels[code]) < 4 * spreads[code] / math.sqrt(v.size)
        assert abs(v.std() / spreads[code] - 1) < 0.03
    np.testing.assert_array_equal(noisy, render_map(codes, levels, spreads, 1.2, seed=3))
    assert not np.array_equal(noisy, render_map(codes, levels, spreads, 1.2, seed=4))


def test_render_refuses_a_phase_of_the_map_without_a_level():
    codes = np.full((4, 4, 4), CBD, np.uint8)
    levels = np.array([0.0, np.nan, 0.7, 0.9, 0.5])
    with pytest.raises(ValueError, match="cbd"):
        render_map(codes, levels, np.full(5, 0.02), 1.0)
    render_map(np.zeros((4, 4, 4), np.uint8), levels, np.full(5, 0.02), 1.0)  # CBD absent: nothing to refuse


def test_shift_is_the_mean_move_over_the_particles_read_both_times_away_from_the_border():
    first = pd.DataFrame({"label": [1, 2, 3, 4], "detachment": [0.2, 0.5, 0.4, np.nan],
                          "touches_border": [False, False, True, False]})
    second = pd.DataFrame({"label": [2, 1, 3, 5], "detachment": [0.45, 0.26, 0.9, 0.1]})
    s = measure_shift(first, second, 0.8)
    assert s.n_particles == 2 and s.shift == pytest.approx((0.06 - 0.05) / 2)
    assert s.shift_mae == pytest.approx((0.06 + 0.05) / 2) and s.consistent
    assert measure_shift(first, second, 0.8, exclude_border=False).shift == pytest.approx((0.06 - 0.05 + 0.5) / 3)
    far = SelfConsistency(-(MAX_SHIFT + 1e-4), 0.1, 10, 0.5)
    assert not far.consistent and SelfConsistency(MAX_SHIFT, 0.1, 10, 0.5).consistent
    assert not bool(far.to_frame().consistent.iloc[0])
    empty = measure_shift(first.iloc[:0], second, 0.8)
    assert empty.n_particles == 0 and empty.consistent


@pytest.fixture(scope="module")
def read_phantom(tmp_path_factory, default_config):
    """A small phantom of the configured defaults (1C), read as the workflow reads it on its truth's labels."""
    from detachment.config_docs import with_defaults

    d = preset_params(default_config["phantom"]["defaults"], "default")
    d.update(default_config["phantom"]["by_c_rate"]["1C"], shape_zyx=[36, 112, 112], n_particles=24)
    ph = generate_phantom(PhantomParams.from_dict(d), 5)
    w = tmp_path_factory.mktemp("self")
    io.write_volume(w / "volume.h5", ph.volume, (ph.params.voxel_size_um,) * 3, "test")
    io.write_arrays(w / "labels.h5", {"labels": ph.labels})
    links = links_from_labels(ph.labels)
    science = with_defaults({})["science"]
    res, fit, table = read_contacts(w / "volume.h5", w / "phases.h5", w / "contact_level.csv", w / "qc.csv",
                                    w / "labels.h5", links, ThresholdSettings(), science)
    return ph, w, links, science, res, fit, table


def test_a_reading_that_holds_finds_itself_again(read_phantom):
    """On a phantom the reading gets right, the map rendered at the σ it was refined with, with each phase's
    texture measured on the phantom, reads the same detachment to within the bound."""
    ph, w, links, science, res, _, table = read_phantom
    planted = ph.table.set_index("label").detachment.reindex(table.label)
    assert np.nanmean(np.abs(table.detachment.to_numpy() - planted.to_numpy())) < 0.03
    c = check_reading(w / "phases.h5", res.fwhm, res.refine_sigma_vox, ph.params.voxel_size_um, w / "labels.h5",
                      links, table, w / "contact_level.csv", ThresholdSettings(), science, workdir=w,
                      volume=w / "volume.h5")
    assert c.n_particles > 10 and c.consistent and abs(c.shift) < MAX_SHIFT, c
    assert c.textures.startswith("void white; cbd 0.") and "nmc_low 0." in c.textures, c.textures
    assert sorted(p.name for p in w.iterdir()) == ["contact_level.csv", "labels.h5", "phases.h5", "qc.csv",
                                                  "volume.h5"]


def test_a_reading_on_data_blurred_past_its_gaps_moves(read_phantom):
    """Rendered at three times the σ the map was read at, the two-voxel gaps and coats blur into each other:
    the same reading moves the particles' detachment beyond the bound."""
    ph, w, links, science, res, _, table = read_phantom
    c = check_reading(w / "phases.h5", res.fwhm, 3 * res.refine_sigma_vox, ph.params.voxel_size_um,
                      w / "labels.h5", links, table, w / "contact_level.csv", ThresholdSettings(), science)
    assert not c.consistent and abs(c.shift) > 2 * MAX_SHIFT, c


def test_map_sigma_reads_the_attribute_then_the_description_then_the_edges(tmp_path):
    """The σ the map was refined with: its numeric attribute; in an older map, the σ its ``psf_refine``
    description opens with; in an unrefined one, the blur the checks measured on the edges."""
    import h5py

    from detachment.self_consistency import map_sigma

    qc = tmp_path / "qc.csv"
    pd.DataFrame({"check": ["void_fraction", "blur_sigma_vox"], "value": [0.5, 0.61]}).to_csv(qc, index=False)
    expected = {"new": 0.47, "old": 0.523, "off": 0.61}
    for name, attrs in (("new", {"psf_refine_sigma_vox": 0.47, "psf_refine": "sigma 0.5 vox, ..."}),
                        ("old", {"psf_refine": "sigma 0.523 vox, noise sd void 0.02, beta 3"}),
                        ("off", {"psf_refine": "off", "psf_refine_sigma_vox": float("nan")})):
        with h5py.File(tmp_path / f"{name}.h5", "w") as f:
            f.create_dataset("phases", data=np.zeros((2, 2, 2), np.uint8)).attrs.update(attrs)
        assert map_sigma(tmp_path / f"{name}.h5", qc) == pytest.approx(expected[name])


def test_an_inconsistent_reading_stops_with_the_sample_and_the_way_on(caplog):
    from detachment.plausibility import AmbiguousContacts
    from detachment.self_consistency import enforce

    enforce(SelfConsistency(0.004, 0.01, 20, 0.5), "cell_1C")  # consistent: nothing
    bad = SelfConsistency(0.031, 0.04, 20, 0.52)
    with pytest.raises(AmbiguousContacts, match=r"sample 'cell_1C'.*\+0\.031.*±0\.01\b.*self_consistency: warn"):
        enforce(bad, "cell_1C")  # stops by default, as the config's default does
    with caplog.at_level("WARNING"):
        enforce(bad, "cell_1C", "warn")
    assert "does not find itself again" in caplog.text
    with pytest.raises(ValueError, match="self_consistency"):
        enforce(bad, "cell_1C", "ignore")


def test_the_check_stops_by_default_in_the_schema_and_the_library_alike():
    """The config's default (the schema's) and enforce's own default are both stop; validate.yaml and tuning.yaml,
    which score stopped cells, set warn."""
    import inspect
    from pathlib import Path

    import yaml

    from detachment.config_docs import with_defaults
    from detachment.self_consistency import enforce

    root = Path(__file__).resolve().parents[1]
    assert with_defaults({})["science"]["self_consistency"] == "stop"
    assert inspect.signature(enforce).parameters["mode"].default == "stop"
    for name in ("validate.yaml", "tuning.yaml"):
        assert yaml.safe_load((root / "config" / name).read_text())["science"]["self_consistency"] == "warn", name


def test_robustness_rows_of_the_check(tmp_path):
    from detachment.robustness import self_consistency_metrics

    assert all(np.isnan(v) for v in self_consistency_metrics([]).values())
    SelfConsistency(-0.02, 0.03, 12, 0.5).to_frame().to_csv(tmp_path / "s.csv", index=False)
    m = self_consistency_metrics([str(tmp_path / "s.csv")])
    assert m == {"contact_reading_self_consistent": 0.0, "self_consistency_shift": pytest.approx(-0.02)}
