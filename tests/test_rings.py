"""Ring artefacts: the measure against the rings planted in a phantom, and the check that stops a map on them."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from scipy import ndimage

from detachment.phantom import PhantomParams, generate_phantom
from detachment.rings import HIGH_PASS_SIGMA_VOX, MIN_BIN_PIXELS, measure

SMALL = dict(shape_zyx=(40, 128, 128), n_particles=30)


def _planted_rms(image: np.ndarray, step: float = 0.5) -> float:
    """Brute force: the root mean square, over the radial bins the measure reads, of the planted ring image's
    high-passed mean in each ring of width ``step`` (a loop over the bins, masks and means)."""
    Y, X = image.shape
    yy, xx = np.mgrid[0:Y, 0:X]
    r = np.hypot(yy - (Y - 1) / 2, xx - (X - 1) / 2)
    high = image - ndimage.gaussian_filter(image.astype(np.float64), HIGH_PASS_SIGMA_VOX)
    means = []
    for k in range(int(np.round(r.max() / step)) + 1):
        mask = np.round(r / step) == k
        if mask.sum() >= MIN_BIN_PIXELS:
            means.append(high[mask].mean())
    return float(np.sqrt(np.mean(np.square(means))))


@pytest.mark.parametrize("amplitude", [0.05, 0.1])
def test_the_profile_both_halves_share_reads_the_planted_rings_and_not_the_particles(amplitude):
    """A phantom with rings against its twin without: the measure reads the planted rings' root mean square
    (brute force on the planted ring image, :func:`_planted_rms`) within 25 %, the twin less than a fifth of it,
    and twice the amplitude twice the reading; the halves' profiles agree better with the rings than without."""
    p = PhantomParams(**SMALL, ring_amplitude=amplitude)
    with_rings = generate_phantom(p, 5)
    without = generate_phantom(replace(p, ring_amplitude=0.0), 5)
    got = measure(with_rings.volume, 0.3)
    truth = _planted_rms((with_rings.volume - without.volume)[0])
    assert got.rms == pytest.approx(truth, rel=0.25), (got, truth)
    assert measure(without.volume, 0.3).rms < 0.2 * truth
    assert got.correlation > measure(without.volume, 0.3).correlation
    assert got.ratio == pytest.approx(got.rms / 0.3)
    double = generate_phantom(replace(p, ring_amplitude=2 * amplitude), 5)
    assert measure(double.volume, 0.3).rms == pytest.approx(2 * got.rms, rel=0.2)


def test_white_noise_shares_no_rings_and_a_contrast_of_zero_gives_no_ratio():
    """Independent noise in the two halves: the shared profile's mean square is about zero (its root below
    0.002, where the noise's own profile is ten times that); no contrast, no ratio; one slice, no reading."""
    noise = np.random.default_rng(2).normal(0.0, 0.05, (40, 128, 128)).astype(np.float32)
    got = measure(noise, 0.3)
    assert got.rms < 0.002 and abs(got.correlation) < 0.3
    assert np.isnan(measure(noise, 0.0).ratio)
    assert np.isnan(measure(noise[:1], 0.3).rms)  # one slice: no two halves to compare


def test_rings_beyond_the_bound_stop_the_map_naming_the_check_and_the_way_out():
    """``ring_ratio`` above :data:`RING_RATIO_BOUND` fails its row of ``phase_qc.csv`` (at the bound it passes),
    and the stop's message says what the rings are and to remove them in the reconstruction."""
    from detachment.plausibility import (
        RING_RATIO_BOUND,
        ImplausiblePhaseMap,
        PhaseCounts,
        check_phase_map,
        enforce,
    )

    counts = PhaseCounts(np.array([[900, 10, 90, 0, 0]] * 3 + [[50, 300, 0, 500, 150]] * 10
                                  + [[800, 100, 0, 80, 20]] * 5))
    ok = check_phase_map(counts, ring_ratio=RING_RATIO_BOUND).set_index("check")
    assert bool(ok.passed["ring_ratio"])
    table = check_phase_map(counts, ring_ratio=RING_RATIO_BOUND * 1.5)
    row = table.set_index("check").loc["ring_ratio"]
    assert not row.passed and row.bound == RING_RATIO_BOUND and row.bound_type == "max"
    assert "ring_ratio" not in set(check_phase_map(counts).check)  # not measured: left out
    with pytest.raises(ImplausiblePhaseMap, match="ring_ratio") as e:
        enforce(table[table.check == "ring_ratio"], "s1", "stop")
    assert "sample 's1'" in str(e.value) and "ring artefacts" in str(e.value) and "reconstruction" in str(e.value)
