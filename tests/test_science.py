"""Per-particle measures, diffusion lengths, damage profile and statistics against analytic cases."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage, stats

from detachment.damage import depth_profile, local_damage
from detachment.diffusion import descent_path, geodesic_distance, particle_diffusion
from detachment.particles import STAIRCASE, particle_table, surface_area_mc
from detachment.phases import AL, CBD, NMC_HIGH, NMC_LOW, VOID
from detachment.stats import bootstrap_ci, by_group, by_size, correlation
from detachment.surface import surface_contacts


def ball(shape, c, r, spacing=(1.0, 1.0, 1.0)):
    zz, yy, xx = np.indices(shape)
    return ((zz - c[0]) * spacing[0]) ** 2 + ((yy - c[1]) * spacing[1]) ** 2 + ((xx - c[2]) * spacing[2]) ** 2 <= r**2


def test_marching_cubes_area_and_sphericity_of_a_ball_with_anisotropic_voxels():
    spacing = (0.5, 0.25, 0.25)
    m = ball((50, 90, 90), (25, 45, 45), 10.0, spacing)
    area = surface_area_mc(m, spacing)
    assert area == pytest.approx(4 * np.pi * 10.0**2, rel=0.03)
    for r in (6, 8, 10, 14):  # within 3 % from 6 voxels up (smaller balls: see surface_area_mc)
        n = 2 * r + 8
        assert surface_area_mc(ball((n, n, n), (n / 2, n / 2, n / 2), r), (1, 1, 1)) == \
            pytest.approx(4 * np.pi * r * r, rel=0.03)
    phases = np.where(m, NMC_LOW, CBD).astype(np.uint8)
    t = particle_table(m.astype(np.uint32), phases, np.zeros(m.shape, np.float32), spacing)
    assert t.sphericity.iloc[0] == pytest.approx(1.0, abs=0.05)
    assert t.volume_um3.iloc[0] == pytest.approx(4 / 3 * np.pi * 1000, rel=0.03)


def test_particle_table_contacts_cracks_density_and_detachment():
    labels = np.zeros((12, 20, 20), np.uint32)
    labels[4:10, 5:15, 5:15] = 1
    phases = np.full(labels.shape, CBD, np.uint8)
    phases[:2] = AL
    phases[10:] = VOID
    phases[labels == 1] = NMC_LOW
    phases[4:10, 9, 5:15] = VOID  # a crack wall 1 voxel thick
    phases[4:6, 5:15, 5:15][phases[4:6, 5:15, 5:15] == NMC_LOW] = NMC_HIGH
    volume = np.where(phases == NMC_HIGH, 0.9, 0.7).astype(np.float32)
    t = particle_table(labels, phases, volume, (1.0, 1.0, 1.0)).iloc[0]
    c = surface_contacts(labels, phases)
    # top face (100 faces) on electrolyte; bottom (100) and sides (240) on CBD
    assert t.detachment == pytest.approx(100 / 440)
    assert t.contact_void_um2 == pytest.approx(c.area[1, 0] * STAIRCASE)
    assert t.crack_volume_fraction == pytest.approx(60 / 600)
    assert t.nmc_high_fraction == pytest.approx(2 / 6)
    assert t.electron_density_mean == pytest.approx(0.7 + 0.2 * 2 / 6)
    assert t.distance_to_collector_um == 2.0  # collector top is z = 2, particle starts at z = 4
    # crack faces: two 6x10 walls' faces, times the staircase factor, over the volume
    assert t.crack_surface_per_volume_per_um == pytest.approx(2 * 60 * STAIRCASE / 600)


ANISO = (1.0, 0.5, 0.25)


@pytest.mark.parametrize("method", ["fmm", "dijkstra"])
@pytest.mark.parametrize("axis", [0, 1, 2])
def test_geodesic_distance_along_a_bar_is_exact_with_anisotropic_spacing(method, axis):
    shape = [1, 1, 1]
    shape[axis] = 14
    solid = np.zeros(shape, bool)
    src = np.zeros_like(solid)
    line = [0, 0, 0]
    line[axis] = slice(1, 13)
    solid[tuple(line)] = True
    line[axis] = slice(1, 4)  # a thick source: its far side is where distances start
    src[tuple(line)] = True
    d = geodesic_distance(solid, src, ANISO, method).ravel()
    np.testing.assert_allclose(d[1:13], ANISO[axis] * np.maximum(0, np.arange(12) - 2), atol=1e-12)
    assert np.isnan(d[0]) and np.isnan(d[13])


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), ANISO])
def test_fmm_in_a_convex_particle_is_the_euclidean_distance_to_its_attached_cap(spacing):
    r = 10.0  # µm; 10 voxels along the coarsest axis
    n = [int(2 * r / h) + 3 for h in spacing]
    centre = [(k // 2) * h for k, h in zip(n, spacing)]
    particle = ball(n, [k // 2 for k in n], r, spacing)
    z_um = np.arange(n[0])[:, None, None] * spacing[0]
    cap = particle & (z_um <= centre[0] - 0.6 * r)  # resting on Al: the bottom cap is the exit
    d = geodesic_distance(particle, cap, spacing)
    # in a convex body the geodesic is the straight line: Euclidean distance to the nearest cap voxel centre
    exact = ndimage.distance_transform_edt(~cap, sampling=spacing)
    h = max(spacing)
    far = particle & (exact > 4 * h)
    rel = (d - exact)[far] / exact[far]
    assert np.abs(rel).mean() < 0.01
    # within 2 voxels of the surface the digitised ball is not convex at the voxel scale: chords that graze it
    # are legitimately longer; deeper inside, within 2 %
    deep = far & (ndimage.distance_transform_edt(particle, sampling=spacing) > 2 * h)
    assert deep.sum() > 100
    np.testing.assert_array_less(np.abs(d - exact)[deep], 0.02 * exact[deep])
    assert np.isfinite(d[particle]).all() and np.isnan(d[~particle]).all()
    # the optimal path from the top is a streamline as long as the distance it descends (3D)
    top = tuple(np.argwhere(particle)[-1])
    path = descent_path(d, top, spacing)
    assert d[tuple(np.rint(path[-1]).astype(int))] == 0.0
    arc = np.linalg.norm(np.diff(path, axis=0) * spacing, axis=1).sum()
    assert arc == pytest.approx(d[top], rel=0.03)


def test_fully_attached_sphere_max_is_its_radius():
    r = 10.0
    env = ball((25, 25, 25), (12, 12, 12), r)
    phases = np.where(env, NMC_LOW, CBD).astype(np.uint8)
    s, field = particle_diffusion(env, phases, (1.0, 1.0, 1.0))
    assert s.isolated_fraction == 0.0 and s.exit_fraction == 1.0 and s.detour_ratio == pytest.approx(1.0)
    # the exits are the outer voxel shell, whose centres lie up to one voxel inside the sphere, and the front
    # cuts the corners of their staircase (< 0.5 voxel): max = radius within 1.5 voxel, never above it
    assert r - 1.5 <= s.max_um <= r
    assert field[12, 12, 12] == s.max_um  # the deepest point is the centre
    assert s.mean_um < s.p95_um < s.max_um


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), ANISO])
def test_crack_wall_forces_a_detour_of_known_length_and_isolates_what_it_closes(spacing):
    solid = np.ones((1, 41, 41), bool)
    solid[0, 20, :30] = False  # a crack wall from x = 0 to its end face at x = 29.5 voxels; opening beyond
    src = np.zeros_like(solid)
    src[0, 0, :] = True  # exits along the top row
    _, hy, hx = spacing
    d = geodesic_distance(solid, src, spacing)
    dj = geodesic_distance(solid, src, spacing, "dijkstra")
    detour = np.hypot(20 * hy, 29.5 * hx) + 20 * hy  # (40, 0) -> wall end -> straight up to the exits
    assert d[0, 40, 0] == pytest.approx(detour, rel=0.02)
    assert dj[0, 40, 0] >= detour - 1e-9  # a path on the voxel graph is a path: never below the geodesic
    assert d[0, 19, 0] == pytest.approx(19 * hy)  # above the wall: the straight distance
    closed = solid.copy()
    closed[0, 20, :] = False
    for method in ("fmm", "dijkstra"):
        d2 = geodesic_distance(closed, src, spacing, method)
        assert np.isinf(d2[0, 21:]).all() and np.isfinite(d2[0, :20]).all()


def test_streamline_goes_around_the_crack_to_an_exit():
    solid = np.ones((1, 41, 41), bool)
    solid[0, 20, :30] = False
    src = np.zeros_like(solid)
    src[0, 0, :] = True
    field = geodesic_distance(solid, src, ANISO)[0]
    path = descent_path(field, (40, 0), ANISO[1:])
    end = tuple(np.rint(path[-1]).astype(int))
    assert field[end] == 0.0
    crossing = path[np.argmin(np.abs(path[:, 0] - 20))]
    assert crossing[1] > 29.5  # through the opening
    along = np.array([field[tuple(np.rint(p).astype(int))] for p in path])
    assert (np.diff(along) <= 1e-9).all()  # the distance never increases along the path
    arc = np.linalg.norm(np.diff(path, axis=0) * ANISO[1:], axis=1).sum()
    assert arc == pytest.approx(field[40, 0], rel=0.03)
    # a one-voxel corridor along the array's border, turning at its corner: the path stays inside the array
    corridor = np.zeros((1, 10, 10), bool)
    corridor[0, 9, :] = corridor[0, :, 9] = True
    exit_ = np.zeros_like(corridor)
    exit_[0, 0, 9] = True
    field = geodesic_distance(corridor, exit_, ANISO)[0]
    path = descent_path(field, (9, 0), ANISO[1:])
    assert field[tuple(np.rint(path[-1]).astype(int))] == 0.0
    # where no gradient step descends (here at the array's border), it steps to the steepest neighbour voxel
    path = descent_path(np.array([[0.0, np.nan], [2.0, 1.0]]), (1, 1))
    np.testing.assert_array_equal(path[-1], [0, 0])


@pytest.mark.parametrize("method", ["fmm", "dijkstra"])
def test_a_one_voxel_oblique_crack_is_an_obstacle(method):
    yy, xx = np.indices((12, 12))
    solid = (yy != xx)[None]  # the diagonal crack leaves the two halves touching only at voxel edges
    src = np.zeros_like(solid)
    src[0, 0, 5] = True
    d = geodesic_distance(solid, src, (1.0, 1.0, 1.0), method)[0]
    assert np.isfinite(d[yy < xx]).all() and np.isinf(d[yy > xx]).all()


def test_detached_and_tiny_particles():
    env = np.zeros((5, 8, 8), bool)
    env[1:4, 2:6, 2:6] = True
    phases = np.where(env, NMC_LOW, VOID).astype(np.uint8)  # no CBD or Al anywhere: fully detached
    s, field = particle_diffusion(env, phases, ANISO)
    assert s.isolated_fraction == 1.0 and s.exit_fraction == 0.0
    assert np.isnan(s.mean_um) and np.isnan(s.detour_ratio)
    assert np.isinf(field[env]).all() and np.isnan(field[~env]).all()
    one = np.zeros((3, 3, 3), bool)
    one[1, 1, 1] = True
    s1, f1 = particle_diffusion(one, np.where(one, NMC_LOW, CBD).astype(np.uint8), ANISO)
    assert s1.isolated_fraction == 0.0 and s1.max_um == 0.0 and f1[1, 1, 1] == 0.0
    s0, _ = particle_diffusion(one, np.where(one, NMC_LOW, VOID).astype(np.uint8), ANISO)
    assert s0.isolated_fraction == 1.0
    two = np.zeros((3, 3, 4), bool)
    two[1, 1, 1:3] = True
    phases = np.where(two, NMC_LOW, VOID).astype(np.uint8)
    phases[1, 1, 0] = AL  # attached at one end only
    s2, f2 = particle_diffusion(two, phases, ANISO)
    assert f2[1, 1, 1] == 0.0 and f2[1, 1, 2] == pytest.approx(ANISO[2]) and s2.isolated_fraction == 0.0


@pytest.mark.parametrize("seed", range(5))
def test_fmm_against_exact_dijkstra_on_random_shapes(seed):
    rng = np.random.default_rng(seed)
    spacing = [(1.0, 1.0, 1.0), (1.0, 0.5, 0.5), ANISO][seed % 3]
    noise = ndimage.gaussian_filter(rng.normal(size=(16, 24, 24)), 2.0)
    solid = noise > np.quantile(noise, 0.55)
    surface = solid & ndimage.binary_dilation(~solid, ndimage.generate_binary_structure(3, 1), border_value=1)
    side = np.tensordot(rng.normal(size=3), np.indices(solid.shape) - np.array([8, 12, 12])[:, None, None, None],
                        axes=1) > 0
    src = surface & side  # exits: the surface on one random side
    f = geodesic_distance(solid, src, spacing)
    dj = geodesic_distance(solid, src, spacing, "dijkstra")
    np.testing.assert_array_equal(np.isfinite(f), np.isfinite(dj))  # same reachable / isolated voxels
    both = np.isfinite(f) & (dj > 0)
    # Dijkstra only over-estimates (oblique steps); FMM may run long by a fraction of a voxel next to a lone exit
    np.testing.assert_array_less(f[both], dj[both] + 0.6 * max(spacing))
    shorter = np.mean((dj[both] - f[both]) / dj[both])
    assert 0.0 < shorter < 0.08


def test_particle_diffusion_detour_and_isolated_fraction():
    env = np.zeros((3, 12, 12), bool)
    env[:, 1:11, 1:11] = True
    phases = np.full(env.shape, CBD, np.uint8)
    phases[env] = NMC_LOW
    phases[:, 1:11, 11] = VOID  # right face detached: its surface is no exit
    phases[:, 11, 1:11] = VOID
    s, field = particle_diffusion(env, phases, (1.0, 1.0, 1.0))
    assert s.isolated_fraction == 0.0 and s.detour_ratio > 1.0
    assert np.nanmin(field) == 0.0
    path = descent_path(field[1], (10, 10))
    assert field[1][tuple(np.rint(path[-1]).astype(int))] == 0.0


def test_depth_profile_bins_particles_by_height():
    t = pd.DataFrame({"height_um": [0.5, 1.5, 2.5, 3.5], "crack_surface_per_volume_per_um": [1.0, 3.0, 5.0, 7.0]})
    p = depth_profile(t, 2.0)
    assert p.n.tolist() == [2, 2]
    assert p.crack_surface_per_volume_mean.tolist() == [2.0, 6.0]


def test_local_damage_is_zero_without_cracks_and_positive_near_them():
    labels = np.zeros((10, 20, 20), np.uint32)
    labels[2:8, 2:18, 2:18] = 1
    phases = np.where(labels > 0, NMC_LOW, CBD).astype(np.uint8)
    assert np.nanmax(local_damage(labels, phases, (1, 1, 1))) == 0
    phases[2:8, 10, 2:10] = VOID
    f = local_damage(labels, phases, (1, 1, 1))
    assert f[5, 10, 5] > f[5, 16, 15] >= 0


def test_bootstrap_ci_and_group_statistics_match_scipy():
    rng = np.random.default_rng(0)
    a, b = rng.beta(4, 5, 60), rng.beta(2, 7, 60)
    lo, hi = bootstrap_ci(a)
    assert lo < a.mean() < hi and hi - lo < 0.1
    df = pd.DataFrame({"c_rate": ["1C"] * 60 + ["C/10"] * 60, "detachment": np.concatenate([a, b])})
    g = by_group(df)
    assert g["mean"].tolist() == pytest.approx([a.mean(), b.mean()])
    assert g.iloc[1, -1] == pytest.approx(stats.mannwhitneyu(b, a, alternative="two-sided").pvalue)
    r, p = correlation(a, a * 2 + 1)
    assert r == pytest.approx(1.0)


def test_statistics_of_no_particles_are_empty_tables_not_errors():
    # a model that finds nothing must leave empty statistics, not an IndexError deep in pandas
    empty = pd.DataFrame({"c_rate": pd.Series([], dtype=object), "detachment": pd.Series([], dtype=float),
                          "diameter_um": pd.Series([], dtype=float), "detachment_std": pd.Series([], dtype=float)})
    assert by_group(empty).empty and "n" in by_group(empty)
    assert by_size(empty, 4).empty and "measurement_std_mean" in by_size(empty, 4)
    one = pd.DataFrame({"c_rate": ["1C"], "detachment": [0.3], "diameter_um": [8.0], "detachment_std": [0.02]})
    assert "diameter_low_um" in by_size(one, 4) and by_group(one)["n"].tolist() == [1]


def test_small_particles_carry_more_measurement_uncertainty():
    rng = np.random.default_rng(1)
    d = rng.uniform(3, 15, 200)
    faces = 6 * d**2
    det = rng.beta(3, 5, 200)
    df = pd.DataFrame({"diameter_um": d, "detachment": det, "detachment_std": np.sqrt(det * (1 - det) / faces)})
    t = by_size(df, 4)
    assert t.n.sum() == 200
    assert t.measurement_std_mean.is_monotonic_decreasing


def _tiny_linked_phantom(tmp_path):
    """A tiny phantom written as the workflow writes it (v.h5, p.h5, particles.h5 by linking its truth
    labels): (phantom, links, linked labels)."""
    from detachment import io
    from detachment.linking import LinkSettings, link_file
    from detachment.phantom import PhantomParams, generate_phantom

    from .conftest import TINY_PHANTOM

    ph = generate_phantom(PhantomParams(**TINY_PHANTOM), seed=4)
    io.write_volume(tmp_path / "v.h5", ph.volume, 0.5, "t")
    io.write_arrays(tmp_path / "s.h5", {"labels": ph.labels}, voxel_size_um=(0.5,) * 3)
    io.write_arrays(tmp_path / "p.h5", {"phases": ph.phases})
    links = link_file(tmp_path / "s.h5", tmp_path / "particles.h5", LinkSettings(min_voxels=1))
    return ph, links, io.read_dataset(tmp_path / "particles.h5", "labels")


def _streamed(tmp_path, links, **kw):
    from detachment.particles import particle_table_from_files

    return particle_table_from_files(tmp_path / "particles.h5", tmp_path / "p.h5", tmp_path / "v.h5", links,
                                     progress=False, refine=False, **kw)


def test_streamed_particle_table_equals_whole_volume_table(tmp_path):
    ph, links, labels = _tiny_linked_phantom(tmp_path)
    whole = particle_table(labels, ph.phases, ph.volume, (0.5,) * 3, dict(zip(links.label, links.touches_border)))
    streamed = _streamed(tmp_path, links)
    pd.testing.assert_frame_equal(whole.reset_index(drop=True), streamed[whole.columns].reset_index(drop=True),
                                  check_dtype=False, rtol=1e-6)


@pytest.mark.parametrize("probe", [1, 2])
def test_streamed_sharpened_reading_equals_the_whole_volume_sharpened(tmp_path, probe):
    """Contacts read crop by crop on sharpened grey levels (each crop read with a voxel of context) against
    one sharpening of the whole volume; the solid's grey-level columns stay those of the volume as it is."""
    from detachment.contact_level import sharpen

    ph, links, labels = _tiny_linked_phantom(tmp_path)
    kw = dict(probe=probe, gap_level=0.2)
    border = dict(zip(links.label, links.touches_border))
    whole = particle_table(labels, ph.phases, ph.volume, (0.5,) * 3, border,
                           contact_grey=sharpen(ph.volume, 0.15), **kw)
    plain = particle_table(labels, ph.phases, ph.volume, (0.5,) * 3, border, **kw)
    streamed = _streamed(tmp_path, links, probe=probe, contact_level=0.2, sharpen=0.15)
    pd.testing.assert_frame_equal(whole.reset_index(drop=True), streamed[whole.columns].reset_index(drop=True),
                                  check_dtype=False, rtol=1e-6)
    assert (whole.detachment != plain.detachment).any()  # the sharpening changed some reading
    pd.testing.assert_series_equal(whole.electron_density_mean, plain.electron_density_mean)
    with pytest.raises(ValueError, match="must be 0 with deconvolve"):
        _streamed(tmp_path, links, deconvolve=True, sharpen=0.15)


@pytest.mark.parametrize("partial_volume", [False, True])
def test_faces_beyond_a_short_mask_and_the_layer_behind_them_are_read_whole(tmp_path, partial_volume):
    """A mask two voxels short of its particle's top: the envelope grows back to the top, two voxels past the
    mask's bounding box, and half the top carries a two-voxel CBD layer with electrolyte beyond. Every face
    of the envelope is read, and the layer through to its far side: the oracle is the face count of the
    same envelope on the whole volume. With only two voxels of context the top is cut off the crop."""
    from detachment import io, validation
    from detachment.particles import particle_table_from_files, refine_envelope

    shape = (30, 30, 30)
    particle = np.zeros(shape, bool)
    particle[8:20, 9:21, 9:21] = True
    phases = np.where(particle, NMC_LOW, VOID).astype(np.uint8)
    phases[20:22, 9:21, 9:15] = CBD  # a two-voxel layer on half the top, electrolyte above it
    phases[10:20, 9:21, 21:24] = CBD  # a thick CBD bank on one side
    mask = particle.copy()
    mask[18:20] = False  # the CNN stops two voxels short of the top
    labels = mask.astype(np.uint32)
    io.write_volume(tmp_path / "v.h5", np.where(particle, 0.8, 0.1).astype(np.float32), 1.0, "t")
    io.write_arrays(tmp_path / "m.h5", {"labels": labels})
    io.write_arrays(tmp_path / "p.h5", {"phases": phases})
    links = validation.links_from_labels(labels)

    envelope = refine_envelope(mask, np.zeros(shape, bool), phases)
    np.testing.assert_array_equal(envelope, particle)
    whole = surface_contacts(envelope.astype(np.uint32), phases, partial_volume=partial_volume)

    def read(**kw):
        return particle_table_from_files(tmp_path / "m.h5", tmp_path / "p.h5", tmp_path / "v.h5", links,
                                         progress=False, gap_from_intensity=False, partial_volume=partial_volume,
                                         **kw).iloc[0]

    got = read()
    assert got.surface_faces == whole.n_faces[1].sum()
    assert got.detachment == pytest.approx(whole.detachment[1], abs=1e-12)
    cut = read(pad=2)
    assert cut.surface_faces == whole.n_faces[1].sum() - 12 * 12  # the top's faces lie outside that crop
    if partial_volume:
        # some of the layer's faces read as electrolyte, as the particle's faces around them do; with three
        # voxels of context the top is read but the electrolyte beyond the layer is not seen: all CBD
        assert whole.n_partial_volume[1] > 0
        short = read(pad=3)
        assert short.surface_faces == got.surface_faces
        assert short.detachment < got.detachment - 1e-6


def test_streamed_reading_less_the_spill_fits_and_reads_what_the_planted_phases_show(tmp_path):
    """The tiny phantom read crop by crop, sharpened and less the particles' spill through the planted σ:
    the level is fitted on values lowered by the spill (recorded in the fit), and the detachment read
    with it is within 0.015 on average (0.03 on each particle of 50 faces or more) of the face count on the
    planted phases; without the phase model's grey
    levels (no void/CBD midpoint to count from) nothing is subtracted."""
    import h5py

    from detachment.particles import contact_level_from_files
    from detachment.phases import PHASE_NAMES
    from detachment.surface import surface_contacts

    ph, links, labels = _tiny_linked_phantom(tmp_path)
    files = (tmp_path / "particles.h5", tmp_path / "p.h5", tmp_path / "v.h5", links)
    kw = dict(progress=False, refine=False, partition="masks", sharpen=0.125)
    bare, _, _ = contact_level_from_files(*files, spill_sigma=0.5, **kw)
    assert bare.spill_sigma == 0.0
    with h5py.File(tmp_path / "p.h5", "r+") as f:
        f["phases"].attrs["order"] = ",".join(PHASE_NAMES[c] for c in range(5))
        f["phases"].attrs["means"] = [ph.params.intensity[PHASE_NAMES[c]] for c in range(5)]
    plain, plain_values, _ = contact_level_from_files(*files, **kw)
    fit, values, midpoint = contact_level_from_files(*files, spill_sigma=0.5, **kw)
    assert fit.spill_sigma == 0.5 and plain.spill_sigma == 0.0 and midpoint is not None
    assert 0 <= fit.ambiguous_faces < 0.2
    assert len(values) == len(plain_values) and (plain_values - values).mean() > 0.01
    assert fit.level < plain.level
    t = _streamed(tmp_path, links, contact_level=fit.level, sharpen=0.125, spill_sigma=0.5)
    truth = surface_contacts(labels, ph.phases, probe=1).detachment[t.label.to_numpy()]
    err = np.abs(t.detachment.to_numpy() - truth)
    big = t.surface_faces.to_numpy() >= 50  # one face of a ten-face particle is 0.1
    assert err.mean() < 0.015 and err[big].max() < 0.03, (err, t.surface_faces.to_numpy())
    with pytest.raises(ValueError, match="must be 0 with deconvolve"):
        _streamed(tmp_path, links, deconvolve=True, spill_sigma=0.5)
    # read on the map: the level fitted alike, the share of electrolyte codes across the faces, never switched
    on_map, _, _ = contact_level_from_files(*files, spill_sigma=0.5, on_map=True, max_spread=0.0, **kw)
    assert on_map.reading == "map" and on_map.level == fit.level
    assert on_map.gap_share_map == fit.gap_share_map
    assert on_map.spread == pytest.approx(on_map.gap_share_map - np.mean(values < fit.level))
    on_codes = _streamed(tmp_path, links, gap_from_intensity=False)  # what particles_part reads with it
    assert np.abs(on_codes.detachment.to_numpy() - truth).mean() < 0.015


def test_refined_envelope_snaps_a_shifted_mask_to_the_solid_and_fills_cracks():
    from detachment.particles import refine_envelope

    b = ball((24, 24, 24), (12, 12, 12), 7.0)
    phases = np.where(b, NMC_LOW, CBD).astype(np.uint8)
    phases[12, 6:18, 12] = VOID  # a crack, inside the envelope
    phases[b & (np.indices(b.shape)[0] > 16)] = NMC_HIGH
    mask = np.roll(b, 1, axis=2)  # a segmentation one voxel off
    env = refine_envelope(mask, np.zeros_like(b), phases)
    np.testing.assert_array_equal(env, b)


def test_refined_envelope_keeps_a_crack_open_to_the_surface_inside_the_particle():
    from detachment.particles import refine_envelope

    zz, yy, xx = np.indices((24, 24, 24))
    b = (zz - 12) ** 2 + (yy - 12) ** 2 + (xx - 12) ** 2 <= 49
    phases = np.where(b, NMC_LOW, CBD).astype(np.uint8)
    slot = b & (abs(zz - 12) <= 2) & (abs(xx - 12) <= 2) & (yy >= 12)  # 5 voxels wide, centre to surface
    phases[slot] = VOID
    # the closing and the core on their own (the crack-mouth voxel is test_..._takes_the_void_mouth_of_a_crack)
    solid_only = refine_envelope(b, np.zeros_like(b), phases, core_erosion_vox=0, crack_span_vox=0, crack_mouths=False)
    with_core = refine_envelope(b, np.zeros_like(b), phases, crack_span_vox=0, crack_mouths=False)
    assert (slot & ~solid_only).sum() > 0.4 * slot.sum()  # closing alone leaves the slot open
    assert (slot & ~with_core).sum() < 0.5 * (slot & ~solid_only).sum()
    assert not (with_core & ~b).any()  # the core never grows the envelope past the particle


def test_refined_envelope_takes_the_void_mouth_of_a_crack_one_voxel_deep():
    # a crack 5 voxels wide from the centre out through +x whose last voxel, where it opens at the surface,
    # the mask misses: too wide for the closing and the spanned cracks, so without the rule the crack's
    # walls there read as detached surface
    from detachment.particles import refine_envelope

    zz, yy, xx = np.indices((28, 28, 28))
    b = (zz - 14) ** 2 + (yy - 14) ** 2 + (xx - 14) ** 2 <= 64
    phases = np.where(b, NMC_LOW, CBD).astype(np.uint8)
    crack = b & (abs(zz - 14) <= 2) & (abs(yy - 14) <= 3) & (xx >= 14)
    phases[crack] = VOID
    mouth = crack & ~ndimage.binary_erosion(b)
    mask = b & ~mouth
    without = refine_envelope(mask, np.zeros_like(b), phases, crack_mouths=False)
    env = refine_envelope(mask, np.zeros_like(b), phases)
    assert (mouth & ~without).sum() >= 0.8 * mouth.sum() >= 20
    np.testing.assert_array_equal(env, without | mouth)
    # where the crack opens into electrolyte the envelope takes one voxel of it beyond the mouth, no more
    outside = ndimage.binary_dilation(b, iterations=3) & ~b & (xx >= 20)
    phases[outside] = VOID
    grown = refine_envelope(b, np.zeros_like(b), phases) & ~b
    assert grown.any() and (grown <= (ndimage.binary_dilation(mouth) & outside)).all()


def test_refined_envelope_keeps_the_crack_network_and_cuts_an_overshoot_into_a_gap():
    from detachment.particles import refine_envelope

    zz, yy, xx = np.indices((26, 26, 26))
    b = (zz - 13) ** 2 + (yy - 13) ** 2 + (xx - 13) ** 2 <= 49
    shell = ndimage.binary_dilation(b) & ~b
    phases = np.where(b, NMC_LOW, CBD).astype(np.uint8)
    phases[shell & (yy < 13)] = VOID  # an electrolyte gap around the lower half: the particle detached there
    slot = b & (abs(zz - 13) <= 2) & (abs(xx - 13) <= 2) & (yy >= 13)  # a crack from the core out to the surface
    phases[slot] = VOID
    # the truth's envelope holds its cracks: refining the exact mask must give it back unchanged
    np.testing.assert_array_equal(refine_envelope(b, np.zeros_like(b), phases), b)
    # a mask one voxel too large: the overshoot into the gap and into CBD is cut, the crack kept
    np.testing.assert_array_equal(refine_envelope(b | shell, np.zeros_like(b), phases), b)


def test_refined_envelope_takes_back_cracks_where_the_mask_falls_short_but_not_a_gap():
    from detachment.particles import refine_envelope

    zz, yy, xx = np.indices((28, 28, 28))
    b = (zz - 14) ** 2 + (yy - 14) ** 2 + (xx - 14) ** 2 <= 64
    phases = np.where(b, NMC_LOW, CBD).astype(np.uint8)
    crack = b & ((zz == 14) | (zz == 15)) & (xx >= 14)  # 2 voxels thick, from the centre out through +x
    phases[crack] = VOID
    gap = (ndimage.binary_dilation(b, iterations=2) & ~b) & (xx < 12)  # a 2-voxel electrolyte gap on -x
    phases[gap] = VOID
    # the segmentation missed the particle's outer two voxels on +x, where the crack reaches the surface
    short = b & ~((xx >= 14) & ~ndimage.binary_erosion(b, iterations=2))
    env = refine_envelope(short, np.zeros_like(b), phases)
    assert (crack & ~short).sum() > 0
    # the crack is inside again, not read as detached surface (but for its last voxels on the sphere's
    # rim, where the ball curves away above and below)
    assert (crack & ~env).sum() <= 0.1 * crack.sum()
    assert not (env & gap).any()  # solid on one side only: still electrolyte
    assert not (env & ~b).any()
    without = refine_envelope(short, np.zeros_like(b), phases, crack_span_vox=0)
    assert (crack & ~without).sum() >= 3 * (crack & ~env).sum()  # what the rule adds


def test_refined_envelope_does_not_take_the_gap_to_an_unmasked_neighbour_for_a_crack():
    # a particle and, one voxel of electrolyte away on +x, a neighbour whose solid no mask covers: the gap
    # has solid on both sides within the crack span, but the far side is not the particle's own
    from detachment.particles import refine_envelope

    zz, yy, xx = np.indices((24, 24, 40))
    b = (zz - 12) ** 2 + (yy - 12) ** 2 + (xx - 12) ** 2 <= 64  # x 4 .. 20 on its axis
    neighbour = (zz - 12) ** 2 + (yy - 12) ** 2 + (xx - 31) ** 2 <= 81  # x 22 .. on its axis
    phases = np.where(b | neighbour, NMC_LOW, CBD).astype(np.uint8)
    gap = ndimage.binary_dilation(neighbour) & ~neighbour & ~b & (xx <= 22)
    phases[gap] = VOID
    crack = b & ((zz == 12) | (zz == 13)) & (xx <= 12)  # and a crack of its own, out through -x
    phases[crack] = VOID
    short = b & ~((xx <= 12) & ~ndimage.binary_erosion(b, iterations=2))  # the mask misses its -x rim
    env = refine_envelope(short, np.zeros_like(b), phases)
    assert (env & gap).sum() == 0 and not (env & neighbour).any()
    assert (crack & ~env).sum() <= 0.1 * crack.sum()  # its own crack is still taken back


def test_refined_envelope_takes_a_blurred_crack_mouth_but_not_the_cbd_coating():
    from detachment.particles import refine_envelope

    zz, yy, xx = np.indices((28, 28, 28))
    b = (zz - 14) ** 2 + (yy - 14) ** 2 + (xx - 14) ** 2 <= 64
    phases = np.where(b, NMC_LOW, VOID).astype(np.uint8)
    coat = ndimage.binary_dilation(b, iterations=2) & ~b
    phases[coat] = CBD  # the particle is coated by CBD all round
    crack = b & (zz == 14) & (xx >= 14)  # one voxel thick, from the centre out through +x
    # a thin crack is blurred into CBD's grey range where it opens at the surface (its outer 2 voxels)
    rim = crack & ~ndimage.binary_erosion(b, iterations=2)
    phases[crack & ~rim] = VOID
    phases[rim] = CBD
    mask = ndimage.binary_erosion(b, iterations=1)  # the segmentation, a voxel short all round
    env = refine_envelope(mask, np.zeros_like(b), phases)
    without = refine_envelope(mask, np.zeros_like(b), phases, crack_mouths=False)
    assert rim.sum() >= 8
    assert (rim & ~without).sum() >= 0.5 * rim.sum()  # a CBD-grey mouth is not a crack to the void rule
    assert (rim & ~env).sum() <= 0.25 * (rim & ~without).sum()
    assert not (env & coat).any()  # the CBD coating is one-sided: not taken
    assert (crack & ~rim & ~env).sum() == 0


def test_an_empty_particle_table_has_every_column_of_a_full_one(tmp_path):
    from detachment.particles import COLUMNS

    labels = np.zeros((6, 12, 12), np.uint32)
    labels[1:4, 2:6, 2:6] = 1
    phases = np.where(labels > 0, NMC_LOW, CBD).astype(np.uint8)
    full = particle_table(labels, phases, np.zeros(labels.shape, np.float32), (1, 1, 1), border={1: False})
    assert list(full.columns) == COLUMNS
    empty = particle_table(np.zeros_like(labels), phases, np.zeros(labels.shape, np.float32), (1, 1, 1), border={})
    assert list(empty.columns) == COLUMNS and len(empty) == 0


def test_streamed_diffusion_uses_the_refined_envelope_of_the_particle_table(tmp_path):
    import h5py

    from detachment.diffusion import diffusion_table_from_files, particle_diffusion
    from detachment.validation import links_from_labels

    b = ball((24, 24, 24), (12, 12, 12), 7.0)
    phases = np.where(b, NMC_LOW, CBD).astype(np.uint8)
    phases[b & (np.indices(b.shape)[1] > 15)] = NMC_HIGH
    phases[:, 19:, :] = VOID  # the top of the ball faces electrolyte: no exit there
    mask = np.roll(b, 1, axis=2).astype(np.uint32)  # a segmentation one voxel off
    with h5py.File(tmp_path / "l.h5", "w") as f:
        f["labels"] = mask
    with h5py.File(tmp_path / "p.h5", "w") as f:
        f["phases"] = phases
    links = links_from_labels(mask)
    refined = diffusion_table_from_files(tmp_path / "l.h5", tmp_path / "p.h5", links, (1, 1, 1), progress=False)
    raw = diffusion_table_from_files(tmp_path / "l.h5", tmp_path / "p.h5", links, (1, 1, 1), progress=False,
                                     refine=False)
    exact, _ = particle_diffusion(b, phases, (1, 1, 1))
    assert refined.mean_um.iloc[0] == pytest.approx(exact.mean_um, rel=1e-9)
    assert raw.mean_um.iloc[0] != pytest.approx(exact.mean_um, rel=1e-3)


def test_cell_level_test_against_hand_computed_values():
    from detachment.stats import cell_level_test

    cells = pd.DataFrame({"cell": list("abcdef"), "c_rate": ["1C"] * 3 + ["C/10"] * 3,
                          "mean": [4.0, 5.0, 6.0, 1.0, 2.0, 3.0]})
    t = cell_level_test(cells).set_index("c_rate")
    assert t.loc["C/10", "n_cells"] == 3 and t.loc["C/10", "cell_mean"] == pytest.approx(2.0)
    # Welch: t = 3 / sqrt(1/3 + 1/3) = 3.674 with 4 degrees of freedom
    assert t.loc["C/10", "welch_p_cells_vs_1C"] == pytest.approx(2 * stats.t.sf(3 / np.sqrt(2 / 3), 4))
    # of the 20 ways to pick three of six cells, 2 separate the means by 3 or more
    assert t.loc["C/10", "permutation_p_cells_vs_1C"] == pytest.approx(2 / 20)
    assert np.isnan(t.loc["1C", "welch_p_cells_vs_1C"])


def test_permutation_test_samples_splits_when_there_are_too_many_cells():
    from detachment.stats import _permutation_p

    rng = np.random.default_rng(3)
    a, b = rng.normal(0.4, 0.05, 12), rng.normal(0.2, 0.05, 12)  # C(24, 12) = 2.7 million splits
    p = _permutation_p(a, b, n_random=2000, seed=1)
    assert p == pytest.approx(1 / 2001)  # no random split separates the groups as well
    same = _permutation_p(a, a + rng.normal(0, 0.001, 12), n_random=2000, seed=1)
    assert same > 0.5


def test_particles_of_two_cells_separate_volumes_not_rates():
    """Pseudo-replication: two cells per rate whose means scatter as much within a rate as between rates.
    Particles (the units of Mann–Whitney) look overwhelmingly different; cells do not."""
    from detachment.stats import by_cell, cell_level_test

    rng = np.random.default_rng(1)
    rows = []
    for cell, rate, mean in (("a", "1C", 0.45), ("b", "1C", 0.25), ("c", "C/10", 0.35), ("d", "C/10", 0.15)):
        rows.append(pd.DataFrame({"cell": cell, "c_rate": rate, "detachment": rng.normal(mean, 0.05, 200)}))
    particles = pd.concat(rows, ignore_index=True)
    assert by_group(particles).iloc[1]["mannwhitney_p_vs_1C"] < 1e-10
    cells = by_cell(particles)
    assert list(cells.n) == [200] * 4
    t = cell_level_test(cells).set_index("c_rate")
    assert t.loc["C/10", "permutation_p_cells_vs_1C"] >= 1 / 3
    assert t.loc["C/10", "welch_p_cells_vs_1C"] > 0.05


def test_a_cells_contact_reading_uncertainty_is_its_worst_samples_spread():
    from detachment.stats import by_cell, with_reading_uncertainty

    particles = pd.DataFrame({"cell": ["a", "a", "b", "c"], "c_rate": ["1C", "1C", "C/10", "C/10"],
                              "detachment": [0.4, 0.5, 0.2, 0.1]})
    cells = with_reading_uncertainty(by_cell(particles), {"s1": 0.02, "s2": -0.3, "s3": 0.05, "s4": np.nan},
                                     {"s1": "a", "s2": "a", "s3": "b", "s4": "c"})
    assert cells.set_index("cell").contact_reading_spread.to_dict() == pytest.approx(
        {"a": 0.3, "b": 0.05, "c": np.nan}, nan_ok=True)
    assert list(cells["mean"]) == pytest.approx([0.45, 0.2, 0.1])


def test_a_cells_least_separation_is_the_minimum_over_its_samples_by_brute_force():
    """Random separations (some NaN) over random cells: each cell's value is the minimum of its samples'
    finite ones, written out with sorted(); a cell with none is NaN."""
    from detachment.stats import by_cell, with_least_separation

    rng = np.random.default_rng(3)
    samples = [f"s{i}" for i in range(40)]
    sample_cells = {s: f"c{rng.integers(6)}" for s in samples}
    separations = {s: (np.nan if rng.random() < 0.3 else float(rng.uniform(1, 8))) for s in samples}
    separations.update({s: np.nan for s, c in sample_cells.items() if c == "c0"})
    particles = pd.DataFrame({"cell": [f"c{i}" for i in range(6)], "c_rate": ["1C"] * 3 + ["C/10"] * 3,
                              "detachment": rng.random(6)})
    got = with_least_separation(by_cell(particles), separations, sample_cells).set_index("cell")
    for c in got.index:
        finite = sorted(v for s, v in separations.items() if sample_cells[s] == c and np.isfinite(v))
        assert got.contact_separation_min[c] == pytest.approx(finite[0] if finite else np.nan, nan_ok=True), c
    assert np.isnan(got.contact_separation_min["c0"])


def test_a_cells_widest_edges_are_the_maximum_over_its_samples_by_brute_force():
    """Random widths (some NaN) over random cells: each cell's value is the largest of its samples' finite
    ones, written out with sorted(); a cell with none is NaN."""
    from detachment.stats import by_cell, with_widest_edges

    rng = np.random.default_rng(5)
    sample_cells = {f"s{i}": f"c{rng.integers(5)}" for i in range(30)}
    widths = {s: (np.nan if rng.random() < 0.3 or c == "c0" else float(rng.uniform(0.3, 1.2)))
              for s, c in sample_cells.items()}
    particles = pd.DataFrame({"cell": [f"c{i}" for i in range(5)], "c_rate": ["1C"] * 5, "detachment": rng.random(5)})
    got = with_widest_edges(by_cell(particles), widths, sample_cells).set_index("cell")
    for c in got.index:
        finite = sorted(v for s, v in widths.items() if sample_cells[s] == c and np.isfinite(v))
        assert got.edge_width_max[c] == pytest.approx(finite[-1] if finite else np.nan, nan_ok=True), c
    assert np.isnan(got.edge_width_max["c0"])


def test_the_statistics_name_the_cells_read_with_wide_edges_and_why():
    from detachment.stats import uncertain_cells_note

    cells = pd.DataFrame({"cell": ["cellA", "cellB", "cellC"], "contact_separation_min": [2.4, 5.0, 5.0],
                          "edge_width_max": [0.8, 0.75, 0.7], "detachment_ambiguous_mean": [0.2, 0.15, 0.01]})
    note = uncertain_cells_note(cells)
    assert note.startswith("2 of 3 cells")
    assert "cellA (D 2.40, edges 0.80 vox wide, detachment_ambiguous_mean 0.200)" in note
    assert "cellB (edges 0.75 vox wide, detachment_ambiguous_mean 0.150)" in note and "cellC" not in note
    assert uncertain_cells_note(cells.drop(columns="edge_width_max")).startswith("1 of 3 cells")


def test_the_statistics_name_the_cells_read_with_weak_separation_and_their_undecided_share():
    from detachment.stats import uncertain_cells_note

    cells = pd.DataFrame({"cell": ["cellA", "cellB", "cellC", "cellD"],
                          "contact_separation_min": [2.4, 5.0, np.nan, 1.5],
                          "detachment_ambiguous_mean": [0.21, 0.01, 0.3, 0.5]})
    note = uncertain_cells_note(cells)
    assert note.startswith("1 of 4 cells") and "cellA (D 2.40, detachment_ambiguous_mean 0.210)" in note
    assert not {"cellB", "cellC", "cellD"} & set(note.replace(",", " ").split())  # clear, unfitted, stopped
    assert "cellA (D 2.40)" in uncertain_cells_note(cells.drop(columns="detachment_ambiguous_mean"))
    assert uncertain_cells_note(cells[cells.cell != "cellA"]) == ""


def test_a_samples_failed_checks_are_read_back_from_the_files_its_checks_wrote(tmp_path):
    """Each check's file, written out: the phase map's failed rows by name (the passed one left out), then the
    contacts where ``ambiguous`` is true, then the self-consistency where ``consistent`` is false; a contact
    file from before the column, and a skipped self-consistency, add nothing."""
    from detachment.checks_record import CONTACTS, SELF_CONSISTENCY, failed_checks

    qc = tmp_path / "phase_qc.csv"
    pd.DataFrame({"check": ["void_fraction", "blur_sigma_vox", "blur_z_factor"], "value": [0.4, 1.5, 1.3],
                  "bound": [0.001, 0.65, 1.2], "bound_type": ["min", "max", "max"],
                  "passed": [True, False, False], "requirement": ["", "", ""]}).to_csv(qc, index=False)
    level, old, consistency = tmp_path / "contact_level.csv", tmp_path / "old.csv", tmp_path / "sc.csv"
    pd.DataFrame({"level": [0.12], "fitted": [False], "ambiguous": [True]}).to_csv(level, index=False)
    pd.DataFrame({"level": [0.12], "fitted": [True]}).to_csv(old, index=False)
    pd.DataFrame({"shift": [0.03], "consistent": [False]}).to_csv(consistency, index=False)
    assert failed_checks(qc, level, [consistency]) == ["blur_sigma_vox", "blur_z_factor", CONTACTS, SELF_CONSISTENCY]
    assert failed_checks(qc, old) == ["blur_sigma_vox", "blur_z_factor"]
    pd.DataFrame({"shift": [0.001], "consistent": [True]}).to_csv(consistency, index=False)
    pd.DataFrame({"check": ["void_fraction"], "value": [0.4], "bound": [0.001], "bound_type": ["min"],
                  "passed": [True], "requirement": [""]}).to_csv(qc, index=False)
    pd.DataFrame({"level": [0.12], "fitted": [True], "ambiguous": [False]}).to_csv(level, index=False)
    assert failed_checks(qc, level, [consistency]) == []


def test_the_statistics_name_the_cells_that_went_on_past_a_failed_check():
    """Two samples of cell a (one failed two checks, the other none), one of b that failed one, c clean:
    ``checks_failed`` names each failing sample with its checks, "" for c; the note names a and b only."""
    from detachment.stats import by_cell, failed_cells_note, with_failed_checks

    particles = pd.DataFrame({"cell": ["a", "a", "b", "c"], "c_rate": ["1C", "1C", "C/10", "C/10"],
                              "detachment": [0.4, 0.5, 0.2, 0.1]})
    failed = {"a_top": ["blur_sigma_vox", "contacts"], "a_bottom": [], "b_1": ["self_consistency"], "c_1": []}
    cells = with_failed_checks(by_cell(particles), failed, {"a_top": "a", "a_bottom": "a", "b_1": "b", "c_1": "c"})
    assert cells.set_index("cell").checks_failed.to_dict() == {
        "a": "a_top: blur_sigma_vox, contacts", "b": "b_1: self_consistency", "c": ""}
    note = failed_cells_note(cells)
    assert note.startswith("2 of 3 cells went on although checks failed")
    assert "a (a_top: blur_sigma_vox, contacts); b (b_1: self_consistency)" in note and "c (" not in note
    assert failed_cells_note(cells[cells.cell == "c"]) == ""


def test_a_cells_undecided_share_is_the_mean_over_the_particles_it_summarises():
    """Written out: cell a's two particles with a detachment (the third has none, as ``by_cell`` leaves it
    out), cell b's one share (its NaN skipped), cell c none; a table without the column gives NaN."""
    from detachment.stats import by_cell, with_undecided_share

    particles = pd.DataFrame({"cell": ["a", "a", "a", "b", "b", "c"], "c_rate": ["1C"] * 3 + ["C/10"] * 3,
                              "detachment": [0.4, 0.5, np.nan, 0.2, 0.3, 0.1],
                              "detachment_ambiguous": [0.1, 0.3, 0.9, np.nan, 0.05, np.nan]})
    cells = with_undecided_share(by_cell(particles), particles)
    assert cells.set_index("cell").detachment_ambiguous_mean.to_dict() == pytest.approx(
        {"a": 0.2, "b": 0.05, "c": np.nan}, nan_ok=True)
    assert list(cells.n) == [2, 2, 1]
    bare = with_undecided_share(by_cell(particles), particles.drop(columns="detachment_ambiguous"))
    assert bare.detachment_ambiguous_mean.isna().all()


def test_each_particles_share_of_undecided_faces_against_the_mixture_written_out(tmp_path):
    """``detachment_ambiguous``: summed over the particles (share x counted faces) it is the number of
    background face neighbours whose gap probability under the fitted mixture, computed here from the two
    Gaussians with scipy, lies between 0.1 and 0.9, also for components too close for a level; without
    a fit it is NaN; passing the fit and its grey corrections to a reading on the map's codes changes no
    other column."""
    from dataclasses import replace

    import h5py
    from scipy.stats import norm

    from detachment.particles import contact_level_from_files
    from detachment.phases import PHASE_NAMES

    ph, links, labels = _tiny_linked_phantom(tmp_path)
    with h5py.File(tmp_path / "p.h5", "r+") as f:
        f["phases"].attrs["order"] = ",".join(PHASE_NAMES[c] for c in range(5))
        f["phases"].attrs["means"] = [ph.params.intensity[PHASE_NAMES[c]] for c in range(5)]
    files = (tmp_path / "particles.h5", tmp_path / "p.h5", tmp_path / "v.h5", links)
    kw = dict(progress=False, refine=False, partition="masks", sharpen=0.125, spill_sigma=0.5)
    fit, values, _ = contact_level_from_files(*files, on_map=True, **kw)
    assert fit.fitted
    gap = fit.gap_weight * norm.pdf(values, fit.gap_mean, fit.gap_sigma)
    post = gap / (gap + fit.cbd_weight * norm.pdf(values, fit.cbd_mean, fit.cbd_sigma))
    expected = int(np.sum((post > 0.1) & (post < 0.9)))
    t = _streamed(tmp_path, links, gap_from_intensity=False, sharpen=0.125, spill_sigma=0.5, ambiguity=fit)
    assert expected > 0 and np.sum(t.detachment_ambiguous * t.surface_faces) == pytest.approx(expected)
    assert t.detachment_ambiguous.between(0, 1).all()
    plain = _streamed(tmp_path, links, gap_from_intensity=False)
    assert plain.detachment_ambiguous.isna().all()
    others = [c for c in t.columns if c != "detachment_ambiguous"]
    pd.testing.assert_frame_equal(t[others], plain[others])
    # the same components, too close for a level: still read, with the same oracle, and more faces undecided
    close = replace(fit, fitted=False, cbd_mean=fit.gap_mean + 0.25 * (fit.cbd_mean - fit.gap_mean))
    assert close.separation < 2
    gap = close.gap_weight * norm.pdf(values, close.gap_mean, close.gap_sigma)
    post = gap / (gap + close.cbd_weight * norm.pdf(values, close.cbd_mean, close.cbd_sigma))
    t = _streamed(tmp_path, links, gap_from_intensity=False, sharpen=0.125, spill_sigma=0.5, ambiguity=close)
    assert np.sum(t.detachment_ambiguous * t.surface_faces) == pytest.approx(np.sum((post > 0.1) & (post < 0.9)))
    assert np.sum((post > 0.1) & (post < 0.9)) > expected


def test_the_volume_panel_draws_the_readings_bound_beside_the_face_counts_error():
    """Fig. 4's detachment-vs-volume panel: each particle's bar of ± ``detachment_std`` and, where the sample
    has a fitted mixture, a second bar of ± ``detachment_ambiguous`` (half-heights read back from the drawn
    segments); without the column, or with it all NaN, only the first."""
    import matplotlib

    matplotlib.use("Agg")
    from detachment.plots import fig4

    parts = pd.DataFrame({"c_rate": ["1C"] * 3 + ["C/10"] * 3, "detachment": [0.3, 0.4, 0.5, 0.1, 0.2, 0.3],
                          "detachment_std": [0.01, 0.02, 0.01, 0.01, 0.02, 0.03], "volume_um3": [10, 20, 40] * 2,
                          "detachment_ambiguous": [0.2, 0.3, 0.25, np.nan, np.nan, np.nan]})
    by_rate = pd.DataFrame({"c_rate": ["1C", "C/10"], "mean": [0.4, 0.2], "ci95_low": [0.3, 0.1],
                            "ci95_high": [0.5, 0.3]})
    size = pd.DataFrame({"diameter_low_um": [2.0], "diameter_high_um": [4.0], "mean": [0.3], "sem": [0.05],
                         "measurement_std_mean": [0.02]})

    def half_heights(ax):
        out = []
        for container in ax.containers:
            segs = container.lines[2][0].get_segments()
            out.append(sorted(round(float(s[1, 1] - s[0, 1]) / 2, 6) for s in segs))
        return out

    drawn = half_heights(fig4(parts, by_rate, size).axes[2])
    assert drawn == [[0.01, 0.01, 0.02], [0.2, 0.25, 0.3], [0.01, 0.02, 0.03]]
    assert half_heights(fig4(parts.drop(columns="detachment_ambiguous"), by_rate, size).axes[2]) == \
        [[0.01, 0.01, 0.02], [0.01, 0.02, 0.03]]


def test_a_voxel_the_map_makes_solid_beside_an_exact_mask_is_read_through_once_the_envelope_is_refined(tmp_path):
    """Where partial volume makes the map's particle a voxel wider than the planted one (here on its detached
    top), an exact mask read as it is counts that voxel, solid of no particle, as a contact with another
    particle; refined on the map, as the workflow refines every mask, the envelope takes it and the face
    reads the electrolyte beyond. Oracle: the face count on the map's own particle (brute force)."""
    from detachment import io
    from detachment.particles import particle_table_from_files
    from detachment.validation import links_from_labels

    shape = (26, 26, 26)
    b = ball(shape, (12, 12, 12), 7.0)
    z = np.indices(shape)[0]
    wider = b | (ndimage.binary_dilation(b) & (z > 16))  # the map's particle, one voxel wider on top
    phases = np.where(wider, NMC_LOW, CBD).astype(np.uint8)
    phases[~wider & (z > 15)] = VOID  # detached above z 15
    io.write_arrays(tmp_path / "l.h5", {"labels": b.astype(np.uint32)}, voxel_size_um=(1.0,) * 3)
    io.write_arrays(tmp_path / "p.h5", {"phases": phases})
    io.write_volume(tmp_path / "v.h5", np.zeros(shape, np.float32), 1.0, "t")
    links = links_from_labels(b.astype(np.uint32))
    kw = dict(progress=False, gap_from_intensity=False, partition="masks")
    raw = particle_table_from_files(tmp_path / "l.h5", tmp_path / "p.h5", tmp_path / "v.h5", links, refine=False, **kw)
    refined = particle_table_from_files(tmp_path / "l.h5", tmp_path / "p.h5", tmp_path / "v.h5", links, **kw)
    faces = surface_contacts(wider.astype(np.uint32), phases)  # the map's particle, counted face by face
    expected = faces.n_faces[1, 0] / faces.n_faces[1].sum()
    assert refined.detachment.iloc[0] == pytest.approx(expected, abs=1e-9)
    assert raw.contact_particle_um2.iloc[0] > 0 and raw.detachment.iloc[0] < expected - 0.05


def test_a_mask_five_voxels_short_of_a_detached_cap_reads_the_particles_own_faces(tmp_path):
    """A slice-wise mask that misses the top five slices of a particle (as CNN masks do on particles rescaled
    to the training size) leaves solid of no instance on the envelope, which would count as a contact with a
    particle where the particle is detached. The solid within the reach of the mask is shared out to it
    (:data:`detachment.solid_partition.REACH_VOX`) and the refined envelope grows from there, so the cap's
    solid is taken back. Oracle: the face count on the planted particle."""
    from detachment import io
    from detachment.particles import particle_table_from_files
    from detachment.validation import links_from_labels

    shape = (32, 32, 32)
    b = ball(shape, (15, 15, 15), 8.0)
    z = np.indices(shape)[0]
    phases = np.where(b, NMC_LOW, CBD).astype(np.uint8)
    phases[~b & (z > 17)] = VOID  # detached above z 17
    top = int(np.nonzero(b.any((1, 2)))[0].max())
    mask = b & (z <= top - 5)
    io.write_arrays(tmp_path / "l.h5", {"labels": mask.astype(np.uint32)}, voxel_size_um=(1.0,) * 3)
    io.write_arrays(tmp_path / "p.h5", {"phases": phases})
    io.write_volume(tmp_path / "v.h5", np.zeros(shape, np.float32), 1.0, "t")
    files = (tmp_path / "l.h5", tmp_path / "p.h5", tmp_path / "v.h5", links_from_labels(mask.astype(np.uint32)))
    kw = dict(progress=False, gap_from_intensity=False)
    raw = particle_table_from_files(*files, refine=False, **kw)
    refined = particle_table_from_files(*files, partition="watershed", **kw)
    faces = surface_contacts(b.astype(np.uint32), phases)
    expected = faces.n_faces[1, 0] / faces.n_faces[1].sum()
    assert refined.detachment.iloc[0] == pytest.approx(expected, abs=1e-9)
    assert refined.contact_particle_um2.iloc[0] == 0
    # read on the mask as it is, the cap's solid is a particle contact and most of the cap's faces are lost
    assert raw.contact_particle_um2.iloc[0] > 0 and raw.detachment.iloc[0] < expected - 0.1
