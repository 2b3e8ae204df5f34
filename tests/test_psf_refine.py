"""The forward-model refinement of the phase map (detachment.psf_refine) against planted truth."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from detachment import psf_refine
from detachment.phases import AL, CBD, NMC_HIGH, NMC_LOW, VOID

LEVELS = {"void": 0.0, "cbd": 0.3, "nmc_low": 0.7, "nmc_high": 0.9, "al": 0.5}
MU = np.array([LEVELS[n] for n in ("void", "cbd", "nmc_low", "nmc_high", "al")], np.float32)
NOISE = 0.02


def _ball(shape, centre, radius):
    z, y, x = np.indices(shape)
    return (z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2 <= radius ** 2


def _scene(shape=(24, 40, 40)):
    """Electrolyte with a CBD ball, an NMC ball half high, half low density inside, a CBD slab and an Al
    collector at z < 3."""
    truth = np.zeros(shape, np.uint8)
    truth[_ball(shape, (12, 12, 12), 6)] = CBD
    particle = _ball(shape, (12, 27, 26), 7)
    truth[particle] = NMC_LOW
    truth[particle & (np.indices(shape)[2] >= 26)] = NMC_HIGH
    truth[14:18, 30:, :10] = CBD
    truth[:3] = AL
    return truth


def _image(truth, sigma, seed=0, z_factor=1.0):
    rng = np.random.default_rng(seed)
    blurred = ndimage.gaussian_filter(MU[truth], (sigma * z_factor, sigma, sigma), mode="reflect")
    return (blurred + rng.normal(0, NOISE, truth.shape)).astype(np.float32)


def _thresholded(grey):
    """Per-voxel decision at the midpoints between the sorted levels (what a threshold map reads)."""
    order = np.argsort(MU)
    cuts = (MU[order][1:] + MU[order][:-1]) / 2
    return order[np.digitize(grey, cuts)].astype(np.uint8)


def _cut_gaussian(a, sigma, z_factor=1.0):
    """scipy's Gaussian filter cut at ceil(3 σ) voxels on each axis (σ ``z_factor`` times as wide along z), zero
    beyond the array (the forward model's ``G``)."""
    sigmas = (sigma * z_factor, sigma, sigma)
    return ndimage.gaussian_filter(a, sigmas, mode="constant", radius=[max(1, int(np.ceil(3 * s))) for s in sigmas])


def _brute_energy(codes, grey, sigma, beta, start, sd=None, tex=None, z_factor=1.0):
    """``E`` written out in float64: the codes mirrored beyond the faces (from ``start``), each voxel's
    residual against the blurred map over twice its phase's variance (``sd`` per code, default ``NOISE``
    for all) plus half the log of that variance over the narrowest, plus β per unlike pair inside; ``tex``
    (the mirrored map's shape) is added to the level of every voxel coded NMC."""
    sd = np.full(5, NOISE) if sd is None else np.asarray(sd, np.float64)
    pad = int(np.ceil(3 * sigma * max(1.0, z_factor))) + 1
    mirror = np.pad(start, pad, mode="symmetric")
    mirror[pad:-pad, pad:-pad, pad:-pad] = codes
    mu = MU[mirror].astype(np.float64)
    if tex is not None:
        mu += np.where((mirror == NMC_LOW) | (mirror == NMC_HIGH), tex, 0.0)
    model = _cut_gaussian(mu, sigma, z_factor)[pad:-pad, pad:-pad, pad:-pad]
    w = sd[codes] ** 2
    data = ((grey - model) ** 2 / (2 * w) + 0.5 * np.log(w / (sd ** 2).min())).sum()
    pairs = sum(int((np.take(codes, range(1, n), axis=a) != np.take(codes, range(n - 1), axis=a)).sum())
                for a, n in enumerate(codes.shape))
    return data + beta * pairs


@pytest.mark.parametrize("sigma", [0.7, 1.0, 1.5])
def test_refinement_recovers_the_planted_map_a_threshold_misreads(sigma):
    truth = _scene()
    grey = _image(truth, sigma)
    start = _thresholded(grey)
    out, moved = psf_refine.refine_codes(start, grey, LEVELS, sigma, NOISE, psf_refine.RefineSettings())
    wrong_before, wrong_after = (start != truth).sum(), (out != truth).sum()
    assert moved == (out != start).sum() > 0
    assert wrong_after <= 0.5 * wrong_before, (wrong_before, wrong_after)
    # the electrolyte a blurred particle lifts into CBD's levels goes back
    beside = ndimage.binary_dilation(truth >= NMC_LOW, iterations=1) & (truth == VOID)
    assert (out[beside] == CBD).mean() < (start[beside] == CBD).mean()


PHASE_SD = {"void": NOISE, "cbd": 1.5 * NOISE, "nmc_low": 3 * NOISE, "nmc_high": 3.5 * NOISE, "al": NOISE}


@pytest.mark.parametrize("beta, per_phase", [(0.0, False), (3.0, False), (3.0, True)])
def test_energy_never_rises_with_more_sweeps(beta, per_phase):
    truth = _scene((16, 24, 24))
    grey = _image(truth, 1.0, seed=3)
    codes = _thresholded(grey)
    noise = PHASE_SD if per_phase else NOISE
    sd = [PHASE_SD[n] for n in ("void", "cbd", "nmc_low", "nmc_high", "al")] if per_phase else None
    energies = []
    for sweeps in range(4):
        out, _ = psf_refine.refine_codes(codes, grey, LEVELS, 1.0, noise, psf_refine.RefineSettings(beta, sweeps))
        energies.append(_brute_energy(out, grey, 1.0, beta, codes, sd))
        assert psf_refine.energy(out, grey, np.pad(MU, (0, 251)), 1.0, noise, beta, border=codes) == pytest.approx(
            energies[-1], rel=1e-9)
    assert np.all(np.diff(energies) < 0), energies


def test_the_data_term_is_the_squared_residual_of_the_blurred_map():
    """With one noise for every phase, ``E``'s change with a code is ``‖g - G μ‖² / (2 s²)``'s, ``G`` the full
    Gaussian (cut at 4 σ by scipy) within the part of the kernel beyond 3 σ."""
    truth = _scene((20, 28, 28))
    grey = _image(truth, 1.0, seed=4)
    moved = truth.copy()
    moved[10, 12:15, 12:15] = NMC_LOW  # inside the CBD ball, far from every face

    def residual(c):
        return 0.5 * ((grey - ndimage.gaussian_filter(MU[c].astype(np.float64), 1.0, mode="reflect")) ** 2).sum()

    lv = np.pad(MU, (0, 251))
    change = (psf_refine.energy(moved, grey, lv, 1.0, NOISE, 0.0) - psf_refine.energy(truth, grey, lv, 1.0, NOISE, 0.0))
    assert change * NOISE ** 2 == pytest.approx(residual(moved) - residual(truth), rel=1e-2)


def _brute_icm(codes, grey, sigma, beta, sd, sweeps, al_below=None, tex=None, z_factor=1.0):
    """Iterated conditional modes written out: each voxel in raster order takes, among its 6-neighbours'
    codes (first in the order -z, +z, -y, +y, -x, +x), the one whose whole-volume energy (``_brute_energy``)
    is lowest if lower than its own; NMC low / high exchanged only on the surface, Al only below
    ``al_below``."""
    q = codes.copy()
    nz, ny, nx = q.shape
    for _ in range(sweeps):
        moved = 0
        for z, y, x in np.ndindex(q.shape):
            a = q[z, y, x]
            nbs = [q[z - 1, y, x] if z > 0 else None, q[z + 1, y, x] if z < nz - 1 else None,
                   q[z, y - 1, x] if y > 0 else None, q[z, y + 1, x] if y < ny - 1 else None,
                   q[z, y, x - 1] if x > 0 else None, q[z, y, x + 1] if x < nx - 1 else None]
            surface = any(c not in (NMC_LOW, NMC_HIGH) for c in nbs)
            base, best, best_k = _brute_energy(q, grey, sigma, beta, codes, sd, tex, z_factor), 0.0, a
            for k in dict.fromkeys(c for c in nbs if c is not None and c != a):
                if k == AL and al_below is not None and z >= al_below:
                    continue
                if a in (NMC_LOW, NMC_HIGH) and k in (NMC_LOW, NMC_HIGH) and not surface:
                    continue
                q[z, y, x] = k
                change = _brute_energy(q, grey, sigma, beta, codes, sd, tex, z_factor) - base
                q[z, y, x] = a
                if change < best - 1e-9:
                    best, best_k = change, k
            if best_k != a:
                q[z, y, x], moved = best_k, moved + 1
        if not moved:
            break
    return q


@pytest.mark.parametrize("per_phase, z_factor", [(False, 1.0), (True, 1.0), (True, 0.4), (False, 1.8)])
def test_refinement_is_iterated_conditional_modes_on_the_whole_energy(per_phase, z_factor):
    """Brute force: every move's change of ``E`` recomputed on the whole volume, every voxel read in every
    sweep; the compiled sweeps (exact changes, voxels read again only near a move) give the same map, under
    a point spread as wide along z as within the slices and under one narrower or wider there (scipy's
    Gaussian with a σ and a cut per axis)."""
    truth = _scene((7, 14, 14))
    truth[:3] = AL
    grey = _image(truth, 1.2, seed=6, z_factor=z_factor)  # moves go on into the third sweep; the weighings differ
    codes = _thresholded(grey)
    noise = PHASE_SD if per_phase else NOISE
    sd = [PHASE_SD[n] for n in ("void", "cbd", "nmc_low", "nmc_high", "al")] if per_phase else None
    rs = psf_refine.RefineSettings(3.0, 3, z_factor=z_factor)
    out, moved = psf_refine.refine_codes(codes, grey, LEVELS, 1.2, noise, rs, al_below=3)
    expected = _brute_icm(codes, grey, 1.2, 3.0, sd, 3, al_below=3, z_factor=z_factor)
    one_sweep = psf_refine.refine_codes(codes, grey, LEVELS, 1.2, noise,
                                        psf_refine.RefineSettings(3.0, 1, z_factor=z_factor), al_below=3)[1]
    assert moved > (one_sweep if z_factor == 1 else 0)  # the isotropic scene moves on past the first sweep
    np.testing.assert_array_equal(out, expected)


def _field(rng, shape, corr):
    """Zero-mean unit-variance random field, Gaussian-correlated over ``corr`` voxels (0: white)."""
    f = rng.standard_normal(shape)
    if corr > 0:
        f = ndimage.gaussian_filter(f, corr, mode="wrap")
    return (f - f.mean()) / f.std()


def _padded_texture(codes, grey, sigma, texture_sigma):
    """:func:`psf_refine.texture_offsets` of the map ``codes`` as :func:`psf_refine.refine_codes` pads it."""
    pad = psf_refine.border_width(sigma)
    work = psf_refine.mirrored(codes, pad)
    r = psf_refine.padded_residual(work, grey, np.pad(MU, (0, 251)).astype(np.float64),
                                   psf_refine.psf_kernel(sigma), pad)
    return work, r, psf_refine.texture_offsets(work, r, texture_sigma, pad), pad


@pytest.mark.parametrize("texture_sigma", [0.5, 1.5])
def test_texture_offsets_are_each_voxels_mean_of_its_nmc_neighbours_residuals(texture_sigma):
    """Brute force: for sampled voxels, the Gaussian-weighted mean of the residuals of the other voxels
    coded NMC within 3 σ, those beyond three spreads of their code's left out."""
    truth = _scene((16, 36, 36))
    rng = np.random.default_rng(7)
    field = _field(rng, truth.shape, 1.0)
    grey = (_image(truth, 0.8, seed=7) + 0.06 * field * (truth >= NMC_LOW)).astype(np.float32)
    codes = truth.copy()
    codes[6, 5:8, 5:8] = NMC_LOW  # NMC voxels in the electrolyte, their residuals far out: left out
    work, r, tex, pad = _padded_texture(codes, grey, 0.8, texture_sigma)
    inner = tuple(slice(pad, n - pad) for n in work.shape)
    nmc = (work == NMC_LOW) | (work == NMC_HIGH)
    use = np.zeros(work.shape, bool)
    for c in (NMC_LOW, NMC_HIGH):
        mine = np.zeros(work.shape, bool)
        mine[inner] = work[inner] == c
        v = r[mine]
        use |= mine & (np.abs(r) <= 3 * 1.4826 * np.median(np.abs(v - np.median(v))))
    # the voxels with a face neighbour outside NMC (none beyond the padded map) are left out too
    for ax in range(3):
        for step in (1, -1):
            shifted = np.roll(nmc, step, axis=ax)
            edge = [slice(None)] * 3
            edge[ax] = 0 if step == 1 else -1
            shifted[tuple(edge)] = True
            use &= shifted
    assert not use[pad + 6, pad + 6, pad + 6] and use[pad + 12, pad + 27, pad + 26]
    assert not use[pad + 12, pad + 27, pad + 33]  # the particle's surface
    k = psf_refine.psf_kernel(texture_sigma)
    rad = len(k) // 2
    # inside the particle, on its surface, just outside it, beside the left-out voxels, far from any NMC
    for v in [(pad + 12, pad + 27, pad + 26), (pad + 12, pad + 27, pad + 33), (pad + 12, pad + 27, pad + 34),
              (pad + 6, pad + 6, pad + 8), (pad + 2, pad + 6, pad + 30)]:
        num = den = 0.0
        for d in np.ndindex(2 * rad + 1, 2 * rad + 1, 2 * rad + 1):
            u = tuple(a + b - rad for a, b in zip(v, d))
            if u == v or not all(0 <= a < n for a, n in zip(u, work.shape)) or not use[u]:
                continue
            w = k[d[0]] * k[d[1]] * k[d[2]]
            num, den = num + w * r[u], den + w
        expected = num / den if den > 1e-3 else 0.0
        assert tex[v] == pytest.approx(expected, abs=1e-5), v
    # and it is the planted texture, read from the neighbours
    deep = ndimage.binary_erosion(truth >= NMC_LOW, iterations=2)
    assert np.corrcoef(tex[inner][deep], field[deep])[0, 1] > 0.5


@pytest.mark.parametrize("amplitude, corr, noise, expected", [
    (0.06, 0.0, 0.02, "none"),  # white texture: no neighbour predicts it
    (0.06, 1.0, 0.02, "narrow"),  # texture above the noise: the nearest neighbours predict it best
    (0.02, 3.0, 0.05, "wide"),  # smooth texture under the noise: averaging more neighbours does
])
def test_the_fitted_texture_sigma_is_what_predicts_the_texture_best(amplitude, corr, noise, expected):
    shape = (28, 44, 44)
    truth = np.zeros(shape, np.uint8)
    truth[_ball(shape, (14, 22, 22), 12)] = NMC_LOW
    rng = np.random.default_rng(11)
    grey = (ndimage.gaussian_filter(MU[truth], 0.6) + amplitude * _field(rng, shape, corr) * (truth == NMC_LOW)
            + rng.normal(0, noise, shape)).astype(np.float32)
    texture_sigma, spread, untextured = psf_refine.fit_texture_sigma(truth, grey, LEVELS, 0.6)
    total = np.hypot(amplitude, noise)
    assert untextured["nmc_low"] == pytest.approx(total, rel=0.05)
    if expected == "none":
        assert texture_sigma == 0 and spread["nmc_low"] == pytest.approx(total, rel=0.05)
        # a σ asked for is used even where it predicts nothing
        assert psf_refine.fit_texture_sigma(truth, grey, LEVELS, 0.6, (1.0,), or_none=False)[0] == 1.0
    elif expected == "narrow":
        assert texture_sigma <= 0.5 and spread["nmc_low"] < 0.6 * total
    else:
        assert texture_sigma >= 1.0 and spread["nmc_low"] < 0.97 * total


def _coated_rough_particle(rng, shape=(32, 48, 48)):
    """NMC with a surface roughened by a smooth field (radius 12 ± ~2 voxels) and a one-voxel CBD coat
    over its +x half, in electrolyte."""
    z, y, x = np.indices(shape)
    d = np.sqrt((z - 16) ** 2 + (y - 24) ** 2 + (x - 24) ** 2) - 2.0 * _field(rng, shape, 2.0)
    truth = np.zeros(shape, np.uint8)
    truth[(d <= 13) & (x >= 24)] = CBD
    truth[d <= 12] = NMC_LOW
    return truth


def test_a_one_voxel_coat_on_textured_nmc_is_kept_when_the_texture_is_read():
    """Weighed by NMC's whole spread, a coat voxel in the particle's notches costs little to code NMC
    and the prior takes it; with NMC's texture read from its neighbours the spread left is the noise's."""
    rng = np.random.default_rng(0)
    truth = _coated_rough_particle(rng)
    grey = (ndimage.gaussian_filter(MU[truth], 0.6) + 0.062 * _field(rng, truth.shape, 1.0) * (truth == NMC_LOW)
            + rng.normal(0, 0.022, truth.shape)).astype(np.float32)
    levels = {"void": 0.0, "cbd": 0.3, "nmc_low": 0.7}
    noise = {"void": 0.022, "cbd": 0.022, "nmc_low": 0.066}  # NMC's interior spread: texture and noise
    coat = truth == CBD
    plain, _ = psf_refine.refine_codes(truth, grey, levels, 0.6, noise, psf_refine.RefineSettings())
    texture_sigma, spread, untextured = psf_refine.fit_texture_sigma(truth, grey, levels, 0.6)
    fall = spread["nmc_low"] / untextured["nmc_low"]
    assert texture_sigma > 0 and fall < 0.6
    read, _ = psf_refine.refine_codes(truth, grey, levels, 0.6, {**noise, "nmc_low": fall * noise["nmc_low"]},
                                      psf_refine.RefineSettings(3.0, 4, texture_sigma))
    assert (read[coat] == CBD).mean() > (plain[coat] == CBD).mean() + 0.05
    assert (read[coat] == NMC_LOW).mean() < 0.6 * (plain[coat] == NMC_LOW).mean()
    assert (read == truth).mean() > (plain == truth).mean()


def test_refinement_with_texture_is_iterated_conditional_modes_on_the_whole_energy():
    """As the brute-force test above, with NMC's level at each voxel carrying the offsets
    :func:`psf_refine.texture_offsets` reads on the start map (fixed while the codes move)."""
    truth = _scene((7, 14, 14))
    truth[:3] = AL
    truth[3:7, 5:13, 5:13] = NMC_LOW  # a particle with an interior to read the texture on
    truth[3:7, 5:13, 9:13] = NMC_HIGH
    rng = np.random.default_rng(8)
    grey = (_image(truth, 1.2, seed=6) + 0.08 * _field(rng, truth.shape, 1.0) * (truth >= NMC_LOW)).astype(np.float32)
    codes = _thresholded(grey)
    sd = [PHASE_SD[n] for n in ("void", "cbd", "nmc_low", "nmc_high", "al")]
    rs = psf_refine.RefineSettings(3.0, 3, 0.7)
    out, _ = psf_refine.refine_codes(codes, grey, LEVELS, 1.2, PHASE_SD, rs, al_below=3)
    tex = np.pad(_padded_texture(codes, grey, 1.2, 0.7)[2], 1)  # the brute force pads one voxel more
    assert np.abs(tex).max() > 0.02
    np.testing.assert_array_equal(out, _brute_icm(codes, grey, 1.2, 3.0, sd, 3, al_below=3, tex=tex))
    plain, _ = psf_refine.refine_codes(codes, grey, LEVELS, 1.2, PHASE_SD, psf_refine.RefineSettings(3.0, 3),
                                       al_below=3)
    assert (plain != out).any()  # the offsets decide some moves


def test_densities_are_exchanged_on_the_particle_surface_only():
    truth = _scene()
    grey = _image(truth, 1.2, seed=1)
    start = truth.copy()
    inner = ndimage.binary_erosion(truth >= NMC_LOW, iterations=2)
    start[inner] = NMC_LOW  # a wrong density inside: not this step's to mend
    out, _ = psf_refine.refine_codes(start, grey, LEVELS, 1.2, NOISE, psf_refine.RefineSettings())
    assert np.array_equal(out[inner], start[inner])


def test_no_al_above_the_collector_top_and_none_where_no_neighbour_has_it():
    truth = _scene()
    grey = _image(truth, 1.0, seed=2)
    start = _thresholded(grey)
    start[start == AL] = VOID  # no Al at all: nothing may become Al
    out, _ = psf_refine.refine_codes(start, grey, LEVELS, 1.0, NOISE, psf_refine.RefineSettings())
    assert not (out == AL).any()
    start = truth.copy()
    start[2] = VOID  # the collector's last slice: above the top, it stays off Al
    out, _ = psf_refine.refine_codes(start, grey, LEVELS, 1.0, NOISE, psf_refine.RefineSettings(), al_below=2)
    assert not (out[2:] == AL).any()
    out, _ = psf_refine.refine_codes(start, grey, LEVELS, 1.0, NOISE, psf_refine.RefineSettings(), al_below=3)
    assert (out[2] == AL).mean() > 0.9
    # a tilted collector's top, column by column: slice 2 may become Al only where the top lies above it
    top = np.where(np.arange(truth.shape[2])[None, :] < truth.shape[2] // 2, 2, 3).repeat(truth.shape[1], 0)
    out, _ = psf_refine.refine_codes(start, grey, LEVELS, 1.0, NOISE, psf_refine.RefineSettings(), al_below=top)
    assert not (out[2][top == 2] == AL).any() and (out[2][top == 3] == AL).mean() > 0.9


@pytest.mark.parametrize("sigma, noise", [(float("nan"), NOISE), (0.0, NOISE), (1.0, float("nan")), (1.0, 0.0)])
def test_unknown_blur_or_noise_leaves_the_map(sigma, noise):
    truth = _scene((8, 16, 16))
    grey = _image(truth, 1.0)
    out, moved = psf_refine.refine_codes(_thresholded(grey), grey, LEVELS, sigma, noise, psf_refine.RefineSettings())
    assert moved == 0 and np.array_equal(out, _thresholded(grey))


@pytest.mark.parametrize("sigma", [0.3, 1.0, 2.0])
def test_the_kernel_is_scipys_gaussian_cut_at_three_sigma(sigma):
    delta = np.zeros(41)
    delta[20] = 1.0
    k = psf_refine.psf_kernel(sigma)
    r = len(k) // 2
    assert r == max(1, int(np.ceil(3 * sigma)))
    expected = ndimage.gaussian_filter1d(delta, sigma, mode="constant", truncate=np.ceil(3 * sigma) / sigma)
    np.testing.assert_allclose(k, expected[20 - r: 21 + r], rtol=1e-12)
    assert k.sum() == pytest.approx(1.0)


@pytest.mark.parametrize("kw, field", [(dict(beta=-1.0), "psf_refine_beta"), (dict(beta=float("nan")), "psf_refine_beta"),
                                       (dict(sweeps=1.5), "psf_refine_sweeps"), (dict(sweeps=-1), "psf_refine_sweeps"),
                                       (dict(texture_sigma=-0.5), "psf_refine_texture_vox"),
                                       (dict(texture_sigma=float("nan")), "psf_refine_texture_vox")])
def test_bad_settings_are_refused_naming_the_field(kw, field):
    with pytest.raises(ValueError, match=field):
        psf_refine.RefineSettings(**kw)


def test_a_phase_on_the_volume_face_keeps_its_code():
    """The collector fills the first slices, on the volume's face: with the codes beyond the face cut off,
    ``H μ`` there would be too dark and pull the collector to the brighter NMC next to it."""
    truth = _scene()
    truth[3:6, 20:34, 20:34] = NMC_LOW  # NMC resting on the collector
    grey = _image(truth, 1.2, seed=5)
    out, _ = psf_refine.refine_codes(truth, grey, LEVELS, 1.2, NOISE, psf_refine.RefineSettings())
    assert (out[:3] == AL).mean() > 0.99


@pytest.mark.parametrize("sigma", [0.05, 0.3])
def test_a_blur_narrower_than_a_voxel_still_returns_the_whole_map(sigma):
    truth = _scene((8, 16, 16))
    grey = _image(truth, sigma)
    out, _ = psf_refine.refine_codes(truth, grey, LEVELS, sigma, NOISE, psf_refine.RefineSettings())
    assert out.shape == truth.shape and (out == truth).mean() > 0.99


def _tilted_scene(shape=(28, 48, 48)):
    """A surface tilted 30 degrees from every axis (CBD under a plane), NMC balls and an Al collector: an
    edge-profile fit along the axes reads such surfaces as wider than the blur."""
    z, y, x = np.indices(shape)
    truth = np.zeros(shape, np.uint8)
    truth[(0.5 * (z - 14) + 0.6 * (y - 24) + 0.62 * (x - 24)) < -6] = CBD
    truth[_ball(shape, (14, 30, 30), 8)] = NMC_LOW
    truth[_ball(shape, (16, 12, 34), 5)] = NMC_HIGH
    truth[:3] = AL
    return truth


@pytest.mark.parametrize("planted, start", [(0.8, 1.2), (0.8, 0.75), (0.5, 0.62), (1.2, 1.4), (0.3, 0.21)])
def test_fitted_sigma_finds_the_planted_blur_from_a_wrong_start(planted, start):
    truth = _tilted_scene()
    grey = _image(truth, planted, seed=3)
    codes = _thresholded(grey)
    fitted = psf_refine.fit_sigma(codes, grey, LEVELS, start, NOISE, psf_refine.RefineSettings(), al_below=3)
    assert abs(fitted - planted) < 0.06 * planted
    lo, hi = (f * start for f in psf_refine.FIT_RANGE)
    assert lo <= fitted <= hi


@pytest.mark.parametrize("planted, factor", [(0.6, 1.0), (0.5, 2.0), (0.8, 0.6), (0.9, 1.4)])
def test_fitted_spread_finds_the_planted_sigma_and_z_factor(planted, factor):
    """A tilted scene blurred by σ within the slices and ``factor`` σ along z, started from 1.2 σ isotropic:
    both come back within 8 % (σ along z within 0.05 voxel where it is under 0.5: a kernel that narrow
    changes the blurred map little)."""
    truth = _tilted_scene()
    grey = _image(truth, planted, seed=3, z_factor=factor)
    codes = _thresholded(grey)
    sigma, z_factor = psf_refine.fit_spread(codes, grey, LEVELS, 1.2 * planted, NOISE, psf_refine.RefineSettings(),
                                            al_below=3)
    assert sigma == pytest.approx(planted, rel=0.08)
    along_z = planted * factor
    assert sigma * z_factor == (pytest.approx(along_z, rel=0.08) if along_z >= 0.5 else
                                pytest.approx(along_z, abs=0.05))
    assert not psf_refine.at_z_fit_bound(z_factor, sigma)


def test_a_z_factor_at_the_end_of_its_range_is_flagged_but_not_a_near_delta_kernel():
    lo, hi = psf_refine.Z_FIT_RANGE
    assert psf_refine.at_z_fit_bound(hi, 0.5) and psf_refine.at_z_fit_bound(lo, 1.0)
    assert not psf_refine.at_z_fit_bound(lo, 0.5)  # σ along z 0.2: nearly a delta, every lower σ alike
    assert not psf_refine.at_z_fit_bound(1.0, 0.5) and not psf_refine.at_z_fit_bound(float("nan"), 0.5)


def test_a_fixed_sigma_fits_the_z_factor_alone():
    truth = _tilted_scene()
    grey = _image(truth, 0.6, seed=3, z_factor=1.8)
    sigma, z_factor = psf_refine.fit_spread(_thresholded(grey), grey, LEVELS, 0.9, NOISE, psf_refine.RefineSettings(),
                                            al_below=3, sigma=0.6)
    assert sigma == 0.6 and z_factor == pytest.approx(1.8, rel=0.08)


def test_fitted_sigma_is_the_least_energy_over_a_fine_grid():
    """Brute force: the fitted σ's energy is within the tolerance's worth of the least on a grid of σ."""
    truth = _tilted_scene((20, 36, 36))
    grey = _image(truth, 0.9, seed=5)
    codes, rs = _thresholded(grey), psf_refine.RefineSettings()
    fitted = psf_refine.fit_sigma(codes, grey, LEVELS, 1.0, NOISE, rs, al_below=3)
    grid = np.linspace(psf_refine.FIT_RANGE[0], psf_refine.FIT_RANGE[1], 45)  # the search's range (start 1.0)
    energies = [psf_refine.fitted_energy(codes, grey, LEVELS, s, NOISE, rs, al_below=3)[0] for s in grid]
    best = grid[int(np.argmin(energies))]
    assert abs(fitted - best) <= 0.05
    e_fit = psf_refine.fitted_energy(codes, grey, LEVELS, fitted, NOISE, rs, al_below=3)[0]
    assert e_fit <= min(energies) + 0.01 * (max(energies) - min(energies))


def test_fitted_energy_is_the_mean_energy_of_the_refined_map():
    """Against the sum written out: the blurred refined map's squared residual over 2 s² plus β per pair."""
    truth = _scene((16, 30, 30))
    grey = _image(truth, 0.7, seed=2)
    codes, rs = _thresholded(grey), psf_refine.RefineSettings(beta=2.0)
    e, q = psf_refine.fitted_energy(codes, grey, LEVELS, 0.7, NOISE, rs)
    expected_map, _ = psf_refine.refine_codes(codes, grey, LEVELS, 0.7, NOISE, rs)
    np.testing.assert_array_equal(q, expected_map)
    model = ndimage.gaussian_filter(MU[q].astype(np.float64), 0.7, mode="reflect", truncate=np.ceil(2.1) / 0.7)
    pairs = sum(int((np.diff(q, axis=a) != 0).sum()) for a in range(3))
    resid = grey.astype(np.float64) - model
    assert e == pytest.approx(((resid ** 2).sum() / (2 * NOISE ** 2) + 2.0 * pairs) / q.size, rel=1e-5)


@pytest.mark.parametrize("shape", [(100, 300, 200), (30, 50, 400), (48, 256, 256)])
def test_fit_block_is_the_densest_run_of_slices_centred_in_the_plane(shape):
    rng = np.random.default_rng(shape[0])
    solid = rng.integers(0, 1000, shape[0])
    z, y, x = psf_refine.fit_block(solid, shape)
    depth = min(shape[0], psf_refine.FIT_BLOCK[0])
    sums = [solid[a: a + depth].sum() for a in range(shape[0] - depth + 1)]  # brute force, first maximum
    assert (z.start, z.stop) == (int(np.argmax(sums)), int(np.argmax(sums)) + depth)
    for s, n, b in zip((y, x), shape[1:], psf_refine.FIT_BLOCK[1:]):
        assert s.stop - s.start == min(n, b)
        assert abs(s.start - (n - s.stop)) <= 1  # centred


def test_a_fit_that_runs_into_the_end_of_its_range_says_so():
    """Planted 0.5, started at 1.7: the range starts above the truth (0.85), so σ stops at its lower end."""
    truth = _tilted_scene()
    grey = _image(truth, 0.5, seed=4)
    codes = _thresholded(grey)
    far = psf_refine.fit_sigma(codes, grey, LEVELS, 1.7, NOISE, psf_refine.RefineSettings(), al_below=3)
    assert far == pytest.approx(psf_refine.FIT_RANGE[0] * 1.7, abs=2 * psf_refine.FIT_TOLERANCE)
    assert psf_refine.at_fit_bound(far, 1.7)
    near = psf_refine.fit_sigma(codes, grey, LEVELS, 0.55, NOISE, psf_refine.RefineSettings(), al_below=3)
    assert not psf_refine.at_fit_bound(near, 0.55) and abs(near - 0.5) < 0.03


@pytest.mark.parametrize("sigma", [0.3, 0.5, 0.6, 0.8, 1.0, 1.2, 1.5, 2.5])
def test_deep_depth_is_the_first_erosion_where_a_plane_edges_spill_falls_below_the_bound(sigma):
    """Brute force over k: the smallest k >= 1 with Φ(-(k + ½) / σ) below DEEP_SPILL."""
    from scipy.stats import norm

    k = 1
    while norm.cdf(-(k + 0.5) / sigma) >= psf_refine.DEEP_SPILL:
        k += 1
    assert psf_refine.deep_depth(sigma) == k
    assert psf_refine.deep_depth(float("nan")) == 1


def _islands_scene(sigma: float, seed: int = 0):
    """Planted levels: electrolyte (0) below, a CBD layer (0.3), NMC low (0.72) with 9-voxel cubes of NMC
    high (0.9) inside it; blurred by a Gaussian of σ and with noise of 0.01."""
    codes = np.full((60, 48, 48), VOID, np.uint8)
    codes[20:26] = CBD
    codes[26:] = NMC_LOW
    for z in (30, 44):
        for y in range(4, 44, 11):
            for x in range(4, 44, 11):
                codes[z: z + 9, y: y + 9, x: x + 9] = NMC_HIGH
    planted = {"void": 0.0, "cbd": 0.3, "nmc_low": 0.72, "nmc_high": 0.9}
    lv = np.zeros(256)
    for name, code in (("void", VOID), ("cbd", CBD), ("nmc_low", NMC_LOW), ("nmc_high", NMC_HIGH)):
        lv[code] = planted[name]
    grey = ndimage.gaussian_filter(lv[codes], sigma, mode="nearest")
    grey += np.random.default_rng(seed).normal(0, 0.01, codes.shape)
    return codes, grey, planted


def test_deep_levels_recover_planted_levels_the_interior_reads_towards_its_neighbours():
    """At σ 1.2 the voxels whose six neighbours share their code read the 9-voxel high-density cubes more
    than a hundredth towards the low density around them; read deep_depth(σ) voxels in, every phase's
    level is the planted one within 0.005."""
    codes, grey, planted = _islands_scene(1.2)
    ball = ndimage.generate_binary_structure(3, 1)
    interior = float(np.median(grey[ndimage.binary_erosion(codes == NMC_HIGH, ball, border_value=0)]))
    assert planted["nmc_high"] - interior > 0.012
    start = {name: planted[name] - 0.05 for name in planted}
    deep = psf_refine.deep_levels(codes, grey, start, 1.2)
    assert set(deep) == set(start)
    for name in planted:
        assert deep[name] == pytest.approx(planted[name], abs=0.005), name


def test_deep_levels_keep_the_given_levels_where_one_step_suffices_or_too_few_voxels_lie_deep():
    codes, grey, planted = _islands_scene(0.5)
    given = {name: planted[name] + 0.01 for name in planted}
    assert psf_refine.deep_levels(codes, grey, given, 0.5) == given  # σ 0.5: the interior is deep enough
    # at σ 3 the high-density cubes (7 voxels) hold no voxel deep enough: their level stays as given
    deep = psf_refine.deep_levels(codes, grey, given, 3.0)
    assert deep["nmc_high"] == given["nmc_high"]
    assert deep["void"] != given["void"]
