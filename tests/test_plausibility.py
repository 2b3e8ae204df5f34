"""Plausibility checks of a phase map: a shifted labelling stops with a message instead of passing silently."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from detachment import io
from detachment.phantom import PhantomParams, generate_phantom
from detachment.phases import AL, CBD, NMC_HIGH, NMC_LOW, VOID
from detachment.plausibility import ImplausiblePhaseMap, PhaseCounts, check_phase_map, enforce, phase_counts
from detachment.presets import preset_params
from detachment.threshold import ThresholdSettings, threshold_volume


def _layered(shape=(20, 16, 16)):
    """A collector slab (4 slices), CBD, NMC and electrolyte above."""
    ph = np.full(shape, VOID, np.uint8)
    ph[:4] = AL
    ph[4:8] = CBD
    ph[8:12, :, :8] = NMC_LOW
    ph[8:12, :, 8:] = NMC_HIGH
    return ph


def _counts(ph):
    return PhaseCounts(np.stack([np.bincount(s.ravel(), minlength=5) for s in ph]))


def test_a_collector_slab_passes_and_a_shifted_labelling_fails(tmp_path):
    good = _layered()
    t = check_phase_map(_counts(good)).set_index("check")
    assert t.passed.all() and t.loc["al_in_collector_slab", "value"] == 1.0
    # streamed counts from a file equal the in-memory ones
    io.write_arrays(tmp_path / "phases.h5", {"phases": good})
    np.testing.assert_array_equal(phase_counts(tmp_path / "phases.h5", slab=3).per_slice, _counts(good).per_slice)
    # shifted by one class: the collector read as NMC low, CBD read as Al
    shifted = good.copy()
    shifted[good == AL] = NMC_LOW
    shifted[good == CBD] = AL
    t = check_phase_map(_counts(shifted)).set_index("check")
    assert not t.loc["al_fraction_first_slice", "passed"] and not t.loc["al_in_collector_slab", "passed"]
    assert t.loc["void_fraction", "passed"] and t.loc["nmc_fraction", "passed"]


def test_enforce_stops_naming_sample_check_and_way_out_or_warns(caplog):
    shifted = _layered()
    shifted[shifted == AL] = NMC_LOW
    table = check_phase_map(_counts(shifted))
    with pytest.raises(ImplausiblePhaseMap, match=r"sample 'cellA'.*al_fraction_first_slice = 0\.000 < 0\.5.*"
                                                  r"threshold\.on_implausible: warn"):
        enforce(table, "cellA", "stop", figure_hint="logs/x.png")
    with caplog.at_level(logging.WARNING):
        enforce(table, "cellA", "warn")
    assert "implausible phase map" in caplog.text
    enforce(check_phase_map(_counts(_layered())), "ok", "stop")  # nothing to say
    with pytest.raises(ValueError, match="threshold.on_implausible: 'maybe'"):
        enforce(table, "cellA", "maybe")


@pytest.mark.parametrize("preset, method, failed", [
    ("default", "informed", set()), ("default", "gmm", set()),
    ("blurry", "gmm", {"al_fraction_first_slice", "al_in_collector_slab"}),
    ("blurry", "informed", {"blur_sigma_vox"}),
    ("low_contrast", "gmm", {"al_fraction_first_slice", "al_in_collector_slab"}),
    ("low_contrast", "informed", set())])
def test_a_shifted_phase_map_is_caught_and_the_informed_model_does_not_shift(tmp_path, default_config, preset,
                                                                            method, failed):
    """With blur σ 1.5, or NMC low / high density in one histogram mode, the five-class histogram model (gmm)
    shifts the classes (the collector lands in NMC's class); the collector-slab checks catch it. The informed
    model measures Al on the collector slab and fits only the phases the histogram resolves: its maps are
    right. Blur σ 1.5 is measured on the particles' edges and stops the run whatever the phases: gaps of a
    few voxels cannot be seen."""
    d = preset_params(default_config["phantom"]["defaults"], preset)
    d.update(default_config["phantom"]["by_c_rate"]["1C"], shape_zyx=[40, 96, 96], n_particles=20)
    ph = generate_phantom(PhantomParams.from_dict(d), 21)
    io.write_volume(tmp_path / "v.h5", ph.volume, (ph.params.voxel_size_um,) * 3, "test")
    result = threshold_volume(tmp_path / "v.h5", tmp_path / "p.h5", ThresholdSettings(method=method, slab=7),
                              progress=False)
    written = io.read_dataset(tmp_path / "p.h5", "phases")
    # NMC low / high merged: the informed model reports them as one class where it cannot split them
    merged = np.where(written == NMC_HIGH, NMC_LOW, written) == np.where(ph.phases == NMC_HIGH, NMC_LOW, ph.phases)
    # the counts kept while classifying (what the workflow checks) equal the written map's
    np.testing.assert_array_equal(result.counts_per_slice, phase_counts(tmp_path / "p.h5").per_slice)
    table = check_phase_map(PhaseCounts(result.counts_per_slice), result.fwhm, result.blur_sigma_vox)
    stopped_by = set(table.check[~table.passed])
    # a shifted map fails at least the collector checks; the informed model's maps exactly what is listed
    assert failed <= stopped_by if method == "gmm" else stopped_by == failed, (stopped_by, merged.mean())
    # the checks are not a formality: what they let through is right, a shifted map they stop is wrong
    strict = (written == ph.phases).mean()
    assert (strict < 0.8) if stopped_by - {"blur_sigma_vox"} else (merged.mean() > 0.8), (merged.mean(), strict)
    if method == "informed":  # a shifted map's "NMC" edges are not the particles' edges
        assert result.blur_sigma_vox == pytest.approx(ph.params.blur_sigma_vox, abs=0.25)
    if preset == "default":
        assert merged.mean() > 0.95 and result.unresolved == ()
