"""A phase's texture: measured on its interior's variogram, drawn again with the same statistics."""

import numpy as np
import pytest
from scipy import ndimage

from detachment.texture import (
    WHITE,
    PhaseTexture,
    fit_texture,
    lag_correlation,
    measure_textures,
    textured_noise,
    variogram,
)

SPREADS = np.array([0.02, 0.03, 0.06, 0.05, 0.02], np.float32)


def _halves(shape=(48, 96, 96)):
    codes = np.zeros(shape, np.uint8)
    codes[:, :, shape[2] // 2:] = 2
    return codes


@pytest.mark.parametrize("scale", [0.5, 1.0, 2.5])
def test_lag_correlation_is_that_of_scipys_filtered_white_noise(scale):
    """The lag correlation of the kernel equals the correlation measured on white noise that
    ``scipy.ndimage.gaussian_filter`` filtered (a long 1D series), and the continuous Gaussian's
    exp(-k² / 4s²) where the kernel is well sampled."""
    n = np.random.default_rng(0).standard_normal(2_000_000)
    f = ndimage.gaussian_filter1d(n, scale, mode="wrap")
    for lag in (1, 2):
        measured = np.corrcoef(f[:-lag], f[lag:])[0, 1]
        assert lag_correlation(scale, lag) == pytest.approx(measured, abs=0.005)
    if scale >= 1:
        assert lag_correlation(scale, 2) == pytest.approx(np.exp(-4 / (4 * scale**2)), abs=0.01)


def test_fit_texture_inverts_the_variogram_of_a_white_plus_smooth_phase():
    """Variograms built by hand from a share and a scale (the continuous Gaussian's correlation at a scale
    where it equals the sampled one) give that share and scale back; a white phase is white."""
    s, share, scale = 0.05, 0.7, 2.0
    gamma = [s**2 * (1 - share * np.exp(-k**2 / (4 * scale**2))) for k in (1, 2)]
    t = fit_texture(*gamma, s)
    assert t.smooth_share == pytest.approx(share, abs=0.01) and t.scale_vox == pytest.approx(scale, rel=0.02)
    assert fit_texture(s**2, s**2, s) == WHITE
    assert fit_texture(float("nan"), s**2, s) == WHITE and fit_texture(s**2, s**2, 0.0) == WHITE


@pytest.mark.parametrize("texture", [PhaseTexture(0.8, 1.0), PhaseTexture(0.4, 2.0)])
def test_drawn_texture_is_measured_again(texture):
    """Noise drawn with a texture on one phase and white on the other has each phase's spread, and the
    measurement finds the texture again, and white where it is white."""
    codes = _halves()
    noise = textured_noise(codes, SPREADS, {2: texture}, seed=1)
    for code in (0, 2):
        assert noise[codes == code].std() == pytest.approx(SPREADS[code], rel=0.03)
    found = measure_textures(noise + np.where(codes == 2, 0.7, 0.0), codes, SPREADS, 0.5)
    assert found[0] == WHITE
    assert found[2].smooth_share == pytest.approx(texture.smooth_share, abs=0.04)
    assert found[2].scale_vox == pytest.approx(texture.scale_vox, rel=0.08)


def test_white_rendering_is_the_plain_normal_draw():
    """Without textures the noise is the seed's standard normal draw times each code's spread."""
    codes = _halves((4, 8, 8))
    expected = np.random.default_rng(7).standard_normal(codes.shape, dtype=np.float32) * SPREADS[codes]
    np.testing.assert_array_equal(textured_noise(codes, SPREADS, None, seed=7), expected)
    np.testing.assert_array_equal(textured_noise(codes, SPREADS, {2: PhaseTexture(0.5, 1.0)}, 3),
                                  textured_noise(codes, SPREADS, {2: PhaseTexture(0.5, 1.0)}, 3))


def test_shading_and_blurred_edges_are_not_read_as_texture():
    """White noise on a blurred two-phase step with a strong slow ramp: the variogram ignores the ramp, and
    the erosion by the point spread keeps the blurred edge out, so both phases read white; noise filtered
    as a reconstruction filters it reads as all smooth, at the filter's scale."""
    codes = _halves()
    levels = np.where(codes == 2, 0.7, 0.0).astype(np.float32)
    grey = ndimage.gaussian_filter(levels, 1.5) + textured_noise(codes, SPREADS, None, seed=2)
    grey += np.linspace(0, 0.2, codes.shape[1], dtype=np.float32)[None, :, None]
    found = measure_textures(grey, codes, SPREADS, 1.5)
    assert found[0] == WHITE and found[2] == WHITE, found
    # noise that the reconstruction itself filtered is a texture: scale its filter's, share all
    filtered = ndimage.gaussian_filter(np.random.default_rng(4).standard_normal(codes.shape), 1.2, mode="wrap")
    filtered *= SPREADS[0] / filtered.std()
    t = measure_textures(filtered, np.zeros_like(codes), SPREADS, 0.0)[0]
    assert t.smooth_share == pytest.approx(1.0, abs=0.03) and t.scale_vox == pytest.approx(1.2, rel=0.05), t


def test_the_phantoms_planted_texture_is_measured_on_its_truth(default_config):
    """On a phantom of the configured defaults, measured on its planted phase map with its planted spreads:
    NMC's smooth share is the planted texture's share of NMC's variance (texture over texture plus the
    white noise), at the generator's correlation length, through its slow drift; the electrolyte, planted
    white, reads white."""
    from detachment.phantom import PhantomParams, generate_phantom
    from detachment.phases import FWHM_PER_SIGMA, NMC_LOW, PHASE_NAMES, VOID
    from detachment.presets import preset_params

    d = preset_params(default_config["phantom"]["defaults"], "default")
    d.update(shape_zyx=[40, 96, 96], n_particles=12)
    ph = generate_phantom(PhantomParams.from_dict(d), 11)
    spreads = np.array([ph.planted_fwhm[PHASE_NAMES[c]] / FWHM_PER_SIGMA for c in range(5)])
    found = measure_textures(ph.volume, ph.phases, spreads, ph.params.blur_sigma_vox)
    white = ph.params.noise_sigma
    planted_share = 1 - white**2 / spreads[NMC_LOW] ** 2
    assert 0.2 < planted_share < 0.8
    assert found[NMC_LOW].smooth_share == pytest.approx(planted_share, abs=0.06), found
    assert found[NMC_LOW].scale_vox == pytest.approx(ph.params.texture_correlation_vox, rel=0.15), found
    assert found[VOID].smooth_share < 0.05, found


@pytest.mark.parametrize("lag", [1, 2])
def test_variogram_read_in_chunks_is_the_brute_force_one(lag):
    """Read a few slices at a time, pairs across chunk borders included, the variogram and its pair count
    equal a direct sum over every pair along every axis."""
    rng = np.random.default_rng(0)
    grey = rng.standard_normal((37, 20, 23)).astype(np.float32)
    mask = rng.random(grey.shape) < 0.7
    total = count = 0
    for axis in range(3):
        a, m = np.moveaxis(grey, axis, 0).astype(np.float64), np.moveaxis(mask, axis, 0)
        both = m[:-lag] & m[lag:]
        d = (a[:-lag] - a[lag:])[both]
        total, count = total + float(d @ d), count + d.size
    for chunk in (1, 5, 16, 64):
        value, n = variogram(grey, mask, lag, chunk=chunk)
        assert n == count and value == pytest.approx(0.5 * total / count, rel=1e-12)
