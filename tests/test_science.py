"""Per-particle measures, diffusion lengths, damage profile and statistics against analytic cases."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

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
    assert area == pytest.approx(4 * np.pi * 10.0**2, rel=0.05)
    assert surface_area_mc(ball((20, 20, 20), (10, 10, 10), 6.0), (1, 1, 1)) == pytest.approx(4 * np.pi * 36, rel=0.05)
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


def test_geodesic_distance_along_a_bar_is_exact_with_anisotropic_spacing():
    solid = np.zeros((1, 1, 12), bool)
    solid[..., 1:11] = True
    src = np.zeros_like(solid)
    src[0, 0, 1] = True
    d = geodesic_distance(solid, src, (1.0, 1.0, 0.3))
    np.testing.assert_allclose(d[0, 0, 1:11], 0.3 * np.arange(10))
    assert np.isnan(d[0, 0, 0])


def test_crack_wall_forces_a_detour_and_isolates_what_it_closes():
    solid = np.ones((1, 11, 11), bool)
    solid[0, 5, :9] = False  # wall with an opening at x = 9, 10
    src = np.zeros_like(solid)
    src[0, 0, 0] = True
    d = geodesic_distance(solid, src)
    straight = 10.0
    assert d[0, 10, 0] > straight + 4  # around the wall end
    closed = solid.copy()
    closed[0, 5, :] = False
    d2 = geodesic_distance(closed, src)
    assert np.isinf(d2[0, 10, 0])


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
    path = descent_path(field[1], (9, 9))
    assert field[1][tuple(path[-1])] == 0.0
    assert all(field[1][tuple(a)] > field[1][tuple(b)] for a, b in zip(path, path[1:]))


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


def test_small_particles_carry_more_measurement_uncertainty():
    rng = np.random.default_rng(1)
    d = rng.uniform(3, 15, 200)
    faces = 6 * d**2
    det = rng.beta(3, 5, 200)
    df = pd.DataFrame({"diameter_um": d, "detachment": det, "detachment_std": np.sqrt(det * (1 - det) / faces)})
    t = by_size(df, 4)
    assert t.n.sum() == 200
    assert t.measurement_std_mean.is_monotonic_decreasing


def test_streamed_particle_table_equals_whole_volume_table(tmp_path):
    from detachment import io
    from detachment.linking import LinkSettings, link_file
    from detachment.particles import particle_table_from_files
    from detachment.phantom import PhantomParams, generate_phantom

    from .conftest import TINY_PHANTOM

    ph = generate_phantom(PhantomParams(**TINY_PHANTOM), seed=4)
    io.write_volume(tmp_path / "v.h5", ph.volume, 0.5, "t")
    io.write_arrays(tmp_path / "s.h5", {"labels": ph.labels}, voxel_size_um=(0.5,) * 3)
    io.write_arrays(tmp_path / "p.h5", {"phases": ph.phases})
    links = link_file(tmp_path / "s.h5", tmp_path / "particles.h5", LinkSettings(min_voxels=1))
    labels = io.read_dataset(tmp_path / "particles.h5", "labels")
    whole = particle_table(labels, ph.phases, ph.volume, (0.5,) * 3, dict(zip(links.label, links.touches_border)))
    streamed = particle_table_from_files(tmp_path / "particles.h5", tmp_path / "p.h5", tmp_path / "v.h5", links,
                                         progress=False, refine=False)
    pd.testing.assert_frame_equal(whole.reset_index(drop=True), streamed[whole.columns].reset_index(drop=True),
                                  check_dtype=False, rtol=1e-6)


def test_refined_envelope_snaps_a_shifted_mask_to_the_solid_and_fills_cracks():
    from detachment.particles import refine_envelope

    b = ball((24, 24, 24), (12, 12, 12), 7.0)
    phases = np.where(b, NMC_LOW, CBD).astype(np.uint8)
    phases[12, 6:18, 12] = VOID  # a crack, inside the envelope
    phases[b & (np.indices(b.shape)[0] > 16)] = NMC_HIGH
    mask = np.roll(b, 1, axis=2)  # a segmentation one voxel off
    env = refine_envelope(mask, np.zeros_like(b), phases)
    np.testing.assert_array_equal(env, b)
