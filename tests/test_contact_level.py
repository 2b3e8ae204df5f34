"""The fitted contact level: recovery of a known mixture, fallbacks, face neighbours, and a blurred gap."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage, optimize, stats

from detachment.contact_level import ContactLevel, face_neighbour_levels, fit_contact_level
from detachment.phases import CBD, NMC_LOW, VOID
from detachment.surface import surface_contacts


@pytest.mark.parametrize("n", [40000, 300000])  # the larger is fitted on a subset
def test_fit_recovers_a_known_mixture_and_cuts_where_the_weighted_densities_cross(n):
    rng = np.random.default_rng(0)
    w, mu, sd = (0.3, 0.7), (0.14, 0.37), (0.06, 0.045)
    k = rng.random(n) < w[0]
    x = np.where(k, rng.normal(mu[0], sd[0], n), rng.normal(mu[1], sd[1], n))
    fit = fit_contact_level(x, fallback=0.15)
    # oracle: the crossing of the planted weighted densities, by root finding
    cross = optimize.brentq(lambda t: w[0] * stats.norm.pdf(t, mu[0], sd[0]) - w[1] * stats.norm.pdf(t, mu[1], sd[1]),
                            mu[0], mu[1])
    assert fit.fitted
    assert fit.level == pytest.approx(cross, abs=0.005)
    assert (fit.gap_mean, fit.cbd_mean) == pytest.approx(mu, abs=0.005)
    assert (fit.gap_sigma, fit.cbd_sigma) == pytest.approx(sd, abs=0.005)
    assert fit.gap_weight == pytest.approx(w[0], abs=0.02)
    assert fit.n_faces == n


def test_a_few_outliers_far_from_both_modes_do_not_move_the_level():
    """Gap 0.03 ± 0.05 (20 %), CBD 0.32 ± 0.045, and 2 % of the values spread over 0.5-0.65 (face neighbours
    beside a bright edge, overshot by the sharpening): the level stays at the planted components' crossing,
    the outliers (with some of the Gaussians' far tails) go to the uniform component; without them the
    uniform component stays empty and the level is the same."""
    rng = np.random.default_rng(2)
    n = 100_000
    w, mu, sd = (0.2, 0.78), (0.03, 0.32), (0.05, 0.045)
    k = rng.random(n)
    x = np.where(k < w[0], rng.normal(mu[0], sd[0], n),
                 np.where(k < w[0] + w[1], rng.normal(mu[1], sd[1], n), rng.uniform(0.5, 0.65, n)))
    cross = optimize.brentq(lambda t: w[0] * stats.norm.pdf(t, mu[0], sd[0]) - w[1] * stats.norm.pdf(t, mu[1], sd[1]),
                            mu[0], mu[1])
    fit = fit_contact_level(x, fallback=0.15)
    clean = fit_contact_level(x[k < w[0] + w[1]], fallback=0.15)
    assert fit.level == pytest.approx(cross, abs=0.01) and clean.level == pytest.approx(cross, abs=0.01)
    assert fit.gap_sigma == pytest.approx(sd[0], abs=0.01)
    assert 0.02 <= fit.outlier_weight < 0.1 and clean.outlier_weight < 0.005


def test_fit_falls_back_to_the_midpoint_without_two_modes_or_enough_faces():
    rng = np.random.default_rng(1)
    one_mode = rng.normal(0.37, 0.05, 5000)  # a sample with no detachment: CBD only
    fit = fit_contact_level(one_mode, fallback=0.15)
    assert not fit.fitted and fit.level == 0.15
    few = np.concatenate([rng.normal(0.14, 0.05, 50), rng.normal(0.37, 0.05, 50)])
    fit = fit_contact_level(few, fallback=0.15)
    assert not fit.fitted and fit.level == 0.15 and fit.n_faces == 100


def test_face_neighbour_levels_match_a_brute_force_walk_over_the_faces():
    rng = np.random.default_rng(2)
    shape = (7, 8, 9)
    env = ndimage.binary_opening(rng.random(shape) < 0.5)
    others = ~env & (rng.random(shape) < 0.2)
    phases = rng.choice([VOID, CBD, NMC_LOW], size=shape).astype(np.uint8)
    grey = rng.random(shape).astype(np.float32)
    expected = []
    for z, y, x in np.argwhere(env):
        for axis in range(3):
            for step in (-1, 1):
                q = [z, y, x]
                q[axis] += step
                if not 0 <= q[axis] < shape[axis]:
                    continue
                q = tuple(q)
                if not env[q] and not others[q] and phases[q] in (VOID, CBD):
                    expected.append(grey[q])
    got = face_neighbour_levels(env, others, phases, grey)
    np.testing.assert_allclose(np.sort(got), np.sort(np.asarray(expected, np.float64)))


def _blurred_ball(sigma: float, detached: bool, noise: float = 0.01, seed: int = 3):
    """A ball (NMC 0.72) in CBD, blurred by σ with Gaussian noise of SD ``noise``. ``detached``: its upper part behind a two-voxel
    electrolyte gap (0.0), the CBD 0.3; else no gap, but CBD of two densities (0.36 above, porous 0.24 below)."""
    shape = (40, 40, 40)
    zz, yy, xx = np.indices(shape)
    r = np.sqrt((zz - 20) ** 2 + (yy - 20) ** 2 + (xx - 20) ** 2)
    ball = r <= 9
    phases = np.full(shape, CBD, np.uint8)
    phases[ball] = NMC_LOW
    upper = zz + 0.3 * (yy - 20) > 21
    sharp = np.where(ball, 0.72, 0.3)
    if detached:
        phases[~ball & (r <= 11) & upper] = VOID
        sharp[phases == VOID] = 0.0
    else:
        sharp[~ball] = np.where(upper[~ball], 0.36, 0.24)
    grey = ndimage.gaussian_filter(sharp.astype(np.float32), sigma)
    grey = (grey + np.random.default_rng(seed).normal(0, noise, shape)).astype(np.float32)
    return ball, phases, grey


def test_fitted_level_reads_a_blurred_gap_that_the_void_cbd_midpoint_misses():
    """A ball in CBD, its upper half detached by a two-voxel electrolyte gap, blurred (σ 0.5 voxel) with
    noise: the truth is the face count on the sharp phases; the fitted level finds it within 0.03, the
    void/CBD midpoint reads the edges of the patch as attached."""
    ball, phases, grey = _blurred_ball(0.5, detached=True, noise=0.02)
    labels = ball.astype(np.uint32)
    truth = surface_contacts(labels, phases, probe=1).detachment[1]
    # the phase map a volume-wide threshold gives (void/CBD cut low, void being the commonest phase)
    seen = np.where(grey < 0.1, VOID, np.where(grey < 0.51, CBD, NMC_LOW)).astype(np.uint8)
    fit = fit_contact_level(face_neighbour_levels(ball, np.zeros_like(ball), seen, grey), fallback=0.15)
    assert fit.fitted
    fitted = surface_contacts(labels, seen, probe=1, intensity=grey, gap_level=fit.level).detachment[1]
    midpoint = surface_contacts(labels, seen, probe=1, intensity=grey, gap_level=0.15).detachment[1]
    assert 0.3 < truth < 0.7
    assert abs(fitted - truth) < 0.03
    assert truth - midpoint > 0.05


@pytest.mark.parametrize("content", ["level,fitted\n", "level,fitted\n0.2,True\n0.3,True\n", "level,fitted\nnan,True\n",
                                     "fitted\nTrue\n", "level,fitted\n0.2,maybe\n",
                                     "level,fitted,electrolyte_sigma\n0.2,True,0\n",
                                     "level,fitted,electrolyte_sigma\n0.2,True,-0.1\n",
                                     "level,fitted,electrolyte_sigma\n0.2,True,inf\n"])
def test_bad_input_contact_level_table_is_refused_naming_the_file(tmp_path, content):
    path = tmp_path / "contact_level.csv"
    path.write_text(content)
    with pytest.raises(ValueError, match="contact_level.csv"):
        ContactLevel.read_csv(path)


def test_an_unfitted_level_may_be_missing_and_then_contacts_come_from_phases(tmp_path):
    (tmp_path / "c.csv").write_text("level,fitted,n_faces\nnan,False,0\n")
    back = ContactLevel.read_csv(tmp_path / "c.csv")
    assert not back.fitted and np.isnan(back.level)


def test_contact_level_table_round_trips(tmp_path):
    fit = fit_contact_level(np.concatenate([np.full(300, 0.1), np.full(300, 0.4)])
                            + np.random.default_rng(4).normal(0, 0.03, 600), fallback=0.15)
    fit.to_frame().to_csv(tmp_path / "c.csv", index=False)
    back = ContactLevel.read_csv(tmp_path / "c.csv")
    assert back.level == pytest.approx(fit.level) and back.fitted == fit.fitted and back.n_faces == 600
    assert np.isnan(back.electrolyte_sigma) and np.isnan(back.gap_width_ratio)  # not measured
    measured = replace(fit, electrolyte_sigma=0.02)
    measured.to_frame().to_csv(tmp_path / "m.csv", index=False)
    back = ContactLevel.read_csv(tmp_path / "m.csv")
    assert back.electrolyte_sigma == pytest.approx(0.02)
    assert back.gap_width_ratio == pytest.approx(fit.gap_sigma / 0.02)
    assert pd.read_csv(tmp_path / "m.csv").gap_width_ratio.iloc[0] == pytest.approx(fit.gap_sigma / 0.02)


@pytest.mark.parametrize("margin", [1, 2, 3])
def test_open_electrolyte_is_what_a_walk_over_each_voxels_cube_finds(margin):
    """Brute force: a voxel is open electrolyte when every voxel of the cube of half side ``margin`` around
    it lies in the array and is electrolyte."""
    from detachment.contact_level import open_electrolyte

    rng = np.random.default_rng(margin)
    phases = np.where(ndimage.gaussian_filter(rng.normal(size=(14, 15, 16)), 2) > -0.05, VOID, CBD).astype(np.uint8)
    got = open_electrolyte(phases, margin)
    want = np.zeros_like(got)
    for z, y, x in np.ndindex(phases.shape):
        lo = np.array([z, y, x]) - margin
        hi = np.array([z, y, x]) + margin + 1
        if (lo >= 0).all() and (hi <= phases.shape).all():
            want[z, y, x] = (phases[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] == VOID).all()
    assert want.any() and (~want & (phases == VOID)).any()
    np.testing.assert_array_equal(got, want)


def test_robust_sigma_is_a_gaussians_sigma_unmoved_by_outliers():
    from detachment.contact_level import robust_sigma

    x = np.random.default_rng(5).normal(0.3, 0.04, 20000)
    assert robust_sigma(x) == pytest.approx(np.std(x), rel=0.03)
    assert robust_sigma(np.concatenate([x, np.full(200, 5.0)])) == pytest.approx(np.std(x), rel=0.04)
    assert np.isnan(robust_sigma([1.0])) and np.isnan(robust_sigma([np.nan, 1.0]))


@pytest.mark.parametrize("weight", [0.0, 0.125, 0.245])
def test_the_open_electrolytes_spread_is_the_noise_through_the_sharpening(tmp_path, weight):
    """White noise of σ 0.02 on an electrolyte holding bright balls: the spread of the sharpened open
    electrolyte is σ times the sharpening's noise gain, sqrt((1 + 6 w)² + 6 w²) for the six-neighbour
    Laplacian (analytic); the balls' grey levels and the electrolyte within three voxels of them are left
    out; too little open electrolyte gives NaN."""
    from detachment import io
    from detachment.contact_level import electrolyte_spread

    rng = np.random.default_rng(11)
    zz, yy, xx = np.mgrid[:40, :64, :64]
    phases = np.full((40, 64, 64), VOID, np.uint8)
    for c in rng.uniform([5, 8, 8], [35, 56, 56], (6, 3)):
        phases[(zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 < 25] = NMC_LOW
    grey = np.where(phases == VOID, 0.1, 0.6) + rng.normal(0, 0.02, phases.shape)
    io.write_volume(tmp_path / "v.h5", grey.astype(np.float32), (0.5,) * 3, "test")
    io.write_arrays(tmp_path / "p.h5", {"phases": phases})
    gain = np.sqrt((1 + 6 * weight) ** 2 + 6 * weight ** 2)
    got = electrolyte_spread(tmp_path / "v.h5", tmp_path / "p.h5", weight, slab=7)
    assert got == pytest.approx(0.02 * gain, rel=0.04)
    io.write_arrays(tmp_path / "full.h5", {"phases": np.full_like(phases, CBD)})
    assert np.isnan(electrolyte_spread(tmp_path / "v.h5", tmp_path / "full.h5", weight))


@pytest.mark.parametrize("sigma, detached, switched", [(1.5, True, False), (1.0, False, True)])
def test_the_reading_switches_where_the_fitted_level_splits_cbd_and_reports_the_disagreement(sigma, detached,
                                                                                              switched):
    """A detached ball blurred by σ 1.5: the fitted level separates gap from CBD, the deconvolved reading
    agrees, the level is kept. An attached ball in CBD of two densities: the two Gaussians split the CBD faces
    (the level reads half of them as electrolyte); the deconvolved reading disagrees, is used and comes
    within 0.12 of the truth (no gap). Both against the face count on the sharp phases."""
    from detachment.contact_level import choose_reading
    from detachment.particles import solid_grey

    ball, phases, grey = _blurred_ball(sigma, detached)
    truth = surface_contacts(ball.astype(np.uint32), phases, probe=1).detachment[1]
    seen = np.where(grey < 0.15, VOID, np.where(grey < 0.51, CBD, NMC_LOW)).astype(np.uint8)
    solid = solid_grey(ball, seen, grey)
    assert solid == pytest.approx(0.72, abs=0.02)
    plain = face_neighbour_levels(ball, np.zeros_like(ball), seen, grey)
    deconvolved = face_neighbour_levels(ball, np.zeros_like(ball), seen, grey, solid_level=solid)
    level = fit_contact_level(plain, fallback=0.15)
    fit = choose_reading(level, plain, deconvolved, 0.15)
    assert (fit.reading == "deconvolved") == switched, fit
    assert fit.spread == pytest.approx(fit.gap_share - fit.gap_share_deconvolved)
    assert (abs(fit.spread) > 0.1) == switched
    read = surface_contacts(ball.astype(np.uint32), seen, probe=1, intensity=grey, gap_level=fit.level,
                            solid_level=solid if fit.reading == "deconvolved" else None).detachment[1]
    # the deconvolved reading is noisier (a voxel staircase and the curvature break the plane-edge symmetry)
    assert abs(read - truth) < (0.12 if switched else 0.05), (read, truth)
    if switched:  # what the level alone would have read
        alone = surface_contacts(ball.astype(np.uint32), seen, probe=1, intensity=grey, gap_level=level.level)
        assert alone.detachment[1] - truth > 0.2
    assert choose_reading(level, plain, deconvolved, 0.15, max_spread=None).reading == "level"


def test_reading_settings_follow_the_file_and_the_mode(tmp_path):
    from detachment.contact_level import reading_settings

    (tmp_path / "c.csv").write_text("level,fitted,reading,sharpen\n0.14,False,deconvolved,0.13\n")
    # the deconvolved reading is made on the grey levels as they are, whatever the level was fitted on
    plain = {"deconvolve": False, "sharpen": 0.0, "spill_sigma": 0.0, "ambiguity": None,  # no mixture in these files
             "partial_volume": False}
    assert reading_settings(tmp_path / "c.csv") == {**plain, "contact_level": 0.14, "deconvolve": True}
    assert reading_settings(tmp_path / "c.csv", "midpoint") == {**plain, "contact_level": None}
    (tmp_path / "s.csv").write_text("level,fitted,reading,sharpen,spill_sigma\n0.2,True,level,0.13,0.6\n")
    assert reading_settings(tmp_path / "s.csv") == {**plain, "contact_level": 0.2, "sharpen": 0.13, "spill_sigma": 0.6}
    (tmp_path / "old.csv").write_text("level,fitted,reading\n0.2,True,level\n")  # written before sharpening
    assert reading_settings(tmp_path / "old.csv") == {**plain, "contact_level": 0.2}
    for key in ("sharpen", "spill_sigma"):
        (tmp_path / "neg.csv").write_text(f"level,fitted,reading,{key}\n0.2,True,level,-0.1\n")
        with pytest.raises(ValueError, match=f"neg.csv: '{key}' must be"):
            reading_settings(tmp_path / "neg.csv")
    (tmp_path / "bad.csv").write_text("level,fitted,reading\n0.14,False,guess\n")
    with pytest.raises(ValueError, match="bad.csv: 'reading' must be one of"):
        reading_settings(tmp_path / "bad.csv")


def test_components_too_close_for_a_level_still_go_to_the_particles_reading(tmp_path):
    """A file whose gap and CBD components were estimated but not used for a level (``fitted`` False) hands
    them on for the per-particle share of undecided faces; one whose components are missing or degenerate
    hands on nothing."""
    from detachment.contact_level import reading_settings

    head = "level,fitted,reading,gap_mean,gap_sigma,gap_weight,cbd_mean,cbd_sigma,cbd_weight\n"
    (tmp_path / "close.csv").write_text(head + "0.12,False,map,0.127,0.093,0.40,0.186,0.070,0.60\n")
    ambiguity = reading_settings(tmp_path / "close.csv")["ambiguity"]
    assert ambiguity is not None and not ambiguity.fitted and ambiguity.separation < 1
    for row in ("0.12,False,map,0.127,0.0,0.40,0.186,0.070,0.60", "0.12,False,map,,,,,,"):
        (tmp_path / "none.csv").write_text(head + row + "\n")
        assert reading_settings(tmp_path / "none.csv")["ambiguity"] is None


@pytest.mark.parametrize("gap_sigma, electrolyte_sigma, mixed", [(0.06, 0.05, False), (0.0674, 0.05, False),
                                                                 (0.0676, 0.05, True), (0.1, 0.05, True),
                                                                 (0.1, float("nan"), False)])
def test_the_faces_hold_mixtures_where_the_gap_spreads_past_the_bound_and_the_mode_decides_the_reading(
        tmp_path, gap_sigma, electrolyte_sigma, mixed):
    """``partial_volume`` is the gap faces' width ratio beyond the bound (1.35; unknown: False); it goes to the
    file and back, and ``science.contact_partial_volume`` reads through the layer where it says (auto), always
    or never, and refuses anything else naming the setting."""
    from detachment.contact_level import reading_settings, reads_through_layer
    from detachment.plausibility import MAX_GAP_WIDTH_RATIO

    fit = ContactLevel(0.12, True, 0.0, gap_sigma, 0.4, 0.28, 0.05, 0.6, 0.0, 1000, reading="map",
                       electrolyte_sigma=electrolyte_sigma)
    assert MAX_GAP_WIDTH_RATIO == 1.35 and fit.partial_volume is mixed
    fit.to_frame().to_csv(tmp_path / "f.csv", index=False)
    assert bool(pd.read_csv(tmp_path / "f.csv").partial_volume.iloc[0]) is mixed
    assert ContactLevel.read_csv(tmp_path / "f.csv").partial_volume is mixed
    assert reading_settings(tmp_path / "f.csv")["partial_volume"] is mixed
    assert reading_settings(tmp_path / "f.csv", partial_volume="always")["partial_volume"] is True
    assert reading_settings(tmp_path / "f.csv", partial_volume="never")["partial_volume"] is False
    assert reading_settings(tmp_path / "f.csv", "midpoint")["partial_volume"] is False  # no reading to follow
    assert reading_settings(tmp_path / "f.csv", "midpoint", "always")["partial_volume"] is True
    assert reads_through_layer(None) is False and reads_through_layer(fit, "auto") is mixed
    with pytest.raises(ValueError, match=r"science.contact_partial_volume must be one of .*'sometimes'"):
        reading_settings(tmp_path / "f.csv", partial_volume="sometimes")


def _coated_ball(sigma: float, coat: float, noise: float = 0.02, seed: int = 3):
    """A ball (NMC 0.72) in electrolyte (0.0): below, a CBD coat (0.3) ``coat`` voxels thick with electrolyte
    beyond it; above, a two-voxel electrolyte gap with CBD beyond. Blurred by σ, Gaussian noise of SD
    ``noise``. The coat's face neighbours are darkened by the electrolyte beyond them, the gap's brightened
    by the CBD beyond: the case a level read on the reconstructed grey levels cannot separate."""
    shape = (40, 40, 40)
    zz, yy, xx = np.indices(shape)
    r = np.sqrt((zz - 20) ** 2 + (yy - 20.3) ** 2 + (xx - 19.6) ** 2)
    ball = r <= 9
    upper = zz + 0.3 * (yy - 20) > 22
    phases = np.full(shape, VOID, np.uint8)
    phases[~upper & (r <= 9 + coat)] = CBD
    phases[upper & (r > 11)] = CBD
    phases[ball] = NMC_LOW
    sharp = np.select([phases == CBD, phases == NMC_LOW], [0.3, 0.72], 0.0).astype(np.float32)
    grey = ndimage.gaussian_filter(sharp, sigma) + np.random.default_rng(seed).normal(0, noise, shape)
    return ball, phases, grey.astype(np.float32)


def _coated_ball_reading(sigma: float, coat: float, seed: int):
    """:func:`_coated_ball` with its truth (the face count on the sharp phases), ``read(g)`` (the detachment
    read on grey levels ``g`` with the level fitted on them, the map thresholded at 0.15 / 0.51), the labels,
    that map and the grey levels."""
    ball, phases, grey = _coated_ball(sigma, coat, seed=seed)
    labels = ball.astype(np.uint32)
    truth = surface_contacts(labels, phases, probe=1).detachment[1]
    seen = np.where(grey < 0.15, VOID, np.where(grey < 0.51, CBD, NMC_LOW)).astype(np.uint8)

    def read(g):
        fit = fit_contact_level(face_neighbour_levels(ball, np.zeros_like(ball), seen, g), fallback=0.15)
        return surface_contacts(labels, seen, probe=1, intensity=g, gap_level=fit.level).detachment[1]

    return truth, read, labels, seen, grey


@pytest.mark.parametrize("seed", [3, 4])
@pytest.mark.parametrize("sigma, coat, raw_misread", [(0.5, 1.0, False), (0.55, 1.0, True), (0.6, 1.5, True),
                                                      (0.6, 2.0, False)])
def test_sharpened_grey_levels_read_a_thin_coat_with_electrolyte_beyond_it(sigma, coat, raw_misread, seed):
    """Coated and detached faces of one blurred ball, read with the fitted level on the grey levels
    sharpened by w = σ² / 2: within 0.03 of the face count on the sharp phases, where the reconstructed
    grey levels read a one-voxel coat at σ 0.55 or a 1.5-voxel one at σ 0.6 as electrolyte (over 0.03
    too much). (A one-voxel coat at σ 0.6 and beyond is misread either way; less the particle's spill it is
    not: the next tests.)"""
    from detachment.contact_level import sharpen, sharpening_weight

    truth, read, _, _, grey = _coated_ball_reading(sigma, coat, seed)
    assert 0.3 < truth < 0.5

    sharpened = read(sharpen(grey, sharpening_weight(sigma)))
    assert abs(sharpened - truth) < 0.03, (sharpened, truth)
    assert (read(grey) - truth > 0.03) == raw_misread


def test_sharpening_undoes_a_gaussian_blur_to_first_order():
    """On a blurred sinusoid (an eigenfunction of the blur and the Laplacian alike: blurred amplitude
    exp(-k²σ²/2)), w = σ² / 2 restores the amplitude to exp(-k²σ²/2)(1 + k²σ²/2), the first-order
    inverse; the six-neighbour Laplacian against its analytic value on a quadratic."""
    from detachment.contact_level import sharpen, sharpening_weight

    sigma, k = 0.6, 2 * np.pi / 16
    x = np.arange(64)
    wave = np.broadcast_to(np.sin(k * x)[None, None, :], (3, 3, 64)).astype(np.float64)
    blurred = ndimage.gaussian_filter1d(wave, sigma, axis=2, mode="wrap")
    back = sharpen(blurred, sharpening_weight(sigma))
    inner = back[1, 1, 8:-8] / wave[1, 1, 8:-8]
    finite_k2 = 2 * (1 - np.cos(k))  # the discrete Laplacian's eigenvalue
    expected = np.exp(-k**2 * sigma**2 / 2) * (1 + sigma**2 / 2 * finite_k2)
    assert np.allclose(inner[np.abs(wave[1, 1, 8:-8]) > 0.3], expected, rtol=2e-3)
    assert abs(expected - 1) < abs(np.exp(-k**2 * sigma**2 / 2) - 1) / 5
    zz, yy, xx = np.indices((5, 5, 5)).astype(float)
    quad = zz**2 + 2 * yy**2 + 3 * xx**2  # Laplacian 12 everywhere inside
    assert sharpen(quad, 0.5)[2, 2, 2] == pytest.approx(quad[2, 2, 2] - 6)


def test_sharpening_under_a_z_factor_weighs_the_second_difference_along_z_by_its_square():
    """On a quadratic (second differences 2, 4, 6 along z, y, x): ``w (f² 2 + 4 + 6)`` is taken off inside,
    at most the cap's weight along z; a wave along z blurred by f σ comes back to first order as the isotropic
    one does under σ; f = 1 is the six-neighbour Laplacian's result exactly."""
    from detachment.contact_level import MAX_SHARPEN_SIGMA, sharpen, sharpening_weight

    zz, yy, xx = np.indices((5, 5, 5)).astype(float)
    quad = zz**2 + 2 * yy**2 + 3 * xx**2
    assert sharpen(quad, 0.1, 1.5)[2, 2, 2] == pytest.approx(quad[2, 2, 2] - 0.1 * (1.5**2 * 2 + 4 + 6))
    cap = MAX_SHARPEN_SIGMA**2 / 2
    assert sharpen(quad, 0.2, 3.0)[2, 2, 2] == pytest.approx(quad[2, 2, 2] - (cap * 2 + 0.2 * 10))
    rng = np.random.default_rng(2)
    noise = rng.normal(size=(6, 7, 8))
    np.testing.assert_array_equal(sharpen(noise, 0.2, 1.0), noise - 0.2 * ndimage.laplace(noise, mode="nearest"))
    sigma, factor, k = 0.4, 1.5, 2 * np.pi / 16
    wave = np.broadcast_to(np.sin(k * np.arange(64))[:, None, None], (64, 3, 3)).astype(np.float64)
    blurred = ndimage.gaussian_filter1d(wave, sigma * factor, axis=0, mode="wrap")
    back = sharpen(blurred, sharpening_weight(sigma), factor)[8:-8, 1, 1] / wave[8:-8, 1, 1]
    expected = np.exp(-k**2 * (sigma * factor)**2 / 2) * (1 + (sigma * factor)**2 / 2 * 2 * (1 - np.cos(k)))
    assert np.allclose(back[np.abs(wave[8:-8, 1, 1]) > 0.3], expected, rtol=2e-3)


def test_the_maps_z_factor_is_its_attribute_or_one():
    from detachment.contact_level import map_z_factor

    assert map_z_factor({"psf_refine_z_factor": 1.7}) == 1.7
    assert map_z_factor({}) == map_z_factor({"psf_refine_z_factor": float("nan")}) == 1.0
    assert map_z_factor({"psf_refine_z_factor": -2.0}) == 1.0


@pytest.mark.parametrize("sigma, weight", [(0.5, 0.125), (0.7, 0.245), (1.5, 0.245), (float("nan"), 0.0),
                                           (None, 0.0), (0.0, 0.0)])
def test_sharpening_weight_is_half_the_blur_variance_capped_at_the_blur_check(sigma, weight):
    from detachment.contact_level import sharpening_weight

    assert sharpening_weight(sigma) == pytest.approx(weight)


def test_the_blur_sigma_is_read_from_the_phase_checks_or_unknown(tmp_path):
    from detachment.contact_level import blur_sigma_from_qc

    (tmp_path / "qc.csv").write_text("check,value,bound\nvoid_fraction,0.5,0.001\nblur_sigma_vox,0.52,0.8\n")
    assert blur_sigma_from_qc(tmp_path / "qc.csv") == pytest.approx(0.52)
    (tmp_path / "few.csv").write_text("check,value,bound\nvoid_fraction,0.5,0.001\n")
    assert np.isnan(blur_sigma_from_qc(tmp_path / "few.csv"))
    (tmp_path / "bad.csv").write_text("name,v\nblur_sigma_vox,0.5\n")
    with pytest.raises(ValueError, match="bad.csv"):
        blur_sigma_from_qc(tmp_path / "bad.csv")


def test_the_edges_width_is_read_from_the_map_or_from_an_older_maps_checks(tmp_path):
    """The map's attribute ``edge_width_vox`` where it has one; a map written before the width and the point
    spread were told apart measured the check's σ on every edge, so that is the width."""
    import h5py

    from detachment.contact_level import edge_width_from_map

    (tmp_path / "qc.csv").write_text("check,value,bound\nblur_sigma_vox,0.61,0.7\n")
    for name, attrs, expected in (("new.h5", {"edge_width_vox": 0.79}, 0.79), ("old.h5", {}, 0.61)):
        with h5py.File(tmp_path / name, "w") as f:
            f.create_dataset("phases", data=np.zeros((2, 2, 2), np.uint8)).attrs.update(attrs)
        assert edge_width_from_map(tmp_path / name, tmp_path / "qc.csv") == pytest.approx(expected)


@pytest.mark.parametrize("sigma", [0.6, 1.0, 1.5])
def test_particle_spill_leaves_what_the_background_gives_beside_blurred_particles(sigma):
    """Two balls of solid grey 0.72 and 0.60 and a one-voxel particle (no interior: it takes the median of
    the others, 0.66) in a background half electrolyte (0.0), half CBD (0.3), blurred by σ with noise. Less
    :func:`particle_spill` counted from 0.15, the grey levels are the blurred background with the particles
    replaced by 0.15 (computed independently, by linearity of the blur), plus the noise: within 0.01, where
    the spill itself reaches 0.1 and more beside the balls."""
    from detachment.particles import particle_spill

    shape = (36, 36, 56)
    zz, yy, xx = np.indices(shape)
    labels = np.zeros(shape, np.uint32)
    labels[np.sqrt((zz - 18) ** 2 + (yy - 18) ** 2 + (xx - 16) ** 2) <= 8] = 1
    labels[np.sqrt((zz - 17.5) ** 2 + (yy - 18.4) ** 2 + (xx - 37) ** 2) <= 7] = 2
    labels[30, 30, 50] = 3
    background = np.where(zz < 18, 0.0, 0.3)
    solid = np.array([0.0, 0.72, 0.60, 0.66])[labels]
    phases = np.where(labels > 0, NMC_LOW, np.where(zz < 18, VOID, CBD)).astype(np.uint8)
    noise = np.random.default_rng(2).normal(0, 0.01, shape)
    grey = ndimage.gaussian_filter(np.where(labels > 0, solid, background), sigma, mode="nearest") + noise
    left = grey - particle_spill(labels, phases, grey, sigma, 0.15)
    oracle = ndimage.gaussian_filter(np.where(labels > 0, 0.15, background), sigma, mode="nearest") + noise
    outside = labels == 0
    assert np.abs(left - oracle)[outside].max() < 0.01
    beside = outside & ndimage.binary_dilation(labels > 0)
    assert (grey - oracle)[beside].mean() > 0.1
    none = particle_spill(np.zeros(shape, np.uint32), phases, grey, sigma, 0.15)
    assert not none.any()


@pytest.mark.parametrize("seed", [3, 4])
@pytest.mark.parametrize("sigma, coat", [(0.6, 1.0), (0.8, 1.0), (1.0, 1.0), (1.0, 2.0), (1.5, 2.0)])
def test_grey_levels_less_the_particles_spill_read_coats_and_gaps_at_wide_blur(sigma, coat, seed):
    """Coated and detached faces of one blurred ball, read with the fitted level on the grey levels less the
    particle's spill (:func:`particle_spill` through the σ of the blur): within 0.03 of the face count on
    the sharp phases up to σ 1.0 for a one-voxel coat and σ 1.5 for a two-voxel one, where the grey levels
    as reconstructed misread the faces by more than 0.05 beyond σ 0.6 (sharpened, weight capped at σ 0.7, the
    one-voxel coat too).
    (A one-voxel coat at σ 1.2 and beyond is misread: docs/methods.md.)"""
    from detachment.contact_level import sharpen, sharpening_weight
    from detachment.particles import particle_spill

    truth, read, labels, seen, grey = _coated_ball_reading(sigma, coat, seed)

    spill = read(grey - particle_spill(labels, seen, grey, sigma, 0.15))
    assert abs(spill - truth) < 0.03, (spill, truth)
    if sigma > 0.6:
        assert abs(read(grey) - truth) > 0.05
        if coat == 1.0:
            assert abs(read(sharpen(grey, sharpening_weight(sigma))) - truth) > 0.05


@pytest.mark.parametrize("seed", [3, 4])
@pytest.mark.parametrize("sigma, coat", [(0.55, 1.0), (0.6, 1.0), (0.65, 1.0), (0.7, 1.0), (0.7, 2.0)])
def test_the_default_reading_sharpened_and_less_the_spill_reads_one_voxel_coats_up_to_the_blur_bound(sigma, coat,
                                                                                                        seed):
    """The workflow's reading (sharpened with w = σ² / 2, less the particle's spill sharpened alike) of the
    coated ball up to the blur check's σ 0.7: within 0.02 of the face count on the sharp phases, where the
    sharpening alone misreads a one-voxel coat by 0.04-0.2 from σ 0.65 (over 0.05 at σ 0.7)."""
    from detachment.contact_level import sharpen, sharpening_weight
    from detachment.particles import particle_spill

    truth, read, labels, seen, grey = _coated_ball_reading(sigma, coat, seed)

    w = sharpening_weight(sigma)
    default = read(sharpen(grey - particle_spill(labels, seen, grey, sigma, 0.15), w))
    assert abs(default - truth) < 0.02, (default, truth)
    if coat == 1.0 and sigma == 0.7:
        assert abs(read(sharpen(grey, w)) - truth) > 0.05


def test_contact_level_figure_says_how_the_grey_levels_were_corrected():
    """The figure's axis names the spill's σ and the sharpening weight the level was fitted with (neither
    when the grey levels were read as reconstructed); the level is drawn where it was placed; where the open
    electrolyte's spread was measured, the gap component it would give is drawn and labelled with the ratio;
    the title says when the contacts are read through a thin CBD layer."""
    import matplotlib

    matplotlib.use("Agg")
    from dataclasses import replace

    from detachment.plots import contact_level_figure

    x = np.concatenate([np.full(300, 0.05), np.full(700, 0.3)]) + np.random.default_rng(1).normal(0, 0.03, 1000)
    fit = fit_contact_level(x, fallback=0.15)
    corrected = contact_level_figure(x, replace(fit, sharpen=0.13, spill_sigma=0.52), 0.15).axes[0]
    assert "spill (σ = 0.52 vox)" in corrected.get_xlabel() and "w = 0.13" in corrected.get_xlabel()
    assert any(np.allclose(line.get_xdata(), fit.level) for line in corrected.lines)
    labels = corrected.get_legend_handles_labels()[1]
    assert any(label.startswith("ambiguous: P(gap) 0.1–0.9") for label in labels), labels
    plain = contact_level_figure(x, fit, 0.15).axes[0]
    assert "spill" not in plain.get_xlabel() and "sharpened" not in plain.get_xlabel()
    assert not any("open electrolyte" in label for label in plain.get_legend_handles_labels()[1])
    # the gap component as the open electrolyte's spread would make it: its peak is the ratio times higher
    ax = contact_level_figure(x, replace(fit, electrolyte_sigma=fit.gap_sigma / 2), 0.15).axes[0]
    handles, labels = ax.get_legend_handles_labels()
    i = next(i for i, label in enumerate(labels) if label.startswith("open electrolyte's spread"))
    assert "gap 2.00× as wide (bound 1.35)" in labels[i], labels[i]
    gap = next(h for h, label in zip(handles, labels) if label.startswith("gap "))
    assert handles[i].get_ydata().max() == pytest.approx(2 * gap.get_ydata().max(), rel=0.02)
    assert "thin CBD layer" not in ax.get_title()
    through = contact_level_figure(x, fit, 0.15, title="s", through_layer=True).axes[0]
    assert through.get_title().startswith("s") and "(partial volume or blur):\na thin CBD layer" in through.get_title()
    assert "of faces" not in through.get_title()  # share not computed
    through = contact_level_figure(x, replace(fit, gap_share_through_layer=0.083), through_layer=True).axes[0]
    assert "(electrolyte on 8.3% of faces)" in through.get_title()


def test_ambiguous_faces_are_the_planted_mixtures_mass_where_neither_component_dominates():
    """A planted two-Gaussian mixture, fitted: the share of values whose gap probability is 0.1-0.9 equals
    the planted mixture's probability mass over the interval where its own posterior is in that band
    (the interval's ends by root finding, the mass from the normal CDFs); an unfitted level has none."""
    from scipy import optimize, stats

    from detachment.contact_level import ambiguous_face_share, gap_posterior

    rng = np.random.default_rng(5)
    n, w, mu, sd = 200_000, (0.35, 0.65), (0.05, 0.25), (0.05, 0.045)
    gap = rng.random(n) < w[0]
    x = np.where(gap, rng.normal(mu[0], sd[0], n), rng.normal(mu[1], sd[1], n))
    fit = fit_contact_level(x, fallback=0.15)

    def planted_post(t):
        g, c = w[0] * stats.norm.pdf(t, mu[0], sd[0]), w[1] * stats.norm.pdf(t, mu[1], sd[1])
        return g / (g + c)

    ends = [optimize.brentq(lambda t, p=p: planted_post(t) - p, mu[0], mu[1]) for p in (0.9, 0.1)]
    mass = sum(wi * (stats.norm.cdf(ends[1], m, s) - stats.norm.cdf(ends[0], m, s)) for wi, m, s in zip(w, mu, sd))
    assert 0.03 < mass < 0.3
    assert ambiguous_face_share(x, fit) == pytest.approx(mass, abs=0.01)
    post = gap_posterior(np.array([mu[0], fit.level, mu[1]]), fit)
    assert post[0] > 0.99 and post[1] == pytest.approx(0.5, abs=0.02) and post[2] < 0.01
    unfitted = fit_contact_level(np.full(50, 0.1), fallback=0.15)
    assert np.isnan(ambiguous_face_share(x, unfitted)) and np.isnan(gap_posterior(x[:3], unfitted)).all()


def test_gap_and_cbd_too_close_for_a_level_leave_nearly_every_face_undecided():
    """Two planted Gaussians 0.8 apart in Ashman's D (as under a point spread of 1.5 voxels): no level is
    fitted, but the share of undecided faces is still given, equal to the share computed here from the
    estimated components with scipy, and the planted mixture's own posterior (integrated on a fine grid)
    leaves nearly all of its mass undecided too: the reading can say how little it knows; the figure shows
    both."""
    from scipy import stats

    from detachment.contact_level import AMBIGUOUS_POSTERIOR, ambiguous_face_share

    rng = np.random.default_rng(6)
    n, w, mu, sd = 100_000, (0.4, 0.6), (0.127, 0.186), (0.093, 0.070)
    gap = rng.random(n) < w[0]
    x = np.where(gap, rng.normal(mu[0], sd[0], n), rng.normal(mu[1], sd[1], n))
    fit = fit_contact_level(x, fallback=0.15)
    assert not fit.fitted and fit.has_components and fit.separation < 2
    g = fit.gap_weight * stats.norm.pdf(x, fit.gap_mean, fit.gap_sigma)
    post = g / (g + fit.cbd_weight * stats.norm.pdf(x, fit.cbd_mean, fit.cbd_sigma))
    lo, hi = AMBIGUOUS_POSTERIOR
    assert ambiguous_face_share(x, fit) == pytest.approx(np.mean((post > lo) & (post < hi)))
    t = np.linspace(-0.4, 0.7, 200_001)
    pg, pc = w[0] * stats.norm.pdf(t, mu[0], sd[0]), w[1] * stats.norm.pdf(t, mu[1], sd[1])
    planted = np.sum(((pg / (pg + pc) > lo) & (pg / (pg + pc) < hi)) * (pg + pc)) * (t[1] - t[0])
    assert planted > 0.9 and ambiguous_face_share(x, fit) > 0.9
    # the figure draws those components dotted, and the undecided band with its share
    import matplotlib

    matplotlib.use("Agg")
    from dataclasses import replace

    from detachment.plots import contact_level_figure

    share = ambiguous_face_share(x, fit)
    ax = contact_level_figure(x, replace(fit, ambiguous_faces=share), 0.15).axes[0]
    handles, labels = ax.get_legend_handles_labels()
    drawn = [h for h, label in zip(handles, labels) if label.endswith("(too close for a level)")]
    assert len(drawn) == 2 and all(h.get_linestyle() == ":" for h in drawn), labels
    assert f"{share:.1%} of faces" in next(label for label in labels if label.startswith("ambiguous"))


@pytest.mark.parametrize("seed", [3, 4])
@pytest.mark.parametrize("sigma, coat", [(0.5, 1.0), (0.5, 2.0), (0.7, 1.5), (0.7, 2.0)])
def test_the_refined_maps_codes_read_a_coat_and_a_gap_the_thresholded_map_misreads(sigma, coat, seed):
    """The coated ball: the map thresholded voxel by voxel reads the gap's blurred face neighbours as CBD
    (off by more than 0.15); refined against the forward model (the planted σ and levels) its codes give the
    face count of the sharp phases within 0.03, and :func:`read_on_map` reports that share."""
    from detachment.contact_level import read_on_map
    from detachment.psf_refine import RefineSettings, refine_codes

    truth, read, labels, seen, grey = _coated_ball_reading(sigma, coat, seed)
    refined, _ = refine_codes(seen, grey, {"void": 0.0, "cbd": 0.3, "nmc_low": 0.72}, sigma, 0.02, RefineSettings())
    on_threshold = surface_contacts(labels, seen, probe=1).detachment[1]
    on_map = surface_contacts(labels, refined, probe=1).detachment[1]
    assert abs(on_threshold - truth) > 0.15
    assert abs(on_map - truth) < 0.03, (on_map, truth)
    ball = labels > 0
    values = face_neighbour_levels(ball, np.zeros_like(ball), refined, grey)
    codes = face_neighbour_levels(ball, np.zeros_like(ball), refined, refined.astype(np.float32))
    fit = read_on_map(fit_contact_level(values, fallback=0.15), values, codes)
    void = cbd = 0  # brute force over the faces: the neighbour's code across each face of the ball
    for z, y, x in zip(*np.nonzero(ball)):
        for dz, dy, dx in ((1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1)):
            if not ball[z + dz, y + dy, x + dx]:
                c = refined[z + dz, y + dy, x + dx]
                void, cbd = void + (c == VOID), cbd + (c == CBD)
    assert fit.reading == "map" and fit.gap_share_map == pytest.approx(void / (void + cbd), abs=1e-12)
    assert fit.spread == pytest.approx(fit.gap_share_map - np.mean(values < fit.level))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_share_read_through_a_thin_layer_counts_the_faces_one_by_one(seed):
    """``gap_share_through_layer`` over the crops: of the background faces (neighbour void or CBD, not another
    particle), those read as electrolyte through a CBD layer one or two voxels thick on the map's codes, as
    the face-by-face loop of ``tests/test_surface.py`` decides them (clipped to the crop); a crop without
    faces gives NaN."""
    from detachment.particles import _face_values

    from .test_surface import _brute_force_through_layer

    rng = np.random.default_rng(seed)
    crops, through, faces = [], 0, 0
    for _ in range(3):
        shape = tuple(rng.integers(9, 13, 3))
        env = np.zeros(shape, bool)
        env[3:-3, 3:-3, 3:-3] = True
        env &= rng.random(shape) < 0.9
        others = ~env & (rng.random(shape) < 0.1)
        ph = rng.choice(np.array([VOID, CBD, CBD, NMC_LOW], np.uint8), shape)
        ph[env] = NMC_LOW
        grey = rng.random(shape)
        crops.append((None, None, env, others, ph, grey, grey))
        counts, read_through, _ = _brute_force_through_layer(np.where(env, 1, np.where(others, 2, 0)), ph)
        faces += int(counts[1, :2].sum())
        through += int(read_through[1])
    values, _, codes, share = _face_values(crops)
    assert len(values) == len(codes) == faces and through > 10
    assert share == pytest.approx(through / faces, abs=1e-12)
    assert np.isnan(_face_values([])[3])


def test_the_map_reading_reads_no_grey_level_downstream_and_passes_the_fit_for_its_ambiguity(tmp_path):
    """No level decides a face under the map reading; the grey levels as the mixture was fitted on them and
    the mixture itself go on, for the per-particle share of faces they leave undecided."""
    from detachment.contact_level import reading_settings

    (tmp_path / "m.csv").write_text("level,fitted,reading,sharpen,spill_sigma\n0.2,True,map,0.13,0.6\n")
    assert reading_settings(tmp_path / "m.csv") == {"contact_level": None, "deconvolve": False, "sharpen": 0.13,
                                                    "spill_sigma": 0.6, "ambiguity": None,  # no components
                                                    "partial_volume": False}
    fit = ContactLevel(0.12, True, 0.0, 0.05, 0.4, 0.28, 0.05, 0.6, 0.0, 1000, reading="map", sharpen=0.13,
                       spill_sigma=0.6)
    fit.to_frame().to_csv(tmp_path / "f.csv", index=False)
    got = reading_settings(tmp_path / "f.csv")
    assert got["contact_level"] is None and got["ambiguity"].gap_mean == 0.0 and got["ambiguity"].cbd_weight == 0.6
    assert reading_settings(tmp_path / "f.csv", "midpoint")["ambiguity"] is None


@pytest.mark.parametrize("attr, refined", [("sigma 0.5 vox, noise 0.02: 10 codes changed", True), ("off", False),
                                           ("not run: no blur measured", False), (None, False)])
def test_whether_the_map_was_refined_is_read_from_its_attribute(tmp_path, attr, refined):
    import h5py

    from detachment.contact_level import map_is_refined

    with h5py.File(tmp_path / "p.h5", "w") as f:
        d = f.create_dataset("phases", data=np.zeros((2, 2, 2), np.uint8))
        if attr is not None:
            d.attrs["psf_refine"] = attr
    assert map_is_refined(tmp_path / "p.h5") is refined
