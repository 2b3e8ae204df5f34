"""The co-registered second map (Supp. Fig. 7): the phantom's planted Ni valence map, the import of a user's
map, the per-particle table and the density/second-map correlation, and the workflow without a map."""

from __future__ import annotations

import h5py
import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import ndimage, stats

from detachment import io, plots
from detachment.phantom import VALENCE_RANGE, PhantomParams, generate_phantom, noise_free_density, valence_map
from detachment.phases import NMC_HIGH, NMC_LOW
from detachment.second_map import (
    SECOND_MAP_DATASET,
    correlations,
    import_second_map,
    particle_map_table,
    write_second_map,
)
from detachment.stats import cluster_bootstrap_pooled_ci, pearson_bootstrap_ci, pooled_pearson
from detachment.threshold import ThresholdSettings, threshold_volume

from .conftest import TINY_PHANTOM, run_snakemake, write_tiny_workdir

# planted r is exact on the truth's solid (orthogonalised noise) up to clipping to 2..4 and float32 storage
EXACT = 2e-3
# through thresholded phases (blurred edges lost) the voxel-level r moves by < 0.01 on the default cells
# (0.532 / 0.533 for 0.54); the tiny phantom has fewer, smaller particles: stated tolerances 0.03 and 0.1
VOXEL_TOL = 0.03
PARTICLE_TOL = 0.10


def _tiny(r, seed=7, **kw):
    p = PhantomParams(**{**TINY_PHANTOM, "n_particles": 12, **kw}, valence_density_correlation=r)
    ph = generate_phantom(p, seed)
    return ph, p, valence_map(noise_free_density(ph.phases, p), ph.labels, ph.phases, p, seed)


def _attenuation(ph, p) -> float:
    """Pearson r between the noise-free density and the rendered grey level over the truth's solid: what
    the grey level's noise leaves of a correlation planted against the density."""
    solid = (ph.labels > 0) & np.isin(ph.phases, [NMC_LOW, NMC_HIGH])
    return float(np.corrcoef(noise_free_density(ph.phases, p)[solid], ph.volume[solid])[0, 1])


def _links(labels) -> pd.DataFrame:
    """links.csv-style bounding boxes (z_max inclusive, y_max / x_max exclusive) of a 3D label volume."""
    rows = []
    for lab, sl in enumerate(ndimage.find_objects(labels), 1):
        if sl is not None:
            rows.append({"label": lab, "z_min": sl[0].start, "z_max": sl[0].stop - 1, "y_min": sl[1].start,
                         "y_max": sl[1].stop, "x_min": sl[2].start, "x_max": sl[2].stop, "touches_border": False})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("r", [0.54, -0.6])
def test_planted_valence_correlation_is_exact_on_the_truth_over_voxels_and_particles(r):
    ph, p, v = _tiny(r)
    solid = (ph.labels > 0) & np.isin(ph.phases, [NMC_LOW, NMC_HIGH])
    # NaN exactly where there is no NMC solid; valence in the physical range, mean and spread as set
    np.testing.assert_array_equal(np.isfinite(v), solid)
    assert v.dtype == np.float32 and v.shape == ph.volume.shape
    assert VALENCE_RANGE[0] <= np.nanmin(v) and np.nanmax(v) <= VALENCE_RANGE[1]
    assert np.nanmean(v) == pytest.approx(p.valence_mean, abs=0.01)
    assert np.nanstd(v) == pytest.approx(p.valence_std, rel=0.02)
    # voxel level: numpy and scipy on the same arrays, against the noise-free density it is planted on
    density = noise_free_density(ph.phases, p)
    assert np.corrcoef(v[solid], density[solid])[0, 1] == pytest.approx(r, abs=EXACT)
    assert stats.pearsonr(v[solid], density[solid]).statistic == pytest.approx(r, abs=EXACT)
    # against the measured grey level: attenuated by its noise, never exact
    found = np.corrcoef(v[solid], ph.volume[solid])[0, 1]
    assert abs(found) < abs(r) - 0.01
    # particle level: per-particle means over the solid
    lab = np.where(solid, ph.labels, 0)
    idx = np.unique(lab[lab > 0])
    assert len(idx) >= 8
    mv, mg = ndimage.mean(v, lab, idx), ndimage.mean(density, lab, idx)
    assert stats.pearsonr(mv, mg).statistic == pytest.approx(r, abs=EXACT)


def test_valence_map_is_deterministic_optional_and_leaves_the_phantom_unchanged():
    ph, p, a = _tiny(0.54, seed=3)
    _, _, b = _tiny(0.54, seed=3)
    _, _, c = _tiny(0.54, seed=4)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(np.nan_to_num(a), np.nan_to_num(c))
    off = PhantomParams(**{**TINY_PHANTOM, "n_particles": 12})
    assert off.valence_density_correlation is None  # the library default: no map
    assert valence_map(ph.volume, ph.labels, ph.phases, off, 3) is None
    # the map has its own random stream: switching it on does not change the phantom
    np.testing.assert_array_equal(generate_phantom(off, 3).volume, ph.volume)
    for bad in (1.5, True, "0.5"):
        with pytest.raises(ValueError, match="valence_density_correlation"):
            PhantomParams.from_dict({"valence_density_correlation": bad})


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory):
    """A tiny phantom with its valence map, thresholded like the workflow does, on disk."""
    d = tmp_path_factory.mktemp("second_map")
    ph, p, v = _tiny(0.54, seed=11)
    vs = (p.voxel_size_um,) * 3
    io.write_volume(d / "volume.h5", ph.volume, vs, "test")
    io.write_arrays(d / "labels.h5", {"labels": ph.labels}, voxel_size_um=vs)
    write_second_map(d / "second_map.h5", v, vs, "test", "Ni valence", slab=5)
    threshold_volume(d / "volume.h5", d / "phases.h5", ThresholdSettings(), progress=False)
    return d, ph, v


def test_streamed_particle_table_equals_numpy_on_the_same_voxels(tiny_files):
    d, ph, v = tiny_files
    with h5py.File(d / "second_map.h5") as f:
        ds = f[SECOND_MAP_DATASET]
        assert ds.dtype == np.float32 and ds.chunks[0] == 1 and ds.attrs["quantity"] == "Ni valence"
        np.testing.assert_array_equal(ds[...], v)
    phases = io.read_dataset(d / "phases.h5", "phases")
    t = particle_map_table(d / "labels.h5", d / "phases.h5", d / "volume.h5", d / "second_map.h5",
                           _links(ph.labels), refine=False)
    use = (ph.labels > 0) & np.isin(phases, [NMC_LOW, NMC_HIGH]) & np.isfinite(v)
    lab = np.where(use, ph.labels, 0)
    np.testing.assert_array_equal(t.second_map_voxels, ndimage.sum_labels(use, lab, t.label))
    np.testing.assert_allclose(t.second_map_mean, ndimage.mean(v, lab, t.label), rtol=1e-5)
    np.testing.assert_allclose(t.electron_density_mean, ndimage.mean(ph.volume, lab, t.label), rtol=1e-5)
    # the pooled voxel-level r from the per-particle moments equals scipy on the voxels themselves
    pooled = pooled_pearson(t.second_map_voxels, t.electron_density_mean, t.second_map_mean,
                            t.electron_density_std, t.second_map_std, t.density_map_covariance)
    assert pooled == pytest.approx(stats.pearsonr(ph.volume[use], v[use]).statistic, abs=1e-6)


@pytest.mark.parametrize("refine", [False, True])
def test_recovered_correlation_matches_the_planted_one(tiny_files, refine):
    d, ph, _ = tiny_files
    t = particle_map_table(d / "labels.h5", d / "phases.h5", d / "volume.h5", d / "second_map.h5",
                           _links(ph.labels), refine=refine)
    found = {row["level"]: row for row in correlations(t, exclude_border=False, n_boot=500, seed=1)}
    # planted on the noise-free density: the grey level's noise attenuates r by a factor known from the truth
    expected = 0.54 * _attenuation(ph, ph.params)
    assert expected < 0.53
    assert found["voxel"]["pearson_r"] == pytest.approx(expected, abs=VOXEL_TOL)
    assert found["particle"]["pearson_r"] == pytest.approx(0.54, abs=PARTICLE_TOL)
    assert found["particle"]["n"] == ph.labels.max()
    for row in found.values():
        assert row["ci95_low"] < row["pearson_r"] < row["ci95_high"]
    assert found["particle"]["p_value"] == pytest.approx(
        stats.pearsonr(t.electron_density_mean, t.second_map_mean).pvalue, rel=1e-9)
    assert np.isnan(found["voxel"]["p_value"])


def test_bootstrap_intervals_of_r_cover_the_estimate_and_narrow_with_n():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(400)
    y = 0.5 * x + np.sqrt(0.75) * rng.standard_normal(400)
    r = stats.pearsonr(x, y).statistic
    lo, hi = pearson_bootstrap_ci(x, y, seed=0)
    lo2, hi2 = pearson_bootstrap_ci(x[:40], y[:40], seed=0)
    assert lo < r < hi and hi - lo < hi2 - lo2
    assert 0.1 < hi - lo < 0.25  # ~ 2 x 1.96 (1 - r^2) / sqrt(n)
    # groups of 20: pooled r from moments, CI by resampling groups
    g = np.repeat(np.arange(20), 20)
    mom = [np.bincount(g), *(ndimage.mean(a, g, np.arange(20)) for a in (x, y)),
           *(ndimage.standard_deviation(a, g, np.arange(20)) for a in (x, y)),
           ndimage.mean((x - ndimage.mean(x, g, np.arange(20))[g]) * (y - ndimage.mean(y, g, np.arange(20))[g]),
                        g, np.arange(20))]
    assert pooled_pearson(*mom) == pytest.approx(r, abs=1e-9)
    clo, chi = cluster_bootstrap_pooled_ci(*mom, seed=0)
    assert clo < r < chi


def test_no_particles_gives_nan_rows_and_a_figure_without_crashing(tiny_files):
    d, _, _ = tiny_files
    t = particle_map_table(d / "labels.h5", d / "phases.h5", d / "volume.h5", d / "second_map.h5",
                           _links(np.zeros((2, 16, 16), np.uint32)))
    assert t.empty
    rows = correlations(t)
    assert [r["level"] for r in rows] == ["particle", "voxel"] and all(np.isnan(r["pearson_r"]) for r in rows)
    fig = plots.second_map_figure([{"sample": "s", "z": 0, "density": np.zeros((16, 16)),
                                    "second_map": np.full((16, 16), np.nan), "voxel_size_um": 0.5,
                                    "quantity": "q", "particles": t, "rows": {r["level"]: r for r in rows}}])
    assert len(fig.axes) >= 3


def _user_files(tmp_path, map_shape=(12, 20, 24), volume_shape=(12, 20, 24)):
    rng = np.random.default_rng(0)
    io.write_volume(tmp_path / "volume.h5", rng.random(volume_shape), 0.25, "test")
    values = rng.random(map_shape).astype(np.float32)
    values[0, 0, :5] = np.nan
    with h5py.File(tmp_path / "xanes.h5", "w") as f:
        f["/exchange/valence"] = values
    return tmp_path / "xanes.h5", values


def test_user_map_is_imported_with_nan_kept(tmp_path):
    src, values = _user_files(tmp_path)
    shape = import_second_map(src, tmp_path / "out.h5", dataset="/exchange/valence", volume_path=tmp_path / "volume.h5",
                              slab=5)
    assert shape == values.shape
    with h5py.File(tmp_path / "out.h5") as f:
        d = f[SECOND_MAP_DATASET]
        np.testing.assert_array_equal(d[...], values)
        np.testing.assert_allclose(d.attrs["voxel_size_um"], [0.25] * 3)
        assert d.attrs["source"] == f"{src}:/exchange/valence"


def test_bad_input_second_map_of_another_shape_is_refused_naming_the_file_and_field(tmp_path):
    src, _ = _user_files(tmp_path, map_shape=(12, 20, 23))
    where = "samples.tsv: sample 'cellA', field 'second_map'"
    with pytest.raises(io.InputError) as e:
        import_second_map(src, tmp_path / "out.h5", dataset="/exchange/valence", volume_path=tmp_path / "volume.h5",
                          where=where)
    msg = str(e.value)
    assert str(src) in msg and where in msg and "(12, 20, 23)" in msg and "(12, 20, 24)" in msg
    assert not (tmp_path / "out.h5").exists()


@pytest.mark.parametrize("case", ["no_dataset_field", "wrong_dataset", "missing_file", "inf", "all_nan"])
def test_bad_input_second_map_refused(tmp_path, case):
    src, values = _user_files(tmp_path)
    dataset = "/exchange/valence"
    expect = str(src)
    if case == "no_dataset_field":
        dataset, expect = None, "field 'second_map_dataset' is required"
    elif case == "wrong_dataset":
        dataset, expect = "/valence", "has no dataset '/valence'"
    elif case == "missing_file":
        src = tmp_path / "nope.h5"
        expect = f"{src}: second map file does not exist"
    else:
        values[3, 4, 5] = np.inf if case == "inf" else values[3, 4, 5]
        if case == "all_nan":
            values[:] = np.nan
        with h5py.File(src, "w") as f:
            f[dataset] = values
        expect = "(z=3, y=4, x=5) is inf" if case == "inf" else "has no finite value"
    with pytest.raises(io.InputError, match="field 'second_map") as e:
        import_second_map(src, tmp_path / "out.h5", dataset=dataset, volume_path=tmp_path / "volume.h5")
    assert expect in str(e.value)
    assert not (tmp_path / "out.h5").exists()


def _dry_run(work) -> str:
    r = run_snakemake(work, "-n")
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout + r.stderr


def test_the_dag_has_the_second_map_steps_only_when_a_map_exists(tmp_path):
    work = write_tiny_workdir(tmp_path / "on")
    out = _dry_run(work)
    for rule in ("phantom_second_map", "second_map_particles", "second_map_correlation"):
        assert f"rule {rule}:" in out, rule
    assert "results/statistics/fig7_second_map.png" in out
    # no second map: no step, no target, no error
    work = write_tiny_workdir(tmp_path / "off")
    cfg = yaml.safe_load((work / "config.yaml").read_text())
    cfg["phantom"]["defaults"]["valence_density_correlation"] = None
    (work / "config.yaml").write_text(yaml.safe_dump(cfg))
    out = _dry_run(work)
    assert "second_map" not in out and "fig7" not in out
    assert "rule make_phantom:" in out


def test_bad_input_second_map_column_on_a_phantom_row(tmp_path):
    work = write_tiny_workdir(tmp_path / "bad")
    (work / "samples.tsv").write_text("sample\tcell\tc_rate\tvolume\tsecond_map\na\tc\t1C\tphantom\tmap.h5\n")
    r = run_snakemake(work, "-n")
    assert r.returncode != 0
    assert "sample 'a', field 'second_map' is set for a phantom" in r.stdout + r.stderr
