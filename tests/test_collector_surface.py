"""A tilted collector: the phantom's planted plane, the column heights and plane fit, and the thresholding
and particle heights that follow it."""

import numpy as np
import pandas as pd
import pytest

from detachment import collector_surface, io, phases, plausibility, plots
from detachment.collector_surface import CollectorPlane, column_heights, fit_plane, top_rows
from detachment.phantom import PhantomParams, collector_top_surface, generate_phantom


def _tilted(deg=2.0, az=30.0, thickness=8, shape=(48, 96, 96), **kw) -> PhantomParams:
    return PhantomParams(shape_zyx=shape, collector_thickness_vox=thickness, collector_tilt_deg=deg,
                         collector_tilt_azimuth_deg=az, n_particles=14, **kw)


def test_column_heights_equal_a_loop_over_each_column():
    rng = np.random.default_rng(0)
    vol = rng.choice(np.array([0.1, 0.5, 0.9], np.float32), size=(12, 7, 9), p=[0.1, 0.8, 0.1])
    vol[:3, 2, 2] = 0.5
    vol[:, 4, 4] = 0.5  # a column Al all the way up
    expected = np.zeros((7, 9), int)
    for y in range(7):
        for x in range(9):
            z = 0
            while z < 12 and 0.3 <= vol[z, y, x] < 0.7:
                z += 1
            expected[y, x] = z
    slabs = (vol[z0:z0 + 5] for z0 in range(0, 12, 5))
    np.testing.assert_array_equal(column_heights(slabs, (0.3, 0.7)), expected)


def test_the_plane_fit_recovers_a_planted_plane_through_noise_and_outlying_columns():
    rng = np.random.default_rng(1)
    ny, nx = 80, 120
    y, x = np.mgrid[:ny, :nx]
    true = 6.3 + 0.031 * y - 0.017 * x
    heights = np.rint(true + rng.normal(0, 0.3, true.shape)).astype(int)
    heights[rng.random(true.shape) < 0.05] = 1  # runs ended early by a noisy voxel
    heights[20:30, 40:60] += 6  # a particle's blurred edge lengthening some runs
    plane = fit_plane(heights)
    assert plane.b == pytest.approx(0.031, abs=0.002) and plane.c == pytest.approx(-0.017, abs=0.002)
    assert plane.a == pytest.approx(6.3, abs=0.3)
    assert plane.tilted and plane.rise_vox == pytest.approx(0.031 * 79 + 0.017 * 119, rel=0.1)
    assert plane.tilt_deg == pytest.approx(np.degrees(np.arctan(np.hypot(0.031, 0.017))), rel=0.1)
    flat = fit_plane(np.full((ny, nx), 4))
    assert not flat.tilted and flat.a == pytest.approx(4)
    np.testing.assert_array_equal(top_rows(plane, 2), np.floor(plane.heights() + 0.5).astype(int) + 2)
    assert fit_plane(np.zeros((5, 5), int)) is None


def test_the_phantom_puts_al_below_its_planted_plane_and_the_particles_above_it():
    p = _tilted()
    ph = generate_phantom(p, seed=5)
    surface = collector_top_surface(p)
    zz = np.arange(p.shape_zyx[0])[:, None, None]
    np.testing.assert_array_equal(ph.phases == phases.AL, zz < surface[None])
    assert not (ph.labels[zz.repeat(96, 1).repeat(96, 2) < surface[None]] > 0).any()
    # the rise: tan 2° across the diagonal of the azimuth
    rise = surface.max() - surface.min()
    assert rise == pytest.approx(np.tan(np.radians(2)) * 95 * (np.cos(np.radians(30)) + np.sin(np.radians(30))),
                                 rel=1e-6)
    # distance to the collector: the lowest voxel over the first non-Al voxel of its column, by brute force
    first_free = (ph.phases != phases.AL).argmax(axis=0)
    for row in ph.table.itertuples():
        z, y, x = np.nonzero(ph.labels == row.label)
        assert row.distance_to_collector_um == pytest.approx(np.min(z - first_free[y, x]) * p.voxel_size_um)
    assert (ph.table.distance_to_collector_um >= 0).all()


def test_a_tilt_too_steep_for_the_collector_is_refused_naming_the_field():
    with pytest.raises(ValueError, match="collector_tilt_deg"):
        _tilted(deg=6.0, thickness=4).validate()
    with pytest.raises(ValueError, match="collector_tilt_deg"):
        PhantomParams(collector_tilt_deg=12.0).validate()


@pytest.fixture(scope="module")
def tilted_cell(tmp_path_factory):
    """A 4° tilted phantom (seed 7; 4.5 voxels rise across 96 columns) thresholded with the plane, and with the
    flat slab alone."""
    from detachment.threshold import ThresholdSettings, threshold_volume

    d = tmp_path_factory.mktemp("tilted")
    p = _tilted(deg=4.0)
    ph = generate_phantom(p, seed=7)
    io.write_volume(d / "v.h5", ph.volume, p.voxel_size_um, "tilted")
    res = threshold_volume(d / "v.h5", d / "p.h5", ThresholdSettings(), progress=False)
    mp = pytest.MonkeyPatch()
    mp.setattr(collector_surface, "MIN_RISE_VOX", np.inf)  # never tilted: the flat slab's confinement
    flat = threshold_volume(d / "v.h5", d / "flat.h5", ThresholdSettings(), progress=False)
    mp.undo()
    return p, ph, res, io.read_dataset(d / "p.h5", "phases"), flat, io.read_dataset(d / "flat.h5", "phases"), d


def test_thresholding_keeps_a_tilted_collector_whole_where_a_flat_slab_cuts_it(tilted_cell):
    p, ph, res, m, flat, mflat, _ = tilted_cell
    al = ph.phases == phases.AL
    recall, recall_flat = (m[al] == phases.AL).mean(), (mflat[al] == phases.AL).mean()
    assert recall > 0.995 and ((m == phases.AL) & ~al).sum() < 0.01 * al.sum()
    assert recall_flat < recall - 0.02  # the flat slab gives the high side's top to CBD and NMC
    gy, gx = np.tan(np.radians(4)) * np.cos(np.radians(30)), np.tan(np.radians(4)) * np.sin(np.radians(30))
    plane = res.collector_plane
    assert plane.tilted and plane.b == pytest.approx(gy, abs=0.003) and plane.c == pytest.approx(gx, abs=0.003)
    assert res.collector_tilt_deg == pytest.approx(4.0, abs=0.2)
    assert flat.collector_tilt_deg is None and flat.tilted_collector_top is None
    # the map records the plane; the checks count the Al above the mostly-Al slices as the collector's
    with io.h5py.File(tilted_cell[-1] / "p.h5") as f:
        attrs = dict(f["phases"].attrs)
    np.testing.assert_allclose(attrs["collector_plane"], [plane.a, plane.b, plane.c])
    assert bool(attrs["collector_tilted"])
    checks = plausibility.check_phase_map(plausibility.PhaseCounts(res.counts_per_slice), res.fwhm,
                                          res.blur_sigma_vox, res.tilted_collector_top).set_index("check")
    assert checks.loc["al_in_collector_slab", "value"] > 0.99
    flat_run = plausibility.check_phase_map(plausibility.PhaseCounts(res.counts_per_slice)).set_index("check")
    assert flat_run.loc["al_in_collector_slab", "value"] < checks.loc["al_in_collector_slab", "value"]
    assert "collector tilted 4.0°" in plots.phase_title("s", 0, "informed", collector_tilt_deg=res.collector_tilt_deg)


def test_an_untilted_collector_keeps_the_flat_slab():
    from detachment.threshold import collector_top

    ph = generate_phantom(PhantomParams(shape_zyx=(40, 96, 96), n_particles=14), seed=7)
    heights = column_heights([ph.volume], (0.4, 0.62))
    plane = fit_plane(heights)
    assert not plane.tilted and plane.rise_vox < 0.2
    model = phases.PhaseModel(("void", "cbd", "al", "nmc_low"), np.array([0.15, 0.4, 0.62]),
                              np.array([0.0, 0.3, 0.5, 0.75]), np.full(4, 0.02), np.full(4, 0.25), "informed")
    from detachment.phase_fit import EDGE_SLICES, CollectorSlab

    slab = CollectorSlab(4, 0.5, 0.02)
    assert collector_top(model, slab, plane) == 4 + EDGE_SLICES
    tilted = CollectorPlane(4.0, 0.03, 0.0, (96, 96), 100, 0.1, True)
    assert collector_top(model, slab, tilted).shape == (96, 96)


def test_particle_heights_are_read_from_the_plane_under_them():
    from detachment.particles import _in_volume_frame

    plane = CollectorPlane(5.0, 0.05, -0.02, (60, 60), 100, 0.1, True)
    env = np.zeros((10, 12, 12), bool)
    env[3:8, 2:9, 4:10] = True
    env[2, 5, 5] = True
    lo, vs = (10, 20, 30), np.array([0.5, 0.5, 0.5])
    t = pd.DataFrame({"centroid_z_um": [2.0], "centroid_y_um": [3.0], "centroid_x_um": [4.0]})
    row = pd.Series({"label": 3, "z_min": 13}).to_frame().T.iloc[0]  # the linked masks' lowest slice
    out = _in_volume_frame(t.copy(), row, lo, vs, plane, env)
    z, y, x = np.nonzero(env)
    lowest = min(zz + 10 - np.floor(5.0 + 0.05 * (yy + 20) - 0.02 * (xx + 30) + 0.5) for zz, yy, xx in zip(z, y, x))
    assert out.distance_to_collector_um.iloc[0] == pytest.approx(lowest * 0.5)
    cy, cx = (3.0 + 20 * 0.5) / 0.5, (4.0 + 30 * 0.5) / 0.5
    assert out.height_um.iloc[0] == pytest.approx(2.0 + 10 * 0.5 - (5.0 + 0.05 * cy - 0.02 * cx) * 0.5)
    flat = _in_volume_frame(t.copy(), row, lo, vs, 4, env)
    assert flat.distance_to_collector_um.iloc[0] == pytest.approx((2 + 10 - 4) * 0.5)  # the envelope's lowest voxel
    assert flat.height_um.iloc[0] == pytest.approx(2.0 + 10 * 0.5 - 4 * 0.5)


@pytest.mark.parametrize("side", ["x1", "y0"])
def test_a_tilted_collector_on_a_side_face_is_found_by_auto_and_fitted_as_a_plane(tmp_path, tilted_cell, side):
    """The tilted phantom stored with its collector on another face: the import finds the face and turns
    the volume back, and the thresholding reads the same tilt and keeps the Al (the file layouts as in
    tests/test_orientation.py, written with numpy's own axis moves)."""
    from detachment.threshold import ThresholdSettings, threshold_volume

    p, ph, res, m, *_ = tilted_cell
    as_file = {"x1": lambda v: np.moveaxis(v[::-1], 0, 2), "y0": lambda v: np.swapaxes(v, 0, 1)}[side]
    with io.h5py.File(tmp_path / "in.h5", "w") as f:
        f["d"] = as_file(ph.volume)
    io.import_volume(tmp_path / "in.h5", tmp_path / "v.h5", dataset="d", voxel_size_um=0.5, slab=8,
                     collector_side="auto")
    with io.h5py.File(tmp_path / "v.h5") as f:
        assert f["volume"].attrs["collector_side"] == side
    turned = threshold_volume(tmp_path / "v.h5", tmp_path / "p.h5", ThresholdSettings(), progress=False)
    assert turned.collector_tilt_deg == pytest.approx(res.collector_tilt_deg, abs=0.05)
    al = ph.phases == phases.AL
    back = io.read_dataset(tmp_path / "p.h5", "phases")
    assert back.shape == ph.phases.shape and (back[al] == phases.AL).mean() > 0.995


def test_the_phase_figure_shows_a_section_with_the_collector_top(tilted_cell):
    """The section panel after the phase map: the row's codes with z up from the collector, and the fitted top
    along it (the plane's heights times the voxel size); the panels after it move one letter on."""
    from detachment.blur import EdgeProfiles

    p, ph, res, m, flat, mflat, _ = tilted_cell
    y, nx = 40, m.shape[2]
    heights = res.collector_heights(y, nx)
    np.testing.assert_allclose(heights, res.collector_plane.height(y, np.arange(nx)))
    np.testing.assert_array_equal(flat.collector_heights(y, nx), np.full(nx, float(flat.collector.thickness)))
    section = plots.SideSection(m[:, y], y, heights, (0.5, 0.25, 0.5))
    edges = EdgeProfiles()
    edges.add(m, ph.volume)
    args = (ph.volume[20], m[20], res.histogram.counts, res.histogram.edges, res.model.thresholds, res.model.names)
    fig = plots.phase_figure(*args, edges=edges, section=section)
    ax = fig.axes[3]
    assert ax.get_title() == f"(d) section at y = {y * 0.25:.1f} µm" and fig.axes[4].get_title().startswith("(e)")
    np.testing.assert_array_equal(ax.images[0].get_array(), m[:, y])
    assert ax.images[0].origin == "lower" and list(ax.images[0].get_extent()) == [0, nx * 0.5, 0, m.shape[0] * 0.5]
    np.testing.assert_allclose(ax.lines[0].get_ydata(), heights * 0.5)
    assert len(plots.phase_figure(*args, section=plots.SideSection(m[:, y], y, None, (0.5, 0.5, 0.5))).axes[3].lines) == 0
