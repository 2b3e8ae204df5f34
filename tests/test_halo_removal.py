"""Edge halos fitted and taken out: the inverse against scipy's unsharp mask, the fit against planted halos, the
view against the whole volume, and the thresholding of phantoms with and without a halo."""

import h5py
import numpy as np
import pytest
from scipy import ndimage

from detachment import edge_halo, halo_removal, io, shading
from detachment.phantom import PhantomParams, generate_phantom
from detachment.phases import CBD, NMC_LOW, VOID
from detachment.threshold import ThresholdSettings

LEVELS = np.array([0.0, 0.3, 0.77, 1.0, 0.5], np.float32)


def _balls(seed: int = 0, shape=(40, 96, 96)) -> np.ndarray:
    """Phase codes: an Al slab, NMC balls, a CBD shell beside most of their surface, electrolyte."""
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.indices(shape)
    codes = np.zeros(shape, np.uint8)
    codes[:4] = 4
    for _ in range(25):
        c, r = rng.uniform([8, 0, 0], shape), rng.uniform(4, 9)
        codes[(zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 < r * r] = NMC_LOW
    shell = ndimage.binary_dilation(codes == NMC_LOW, iterations=2) & (codes == VOID)
    codes[shell & (rng.random(shape) < 0.9)] = CBD
    return codes


def _unsharp(u: np.ndarray, a: float, h: float) -> np.ndarray:
    return u + a * (u - ndimage.gaussian_filter(u, h, mode="nearest"))


@pytest.mark.parametrize("a, h", [(0.25, 3.0), (0.5, 2.0), (1.0, 1.5)])
def test_the_inverse_undoes_scipys_unsharp_mask(a, h):
    u = ndimage.gaussian_filter(LEVELS[_balls()], 0.6, mode="nearest")
    back = halo_removal.remove(_unsharp(u, a, h), a, h)
    assert back.dtype == np.float32 and back.shape == u.shape
    assert np.abs(back - u).max() < 0.03  # at the borders, FFT padding against scipy's repeated borders
    assert np.abs(back - u)[6:-6, 6:-6, 6:-6].max() < 1e-3


def test_the_inverse_never_amplifies_noise():
    noise = np.random.default_rng(1).standard_normal((32, 64, 64)).astype(np.float32)
    for a in (0.2, 1.0, 2.0):
        out = halo_removal.remove(noise, a, 2.0)
        assert out.std() < noise.std()
        assert out.std() > noise.std() / (1 + a) * 0.99  # white noise is mostly high frequencies
    assert np.array_equal(halo_removal.remove(noise, 0.0, 2.0), noise)


def _lag1(x: np.ndarray) -> float:
    """Mean correlation of neighbours along the three axes."""
    x = x - x.mean()
    return float(np.mean([np.mean(np.take(x, range(1, n), a) * np.take(x, range(n - 1), a)) / x.var()
                          for a, n in enumerate(x.shape)]))


@pytest.mark.parametrize("a, h", [(0.3, 1.5), (0.6, 2.9), (1.0, 2.0)])
def test_the_noise_the_inverse_damps_is_given_back_white(a, h):
    """Detector noise enters after the halo. Taken out by the exact inverse, the noise is damped (by up to
    1 / (1 + a) per voxel); given back, it has the spread and (no) correlation of white noise as imaged,
    while the object comes back as it was (the oracle: the object and the white noise drawn before the
    halo)."""
    rng = np.random.default_rng(11)
    u = ndimage.gaussian_filter(LEVELS[_balls()], 0.5, mode="nearest")
    sd = 0.04
    noise = rng.normal(0, sd, u.shape).astype(np.float32)
    imaged = _unsharp(u, a, h) + noise
    exact = halo_removal.remove(imaged, a, h) - u
    m = halo_removal.margin_vox(a, h)
    region = [(-m, n + m) for n in u.shape]
    matched = halo_removal.remove(imaged, a, h, noise=sd * halo_removal.white_noise(region)) - u
    inner = np.s_[8:-8, 8:-8, 8:-8]
    assert exact[inner].std() < 0.9 * sd and exact[inner].std() > 0.99 * sd / (1 + a)
    assert matched[inner].std() == pytest.approx(sd, rel=0.05) and abs(_lag1(matched[inner])) < 0.03
    # the object is back: what is left is noise, uncorrelated with it
    assert abs(np.corrcoef(matched[inner].ravel(), u[inner].ravel())[0, 1]) < 0.02


def test_the_noise_given_back_is_the_same_whatever_block_reads_a_voxel():
    whole = halo_removal.white_noise([(-5, 40), (-3, 150), (0, 70)])
    assert whole.dtype == np.float32 and abs(whole.std() - 1) < 0.01 and abs(whole.mean()) < 0.01
    part = halo_removal.white_noise([(10, 12), (60, 130), (33, 34)])
    assert np.array_equal(part, whole[15:17, 63:133, 33:34])


def test_the_view_reads_as_the_whole_volume_removed():
    v = _unsharp(ndimage.gaussian_filter(LEVELS[_balls()], 0.6, mode="nearest"), 0.5, 2.0)
    whole = halo_removal.remove(v, 0.5, 2.0)
    view = halo_removal.HaloFreeView(v, 0.5, 2.0)
    assert view.shape == v.shape
    # keys whose context the volume's borders cut on some sides, and one whose context they cut nowhere
    interior = np.s_[19:21, 30:60, 40:50]
    for key in [np.s_[10:20], np.s_[0:3], np.s_[37:40, 5:50], np.s_[5], np.s_[12, 30:40, 7], np.s_[-1], interior]:
        assert np.allclose(view[key], whole[key], atol=1e-4), key
    assert view[10:20, 5:50].flags.c_contiguous and halo_removal.remove(v, 0.5, 2.0).flags.c_contiguous
    with pytest.raises(IndexError, match="unit steps"):
        view[::2]
    # with noise given back, too: every block reads a voxel's noise as the whole volume's read does
    m = halo_removal.margin_vox(0.5, 2.0)
    whole = halo_removal.remove(v, 0.5, 2.0, noise=0.03 * halo_removal.white_noise([(-m, n + m) for n in v.shape]))
    view = halo_removal.HaloFreeView(v, 0.5, 2.0, noise_sd=0.03)
    for key in [np.s_[10:20], np.s_[0:3], np.s_[37:40, 5:50], np.s_[12, 30:40, 7], interior]:
        assert np.allclose(view[key], whole[key], atol=1e-4), key


def test_a_view_read_in_bands_reads_as_the_whole_volume_removed(monkeypatch):
    """A key larger than the view's block is read in bands along y, each with its own context and noise
    tiles: the same voxels as one block (and as the whole volume) within the inverse's tail."""
    v = _unsharp(ndimage.gaussian_filter(LEVELS[_balls()], 0.6, mode="nearest"), 0.5, 2.0)
    m = halo_removal.margin_vox(0.5, 2.0)
    whole = halo_removal.remove(v, 0.5, 2.0, noise=0.03 * halo_removal.white_noise([(-m, n + m) for n in v.shape]))
    one = halo_removal.HaloFreeView(v, 0.5, 2.0, noise_sd=0.03)[10:20]
    monkeypatch.setattr(halo_removal, "BLOCK_VOXELS", 300_000)
    calls = []
    inverse = halo_removal._inverse
    monkeypatch.setattr(halo_removal, "_inverse", lambda padded, *a: calls.append(padded.shape) or inverse(padded, *a))
    banded = halo_removal.HaloFreeView(v, 0.5, 2.0, noise_sd=0.03)[10:20]
    assert len(calls) == -(-96 // halo_removal.MIN_BAND_ROWS)  # 300 000 voxels leave fewer rows than the least
    assert np.allclose(banded, one, atol=1e-4) and np.allclose(banded, whole[10:20], atol=1e-4)


@pytest.mark.parametrize("a, h, sigma", [(0.5, 2.0, 0.6), (1.0, 1.5, 0.5), (0.25, 3.0, 1.0)])
def test_the_fit_recovers_a_planted_halo(a, h, sigma):
    codes = _balls(2)
    u = ndimage.gaussian_filter(LEVELS[codes], sigma, mode="nearest")
    noisy = _unsharp(u, a, h) + np.random.default_rng(3).normal(0, 0.03, codes.shape).astype(np.float32)
    found = halo_removal.fit(codes, noisy)
    assert found.amplitude == pytest.approx(a, rel=0.08)
    assert found.sigma_vox == h and found.blur_sigma_vox == pytest.approx(sigma)


def test_a_known_point_spread_keeps_a_short_halo_from_standing_in_for_a_wider_blur():
    """Surfaces that cut the voxels (balls drawn on a grid twice as fine, averaged 2 × 2 × 2, coded by their
    majority phase) put the map's edges up to half a voxel off. Fitted free, a wider blur and a short-reach
    halo at the amplitude's bound then explain the edges best; with the point spread the voxels show (the
    planted σ widened by the average, variance 1/16 voxel²) the planted halo comes back."""
    rng = np.random.default_rng(4)
    zz, yy, xx = np.indices((80, 192, 192))
    fine = np.zeros(zz.shape, np.uint8)
    fine[:8] = 4
    for _ in range(30):
        c, r = rng.uniform([16, 0, 0], zz.shape), rng.uniform(8, 16)
        fine[(zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 < r * r] = NMC_LOW
    fine[ndimage.binary_dilation(fine == NMC_LOW, iterations=3) & (fine == VOID)] = CBD

    def average(x):
        return x.reshape(40, 2, 96, 2, 96, 2).mean(axis=(1, 3, 5))

    codes = np.stack([average((fine == c).astype(np.float32)) for c in range(5)]).argmax(0).astype(np.uint8)
    a, h, sigma = 0.9, 1.5, 0.4
    grey = _unsharp(ndimage.gaussian_filter(average(LEVELS[fine]), sigma, mode="nearest"), a, h)
    grey = (grey + np.random.default_rng(3).normal(0, 0.03, grey.shape)).astype(np.float32)
    free = halo_removal.fit(codes, grey)
    assert free.amplitude > 1.5 and free.sigma_vox < h
    known = halo_removal.fit(codes, grey, blur_sigma_vox=np.hypot(sigma, 0.25))
    assert known.amplitude == pytest.approx(a, rel=0.05) and known.sigma_vox == h
    assert known.blur_sigma_vox == pytest.approx(np.hypot(sigma, 0.25))
    # NaN (no forward model ran): the grid, as without it
    assert halo_removal.fit(codes, grey, blur_sigma_vox=float("nan")) == free


def test_no_halo_fits_no_amplitude():
    codes = _balls(4)
    grey = ndimage.gaussian_filter(LEVELS[codes], 0.6, mode="nearest")
    grey += np.random.default_rng(5).normal(0, 0.03, codes.shape).astype(np.float32)
    assert halo_removal.fit(codes, grey).amplitude < halo_removal.MIN_AMPLITUDE


def _write(tmp_path, name, p: PhantomParams, seed=7):
    ph = generate_phantom(p, seed=seed)
    path = tmp_path / f"{name}.h5"
    io.write_volume(path, ph.volume, (0.5, 0.5, 0.5), "phantom")
    return ph, path


def _accuracy(phases_path, truth) -> float:
    with h5py.File(phases_path, "r") as f:
        codes = f["phases"][...]
    nmc = lambda c: np.where(c == 3, 2, c)  # noqa: E731 - NMC high and low as one
    return float((nmc(codes) == nmc(truth)).mean())


@pytest.mark.parametrize("shape", ["gaussian", "paganin"])
def test_a_phantoms_halo_is_taken_out_before_the_phases_are_read(tmp_path, shape):
    base = dict(shape_zyx=(40, 96, 96), n_particles=14, halo_amplitude=0.6, halo_shape=shape)
    ph, volume = _write(tmp_path, "halo", PhantomParams(**base))
    kept = tmp_path / "kept.h5"
    res_off, _, _ = halo_removal.threshold_halo_free(volume, kept, ThresholdSettings(remove_halo=False),
                                                     progress=False)
    removed = tmp_path / "removed.h5"
    res, _, _ = halo_removal.threshold_halo_free(volume, removed, ThresholdSettings(), progress=False)
    with h5py.File(removed, "r") as f:
        attrs = dict(f["phases"].attrs)
    with h5py.File(kept, "r") as f:
        assert halo_removal.AMPLITUDE_ATTR not in f["phases"].attrs
    assert 0.3 < attrs[halo_removal.AMPLITUDE_ATTR] < 1.0 and "undershoot before" in attrs["halo_removed"]
    assert "fits: " in attrs["halo_removed"]  # fitted again on the map read without it
    # the noise given back is the imaged electrolyte's: the phantom's planted electrolyte FWHM
    assert attrs[halo_removal.NOISE_ATTR] == pytest.approx(PhantomParams().fwhm["void"] / 2.3548, rel=0.15)
    # the check reads the grey levels as the map was read from them: what is left of the halo
    before = edge_halo.measure_map(kept, volume, res_off.fwhm).undershoot
    after = edge_halo.measure_map(removed, volume, res.fwhm).undershoot
    assert before > 0.07 and after < 0.03
    # the point spread the forward model fits comes out as planted (0.5) where the halo made it sharper
    assert abs(res.refine_sigma_vox - 0.5) < abs(res_off.refine_sigma_vox - 0.5)
    assert _accuracy(removed, ph.phases) > _accuracy(kept, ph.phases)


def test_without_a_halo_the_map_is_the_one_read_as_it_is(tmp_path):
    ph, volume = _write(tmp_path, "plain", PhantomParams(shape_zyx=(40, 96, 96), n_particles=14))
    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    halo_removal.threshold_halo_free(volume, a, ThresholdSettings(), progress=False)
    shading.threshold_flattened(volume, b, ThresholdSettings(), progress=False)
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        assert np.array_equal(fa["phases"][...], fb["phases"][...])
        assert halo_removal.AMPLITUDE_ATTR not in fa["phases"].attrs
        with h5py.File(volume, "r") as fv:  # and the grey levels are read as they are
            assert shading.flat_view(fv[io.VOLUME_DATASET], fa) == fv[io.VOLUME_DATASET]


def test_a_run_killed_mid_way_leaves_nothing_that_is_read_again(tmp_path):
    _, volume = _write(tmp_path, "halo", PhantomParams(shape_zyx=(40, 96, 96), n_particles=14,
                                                       halo_amplitude=0.6))
    phases = tmp_path / "phases.h5"
    stale = halo_removal._halo_free_path(phases)
    stale.write_bytes(b"left by a killed run")
    halo_removal.threshold_halo_free(volume, phases, ThresholdSettings(), progress=False)
    assert not stale.exists()


def test_a_flattened_map_reads_its_grey_levels_less_the_halo_then_the_shading(tmp_path):
    v = _unsharp(ndimage.gaussian_filter(LEVELS[_balls()], 0.6, mode="nearest"), 0.5, 2.0)
    grid = np.random.default_rng(6).normal(0, 0.05, (3, 6, 6)).astype(np.float32)
    with h5py.File(tmp_path / "p.h5", "w") as f:
        d = f.create_dataset("phases", data=_balls())
        d.attrs[halo_removal.AMPLITUDE_ATTR], d.attrs[halo_removal.REACH_ATTR] = 0.5, 2.0
        shading.write_field(f, grid, 16)
    expected = halo_removal.remove(v, 0.5, 2.0) - shading.field_on(grid, 16, [(0, 40), (0, 96), (0, 96)], v.shape)
    with h5py.File(tmp_path / "p.h5", "r") as f:
        view = shading.flat_view(v, f)
        assert np.allclose(view[8:24], expected[8:24], atol=1e-4)
        assert np.allclose(view[20, 10:30], expected[20, 10:30], atol=1e-4)


def test_the_phase_figure_names_a_halo_taken_out(tmp_path):
    from detachment.plots import phase_title

    assert "edge halo 0.48 over 1.5 voxels taken out" in phase_title("s", 0, "informed", halo=(0.483, 1.5))
    assert "halo" not in phase_title("s", 0, "informed")
    with h5py.File(tmp_path / "p.h5", "w") as f:
        f.create_dataset("phases", data=np.zeros((2, 2, 2), np.uint8))
    assert halo_removal.recorded(tmp_path / "p.h5") is None
    with h5py.File(tmp_path / "p.h5", "r+") as f:
        f["phases"].attrs[halo_removal.AMPLITUDE_ATTR], f["phases"].attrs[halo_removal.REACH_ATTR] = 0.4, 2.0
    assert halo_removal.recorded(tmp_path / "p.h5") == (0.4, 2.0)
