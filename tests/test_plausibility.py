"""Plausibility checks of a phase map: a shifted labelling stops with a message instead of passing silently."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from detachment import io
from detachment.phantom import PhantomParams, generate_phantom
from detachment.phases import AL, CBD, NMC_HIGH, NMC_LOW, VOID
from detachment.plausibility import (
    MAX_BOUNDS,
    ImplausiblePhaseMap,
    PhaseCounts,
    check_phase_map,
    enforce,
    phase_counts,
)
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


def test_a_blur_stop_says_the_blur_is_the_cause_and_thresholds_do_not_help():
    """A map whose histogram checks pass but whose point spread is past the bound: the message names the
    blur check and says no threshold setting changes it, without the shifted-classes advice; with a
    shifted map as well, both causes are given."""
    bound = MAX_BOUNDS["blur_sigma_vox"][0]
    table = check_phase_map(_counts(_layered()), blur_sigma_vox=bound + 0.3)
    with pytest.raises(ImplausiblePhaseMap) as stopped:
        enforce(table, "blurred", "stop", figure_hint="logs/b.png")
    text = str(stopped.value)
    assert f"blur_sigma_vox = {bound + 0.3:.3f} > {bound}" in text and "no threshold setting changes" in text
    assert "logs/b.png" in text and "shifted" not in text and "manual thresholds" not in text
    shifted = _layered()
    shifted[shifted == AL] = NMC_LOW
    with pytest.raises(ImplausiblePhaseMap) as both:
        enforce(check_phase_map(_counts(shifted), blur_sigma_vox=bound + 0.3), "x", "stop")
    assert "shifted" in str(both.value) and "no threshold setting changes" in str(both.value)


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


def _two_balls(void: float, cbd: float, nmc_sd: float, seed: int = 3):
    """Two NMC balls (grey 0.8 with smooth density domains of SD ``nmc_sd``) in CBD, the upper part of each
    behind a two-voxel electrolyte gap; blurred (σ 0.5 voxel) with noise. Returns labels, sharp phases and
    grey levels."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    shape = (48, 48, 96)
    zz, yy, xx = np.indices(shape)
    phases = np.full(shape, CBD, np.uint8)
    sharp = np.full(shape, cbd, np.float32)
    labels = np.zeros(shape, np.uint32)
    for i, cx in enumerate((24, 72)):
        r = np.sqrt((zz - 24) ** 2 + (yy - 24) ** 2 + (xx - cx) ** 2)
        ball = r <= 10
        gap = ~ball & (r <= 12) & (zz + 0.3 * (yy - 24) > 24 + 3 * i)
        phases[gap], sharp[gap] = VOID, void
        phases[ball], labels[ball] = NMC_LOW, i + 1
        domains = ndimage.gaussian_filter(rng.normal(0, 1, shape), 1.5)
        sharp[ball] = 0.8 + domains[ball] * nmc_sd / domains[ball].std()
    grey = ndimage.gaussian_filter(sharp, 0.5) + rng.normal(0, 0.02, shape).astype(np.float32)
    return labels, phases, grey


@pytest.mark.parametrize("void, cbd, nmc_sd, ambiguous", [(0.0, 0.3, 0.03, False), (0.05, 0.17, 0.06, True)])
def test_contacts_are_flagged_ambiguous_where_gap_and_cbd_cannot_be_told_apart(void, cbd, nmc_sd, ambiguous):
    """Balls with known detached caps (truth: the face count on the sharp phases). At the default contrast
    the two readings agree and the level reads the truth; with CBD 0.12 above the electrolyte and NMC density
    domains (as the low_contrast preset) they disagree on over a third of the faces, the level's reading is
    far off, and the check says so."""
    from scipy import ndimage

    from detachment.contact_level import choose_reading, face_neighbour_pairs, fit_contact_level
    from detachment.plausibility import contacts_ambiguous
    from detachment.surface import surface_contacts

    labels, phases, grey = _two_balls(void, cbd, nmc_sd)
    truth = surface_contacts(labels, phases).detachment[1:]
    midpoint = (void + cbd) / 2
    seen = np.where(grey < midpoint, VOID, np.where(grey < (cbd + 0.8) / 2, CBD, NMC_LOW)).astype(np.uint8)
    plain, deconvolved = [], []
    for label in (1, 2):
        env = labels == label
        outside, inside = face_neighbour_pairs(env, (labels > 0) & ~env, seen, grey)
        plain.append(outside)
        deconvolved.append(outside + inside - np.median(grey[ndimage.binary_erosion(env, iterations=2)]))
    plain, deconvolved = np.concatenate(plain), np.concatenate(deconvolved)
    fit = choose_reading(fit_contact_level(plain, midpoint), plain, deconvolved, midpoint, 0.1)
    by_level = surface_contacts(labels, seen, intensity=grey, gap_level=fit_contact_level(plain, midpoint).level)
    error = np.abs(by_level.detachment[1:] - truth).max()
    assert contacts_ambiguous(fit.spread, 0.15) == ambiguous
    assert (error > 0.2) if ambiguous else (error < 0.03)


def test_enforce_contacts_stops_naming_sample_disagreement_and_way_out_or_warns(caplog):
    from detachment.plausibility import AmbiguousContacts, contacts_ambiguous, enforce_contacts

    assert contacts_ambiguous(-0.2, 0.15) and not contacts_ambiguous(0.1, 0.15)
    assert not contacts_ambiguous(float("nan"), 0.15) and not contacts_ambiguous(0.9, None)
    with pytest.raises(AmbiguousContacts, match=r"sample 'cellA'.*disagree on 35% .*contact_max_ambiguity: 15%.*"
                                                r"logs/x\.png.*on_ambiguous_contacts: warn"):
        enforce_contacts(-0.35, 0.15, "cellA", "stop", figure_hint="logs/x.png")
    with pytest.raises(AmbiguousContacts, match=r"sample 'cellA': .*the phase map and the fitted contact level "
                                                r"disagree on 20% "):
        enforce_contacts(0.2, 0.15, "cellA", "stop", reading="map")
    with caplog.at_level(logging.WARNING):
        enforce_contacts(0.35, 0.15, "cellA", "warn")
    assert "the contacts cannot be read" in caplog.text
    enforce_contacts(0.05, 0.15, "ok", "stop")  # nothing to say
    with pytest.raises(ValueError, match="science.on_ambiguous_contacts: 'maybe'"):
        enforce_contacts(0.35, 0.15, "cellA", "maybe")


def test_contacts_are_not_read_beyond_the_blur_the_reading_was_validated_for(caplog):
    """A measured point spread wider than the blur bound makes the reading ambiguous whatever the spread
    (the coated balls misread a one-voxel coat from σ 0.8: tests/test_contact_level.py); the message names
    the sample, σ, the bound and the way out (not a contact setting, where the blur alone stops it); null
    max_ambiguity still checks nothing."""
    from detachment.plausibility import MAX_BOUNDS, AmbiguousContacts, contacts_ambiguous, enforce_contacts

    bound = MAX_BOUNDS["blur_sigma_vox"][0]
    assert contacts_ambiguous(0.0, 0.15, bound + 0.1) and not contacts_ambiguous(0.0, 0.15, bound)
    assert not contacts_ambiguous(0.0, 0.15, float("nan")) and not contacts_ambiguous(0.0, None, 2.0)
    assert contacts_ambiguous(0.3, 0.15, 0.5)
    with pytest.raises(AmbiguousContacts, match=r"sample 'blurred'.*σ .* is 1\.20 voxels \(phase_qc.csv.*"
                                                 rf"{bound} voxels.*no contact setting changes that.*"
                                                 r"on_ambiguous_contacts: warn") as stopped:
        enforce_contacts(0.02, 0.15, "blurred", "stop", blur_sigma=1.2)
    assert "midpoint" not in str(stopped.value)
    with pytest.raises(AmbiguousContacts, match=r"disagree on 30%.*1\.20 voxels.*science.contact_level: midpoint"):
        enforce_contacts(0.3, 0.15, "both", "stop", blur_sigma=1.2)  # with the disagreement, the settings may help
    with caplog.at_level(logging.WARNING):
        enforce_contacts(0.02, 0.15, "blurred", "warn", blur_sigma=1.2)
    assert "1.20 voxels" in caplog.text
    enforce_contacts(0.02, 0.15, "sharp", "stop", blur_sigma=0.5)  # nothing to say


def test_the_stop_names_the_share_of_undecided_faces_and_where_each_particle_carries_it(caplog):
    """The mixture's undecided share (contact_level.csv ambiguous_faces) is the reading's measured
    uncertainty: the message gives it, rounded, with the per-particle column, for either cause of the stop;
    where no mixture was fitted (NaN) or none is passed it says nothing of it. The blur cause says where σ
    was measured (the flat edges: partial volume does not widen it there)."""
    from detachment.plausibility import AmbiguousContacts, enforce_contacts

    for kwargs in ({"blur_sigma": 0.79}, {"reading": "map"}):
        spread = 0.02 if "blur_sigma" in kwargs else 0.3
        with pytest.raises(AmbiguousContacts, match=r"leaves 27% of the faces undecided \(contact_level.csv "
                                                     r"ambiguous_faces; per particle, particles.csv "
                                                     r"detachment_ambiguous\)"):
            enforce_contacts(spread, 0.15, "pv", "stop", undecided=0.2733, **kwargs)
        for undecided in (float("nan"), None):
            with pytest.raises(AmbiguousContacts) as stopped:
                enforce_contacts(spread, 0.15, "pv", "stop", undecided=undecided, **kwargs)
            assert "undecided" not in str(stopped.value)
    with pytest.raises(AmbiguousContacts, match=r"flat edges is 0\.79 voxels"):
        enforce_contacts(0.02, 0.15, "pv", "stop", blur_sigma=0.79)
    with caplog.at_level(logging.WARNING):
        enforce_contacts(0.02, 0.15, "pv", "warn", blur_sigma=0.79, undecided=0.05)
    assert "leaves 5% of the faces undecided" in caplog.text


def test_partial_volume_passes_the_blur_check_on_its_point_spread_and_a_wide_one_stops(tmp_path, default_config):
    """The default geometry at planted σ 0.5, drawn on the voxel grid and on 2³ sub-voxels (partial volume:
    surfaces cut voxels anywhere), and on sub-voxels at σ 1.0 (a blur that hides 2-voxel gaps). Measured on
    every edge, partial volume at σ 0.5 read past the bound (slanted surfaces widen what a line sees,
    docs/results.md); the point spread, on the locally flat edges, passes both σ 0.5 maps and stops the
    σ 1.0 one."""
    sigma, width = {}, {}
    for k, planted in ((1, 0.5), (2, 0.5), (2, 1.0)):
        d = preset_params(default_config["phantom"]["defaults"], "default")
        d.update(default_config["phantom"]["by_c_rate"]["1C"], shape_zyx=[40, 96, 96], n_particles=20, supersample=k,
                 blur_sigma_vox=planted)
        ph = generate_phantom(PhantomParams.from_dict(d), 21)
        io.write_volume(tmp_path / f"v{k}.h5", ph.volume, (ph.params.voxel_size_um,) * 3, "test")
        result = threshold_volume(tmp_path / f"v{k}.h5", tmp_path / f"p{k}.h5", ThresholdSettings(slab=7),
                                  progress=False)
        table = check_phase_map(PhaseCounts(result.counts_per_slice), result.fwhm, result.blur_sigma_vox)
        sigma[k, planted], width[k, planted] = result.blur_sigma_vox, result.edge_width_vox
        assert set(table.check[~table.passed]) == ({"blur_sigma_vox"} if planted > 0.7 else set()), (k, sigma)
    bound = MAX_BOUNDS["blur_sigma_vox"][0]
    assert sigma[1, 0.5] < 0.6 and sigma[2, 0.5] < bound < width[2, 0.5], (sigma, width)


def test_the_gap_faces_width_stops_a_reading_and_every_failed_check_is_named(caplog):
    """Where the contacts are not read through a thin CBD layer (science.contact_partial_volume: never), a gap
    component wider than the bound times the open electrolyte's spread makes the reading ambiguous
    whatever the spread and the blur; the message names the sample, the ratio, the column and the bound,
    and with the blur failing too it names both; NaN (not measured) checks nothing."""
    from detachment.plausibility import (
        MAX_GAP_WIDTH_RATIO,
        AmbiguousContacts,
        contacts_ambiguous,
        enforce_contacts,
    )

    bound = MAX_GAP_WIDTH_RATIO
    assert contacts_ambiguous(0.0, 0.15, 0.5, bound + 0.05) and not contacts_ambiguous(0.0, 0.15, 0.5, bound)
    assert not contacts_ambiguous(0.0, 0.15, 0.5, float("nan")) and not contacts_ambiguous(0.0, None, 0.5, 3.0)
    with pytest.raises(AmbiguousContacts, match=r"sample 'pv'.*spread 1\.83 times as wide as the open "
                                                r"electrolyte's own \(contact_level.csv gap_width_ratio; bound "
                                                r"1\.35\).*partial volume.*on_ambiguous_contacts: warn") as stopped:
        enforce_contacts(0.02, 0.15, "pv", "stop", blur_sigma=0.65, width_ratio=1.83)
    assert "point-spread σ" not in str(stopped.value) and "disagree" not in str(stopped.value)
    with pytest.raises(AmbiguousContacts, match=r"is 0\.80 voxels .*; and the grey levels across the faces "
                                                r"read as electrolyte spread 1\.95 times"):
        enforce_contacts(0.02, 0.15, "pv", "stop", blur_sigma=0.8, width_ratio=1.95)
    with pytest.raises(AmbiguousContacts, match=r"disagree on 30% .*; and the point-spread σ .*; and the grey"):
        enforce_contacts(0.3, 0.15, "pv", "stop", blur_sigma=0.8, width_ratio=1.95)
    with caplog.at_level(logging.WARNING):
        enforce_contacts(0.02, 0.15, "pv", "warn", blur_sigma=0.65, width_ratio=1.83)
    assert "1.83 times" in caplog.text
    enforce_contacts(0.02, 0.15, "sharp", "stop", blur_sigma=0.5, width_ratio=1.1)  # nothing to say
    # read through a thin CBD layer, the width is what that reading accounts for: not a reason to stop
    assert not contacts_ambiguous(0.0, 0.15, 0.5, 1.95, through_layer=True)
    enforce_contacts(0.02, 0.15, "pv", "stop", blur_sigma=0.65, width_ratio=1.83, through_layer=True)
    with pytest.raises(AmbiguousContacts, match=r"is 0\.80 voxels") as stopped:  # the blur still stops it
        enforce_contacts(0.02, 0.15, "pv", "stop", blur_sigma=0.8, width_ratio=1.95, through_layer=True)
    assert "times as wide" not in str(stopped.value)
    # read through the layer, the share of faces that reading alone makes electrolyte is its uncertainty
    assert contacts_ambiguous(0.0, 0.15, 0.5, 1.9, through_layer=True, through_share=0.22)
    assert not contacts_ambiguous(0.0, 0.15, 0.5, 1.9, through_layer=True, through_share=0.13)
    assert not contacts_ambiguous(0.0, 0.15, 0.5, 1.1, through_share=0.22)  # not read so: nothing to say
    with pytest.raises(AmbiguousContacts, match=r"sample 'thin'.*22% of the background faces are read as "
                                                r"electrolyte only through a thin CBD layer \(contact_level.csv "
                                                r"gap_share_through_layer; science.contact_max_ambiguity: 15%\).*"
                                                r"contact_partial_volume: never") as stopped:
        enforce_contacts(0.02, 0.15, "thin", "stop", blur_sigma=0.65, width_ratio=2.05, through_layer=True,
                         through_share=0.22)
    assert "times as wide" not in str(stopped.value)


@pytest.mark.parametrize("seed", [21, 3])
def test_partial_volume_under_a_sharp_blur_is_told_by_the_gap_faces_width_and_read_through_the_layer(tmp_path,
                                                                                                       default_config,
                                                                                                       seed):
    """The default geometry under a point spread of σ 0.3, drawn on the voxel grid and on 2³ sub-voxels. The
    edges measured on the partial-volume map stay within the blur bound, yet the map's codes read its
    contacts (on the planted envelopes) more than 0.04 too low on average, against the planted sub-voxel
    truth: voxels half particle and half electrolyte read as CBD. The gap faces' grey levels are wider than
    the open electrolyte's by more than the bound there, within it on the voxel grid; read as the width says
    (through a thin CBD layer on sub-voxels, plainly on the grid) both are right (mean error below
    0.015), while reading the grid through the layer would count the coats' rims as gaps (above +0.01)."""
    from detachment.contact_level import sharpening_weight
    from detachment.particles import contact_level_from_files, particle_table_from_files
    from detachment.plausibility import MAX_GAP_WIDTH_RATIO
    from detachment.validation import links_from_labels

    ratio, bias = {}, {}
    for k in (1, 2):
        d = preset_params(default_config["phantom"]["defaults"], "default")
        d.update(default_config["phantom"]["by_c_rate"]["1C"], shape_zyx=[40, 96, 96], n_particles=20, supersample=k,
                 blur_sigma_vox=0.3)
        ph = generate_phantom(PhantomParams.from_dict(d), seed)
        files = [tmp_path / f"{name}{k}.h5" for name in ("l", "p", "v")]
        io.write_volume(files[2], ph.volume, (ph.params.voxel_size_um,) * 3, "test")
        io.write_arrays(files[0], {"labels": ph.labels})
        res = threshold_volume(files[2], files[1], ThresholdSettings(slab=7), progress=False)
        assert res.blur_sigma_vox < MAX_BOUNDS["blur_sigma_vox"][0], (k, res.blur_sigma_vox)
        links = links_from_labels(ph.labels)
        width = res.edge_width_vox  # what the contact_level rule undoes (phases.h5 edge_width_vox)
        fit, _, _ = contact_level_from_files(*files, links, progress=False, sharpen=sharpening_weight(width),
                                             spill_sigma=width, on_map=True)
        ratio[k] = fit.gap_width_ratio
        assert fit.partial_volume is (k == 2)
        for through in (False, True):
            t = particle_table_from_files(*files, links, progress=False, refine=False, gap_from_intensity=False,
                                          partition="masks", partial_volume=through)
            planted = ph.table.set_index("label").loc[t.label, "detachment"].to_numpy()
            bias[k, through] = float(np.mean(t.detachment.to_numpy() - planted))
            assert np.isfinite(t.detachment_ambiguous).all() == through
    assert ratio[1] < MAX_GAP_WIDTH_RATIO < ratio[2], ratio
    assert bias[2, False] < -0.04 and bias[1, True] > 0.01, bias
    assert abs(bias[1, False]) < 0.015 and abs(bias[2, True]) < 0.015, bias


@pytest.mark.parametrize("planted_d, ambiguous", [(1.2, True), (2.5, False), (4.0, False)])
def test_contacts_stop_where_the_face_levels_do_not_separate_gap_from_cbd(planted_d, ambiguous):
    """Face-neighbour grey levels drawn from a gap and a CBD Gaussian of planted separation (Ashman's D) and a
    known 40 % gap share. The fitted mixture's separation recovers the planted D; where it is below the bound,
    one voxel per face misreads more than a sixth of the faces against the planted labels (so no per-face
    reading can be trusted) and the reading is ambiguous; well above it, it misreads under 5 % and is not."""
    from detachment.contact_level import fit_contact_level
    from detachment.plausibility import MIN_CONTACT_SEPARATION, contacts_ambiguous, weakly_separated

    rng = np.random.default_rng(5)
    sd, n = 0.03, 20000
    gap = rng.random(n) < 0.4
    values = np.where(gap, 0.1, 0.1 + planted_d * sd) + sd * rng.standard_normal(n)
    fit = fit_contact_level(values, 0.1 + planted_d * sd / 2)
    assert fit.separation == pytest.approx(planted_d, rel=0.25)
    assert (fit.separation < MIN_CONTACT_SEPARATION) == ambiguous
    misread = np.mean((values < fit.level) != gap)
    weak = weakly_separated(fit.separation)
    assert weak == (planted_d == 2.5)
    # overlapping: a sixth or more misread; weakly separated: a twentieth or more, where 0.03 is the goal
    assert (misread > 1 / 6) if ambiguous else ((0.05 < misread < 1 / 6) if weak else (misread < 0.05))
    assert contacts_ambiguous(0.0, 0.15, separation=fit.separation) == ambiguous
    assert not contacts_ambiguous(0.0, None, separation=fit.separation)  # null max_ambiguity checks nothing
    assert not contacts_ambiguous(0.0, 0.15, separation=float("nan"))  # no components fitted: not checked


def test_the_overlap_stop_names_the_separation_its_bound_and_the_one_class_case(caplog):
    from detachment.plausibility import MIN_CONTACT_SEPARATION, AmbiguousContacts, enforce_contacts

    with pytest.raises(AmbiguousContacts, match=rf"sample 'faint'.*Ashman's D 1\.37, contact_level.csv "
                                                 rf"separation; at least {MIN_CONTACT_SEPARATION} needed.*phase "
                                                 rf"map's included.*no detached or no coated surface.*"
                                                 rf"no contact setting changes that.*on_ambiguous_contacts: warn"):
        enforce_contacts(0.01, 0.15, "faint", "stop", reading="map", separation=1.37)
    with pytest.raises(AmbiguousContacts, match=r"disagree on 30%.*Ashman's D 1\.37.*science.contact_level: midpoint"):
        enforce_contacts(0.3, 0.15, "both", "stop", reading="map", separation=1.37)  # the disagreement: settings may help
    with caplog.at_level(logging.WARNING):
        enforce_contacts(0.01, 0.15, "faint", "warn", separation=1.37)
    assert "Ashman's D 1.37" in caplog.text
    enforce_contacts(0.01, 0.15, "clear", "stop", separation=MIN_CONTACT_SEPARATION)  # at the bound: read


def test_a_weak_separation_warns_naming_the_sample_and_d_and_only_between_the_bounds(caplog):
    from detachment.plausibility import MIN_CONTACT_SEPARATION, WEAK_CONTACT_SEPARATION, warn_weak_separation

    with caplog.at_level(logging.WARNING):
        assert warn_weak_separation(2.47, "cell_7", "results/cell_7/contact_level.png")
    assert "sample 'cell_7'" in caplog.text and "Ashman's D 2.47" in caplog.text
    assert "results/cell_7/contact_level.png" in caplog.text and "detachment_ambiguous" in caplog.text
    caplog.clear()
    for d in (MIN_CONTACT_SEPARATION - 0.01, WEAK_CONTACT_SEPARATION, 6.0, float("nan"), None):
        with caplog.at_level(logging.WARNING):
            assert not warn_weak_separation(d, "s")  # overlapping stops elsewhere; clear or unfitted: silent
    assert not caplog.text
    assert warn_weak_separation(MIN_CONTACT_SEPARATION, "s")  # read, and warned, at the lower bound


def test_wide_edges_warn_naming_the_sample_and_width_only_beyond_the_sharpening_cap(caplog):
    """The bound is the contact reading's sharpening cap (one constant, not two); at the cap, below it, NaN or
    unknown: silent."""
    from detachment.contact_level import MAX_SHARPEN_SIGMA, sharpening_weight
    from detachment.plausibility import MAX_CHECKED_EDGE_WIDTH, edges_wide, warn_wide_edges

    assert MAX_SHARPEN_SIGMA == MAX_CHECKED_EDGE_WIDTH
    # beyond the bound the sharpening no longer follows the width: what the warning is about
    assert sharpening_weight(MAX_CHECKED_EDGE_WIDTH + 0.1) == sharpening_weight(MAX_CHECKED_EDGE_WIDTH)
    assert sharpening_weight(MAX_CHECKED_EDGE_WIDTH - 0.1) < sharpening_weight(MAX_CHECKED_EDGE_WIDTH)
    with caplog.at_level(logging.WARNING):
        assert warn_wide_edges(0.75, "cell_7", "results/cell_7/contact_level.png")
    assert "sample 'cell_7'" in caplog.text and "0.75 voxels wide" in caplog.text
    assert f"wider than the {MAX_CHECKED_EDGE_WIDTH}" in caplog.text and "detachment_ambiguous" in caplog.text
    assert "results/cell_7/contact_level.png" in caplog.text
    caplog.clear()
    for width in (MAX_CHECKED_EDGE_WIDTH, 0.5, float("nan"), None):
        with caplog.at_level(logging.WARNING):
            assert not warn_wide_edges(width, "s") and not edges_wide(width)
    assert not caplog.text


def test_the_contact_figures_verdict_names_wide_edges_and_a_weak_separation_where_every_check_passed():
    from detachment.plots import _verdict_line

    both = _verdict_line([], "stop", 2.47, 0.75)
    assert "weakly separated (D 2.47 < 3.0)" in both and "edges are 0.75 vox wide (> 0.7" in both
    assert "warning" in _verdict_line([], "stop", 4.2, 0.75) and "weakly" not in _verdict_line([], "stop", 4.2, 0.75)
    assert "edges" not in _verdict_line([], "stop", 4.2, 0.7) and "warning" not in _verdict_line([], "stop", 4.2, 0.7)
    assert "edges" not in _verdict_line(["point spread σ 0.90 vox (> 0.65)"], "stop", 4.2, 0.75)


def test_the_contact_figures_verdict_warns_on_a_weak_separation_only_where_every_check_passed():
    from detachment.plots import _verdict_line

    assert "weakly separated (D 2.47 < 3.0)" in _verdict_line([], "stop", 2.47)
    assert "weakly" not in _verdict_line([], "stop", 4.2) and "pass" in _verdict_line([], "stop", 4.2)
    failed = _verdict_line(["point spread σ 0.90 vox (> 0.65)"], "stop", 2.47)
    assert "NOT READABLE" in failed and "weakly" not in failed
    assert _verdict_line(None, "stop", 2.47) == ""


@pytest.mark.parametrize("sigma, failed, colour, width", [(0.06, [], "darkorange", 0.5), (0.02, [], "black", 0.5),
                                                          (0.06, ["gap / CBD separation"], "firebrick", 0.5),
                                                          (0.02, [], "darkorange", 0.8)])
def test_the_contact_figures_title_is_orange_where_it_warns(sigma, failed, colour, width):
    import matplotlib.pyplot as plt

    from detachment.contact_level import ContactLevel
    from detachment.plots import contact_level_figure

    fit = ContactLevel(0.125, True, gap_mean=0.05, gap_sigma=sigma, cbd_mean=0.2, cbd_sigma=sigma, gap_weight=0.4,
                       cbd_weight=0.6)
    assert (2 <= fit.separation < 3) == (sigma == 0.06)
    values = np.random.default_rng(0).normal(0.1, 0.08, 2000)
    fig = contact_level_figure(values, fit, 0.12, "s", failed=failed, edge_width=width)
    title = fig.axes[0].title
    assert title.get_color() == colour
    assert ("weakly separated" in title.get_text()) == (colour == "darkorange" and sigma == 0.06)
    assert ("vox wide" in title.get_text()) == (colour == "darkorange" and width > 0.7)
    plt.close(fig)


def test_the_contact_figure_says_when_gap_and_cbd_overlap():
    """The figure's title names the separation where it is below the bound, and says nothing of it above."""
    from detachment.contact_level import ContactLevel
    from detachment.plots import _reading_title

    def fit(gap_sigma):
        return ContactLevel(0.1, True, gap_mean=0.05, gap_sigma=gap_sigma, cbd_mean=0.2, cbd_sigma=0.05)

    overlapping, clear = fit(0.1), fit(0.02)
    assert overlapping.separation < 2 <= clear.separation
    assert f"Ashman's D {overlapping.separation:.2f} < 2.0" in _reading_title(overlapping, "s", False)
    assert "Ashman" not in _reading_title(clear, "s", False)


def test_the_checks_named_on_the_contact_figure_are_those_that_stop_the_reading():
    """Over a grid of every check's value on both sides of its bound (NaN and None too), the short list of
    failed checks is empty exactly where :func:`contacts_ambiguous` says the reading is readable, and each
    entry names the value that failed it."""
    import itertools

    from detachment.plausibility import (
        MAX_BOUNDS,
        MAX_GAP_WIDTH_RATIO,
        ambiguity_checks_failed,
        contacts_ambiguous,
    )

    blur = MAX_BOUNDS["blur_sigma_vox"][0]
    grid = itertools.product((0.02, -0.3, float("nan")), (0.15, None), (blur - 0.1, blur + 0.3, float("nan")),
                             (1.1, MAX_GAP_WIDTH_RATIO + 0.4, None), (False, True), (0.05, 0.4, float("nan")),
                             (3.0, 1.2, float("nan")))
    seen = set()
    for args in grid:
        failed = ambiguity_checks_failed(*args)
        assert bool(failed) == contacts_ambiguous(*args), args
        seen.add(len(failed))
        spread, _, sigma, ratio, through, share, separation = args
        text = " ".join(failed)
        if failed and sigma == blur + 0.3:
            assert f"σ {sigma:.2f}" in text
        if failed and separation == 1.2:
            assert "D 1.20" in text
        if failed and ratio is not None and ratio > MAX_GAP_WIDTH_RATIO and not through:
            assert f"{ratio:.2f}×" in text
    assert {0, 1, 2, 3} <= seen  # readable, one check and several at once all occur


def test_the_contact_figure_gives_the_verdict_and_what_the_run_does():
    """The title's last line names the failed checks in red and says whether the run stops or goes on; a
    readable sample's says so in black; without a verdict nothing is added."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.colors import to_hex

    from detachment.contact_level import ContactLevel
    from detachment.plots import contact_level_figure

    fit = ContactLevel(0.1, True, gap_mean=0.05, gap_sigma=0.02, cbd_mean=0.2, cbd_sigma=0.05)
    x = np.random.default_rng(0).normal(0.1, 0.08, 500)
    failed = ["point spread σ 0.95 vox (> 0.65)", "gap / CBD separation D 1.20 (< 2.0)"]
    stop = contact_level_figure(x, fit, title="s", failed=failed).axes[0].title
    text = stop.get_text().replace("\n", " ")  # the verdict is wrapped over lines
    assert "NOT READABLE, the run stops here" in text and "σ 0.95 vox" in text and "D 1.20" in text
    assert to_hex(stop.get_color()) == to_hex("firebrick")
    warn = contact_level_figure(x, fit, title="s", failed=failed, on_ambiguous="warn").axes[0].title.get_text()
    warn = warn.replace("\n", " ")
    assert "reported anyway (science.on_ambiguous_contacts: warn)" in warn and "stops" not in warn
    ok = contact_level_figure(x, fit, title="s", failed=[]).axes[0].title
    assert ok.get_text().endswith("contact checks pass: detachment is reported")
    assert to_hex(ok.get_color()) == to_hex("black")
    plain = contact_level_figure(x, fit, title="s").axes[0].title.get_text()
    assert "READABLE" not in plain and "checks pass" not in plain
