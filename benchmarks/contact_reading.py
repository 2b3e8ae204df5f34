"""Accuracy of the contact reading, as reconstructed against corrected, on phantoms made other ways.

Usage: .venv/bin/python benchmarks/contact_reading.py [--presets default large_particles bare_contacts
       thin_gaps] [--seed 5]

The pipeline subtracts the particles' own spill through the measured blur σ
(:func:`detachment.particles.particle_spill`) and sharpens the grey levels by w = σ² / 2
(:func:`detachment.contact_level.sharpen`) before it reads the contacts: the inverse, to first order, of
the phantom's own image model (phases drawn on the voxel grid, a Gaussian point spread). So each preset
is also rendered with an image model the corrections do not invert:

- ``voxel_grid``: the preset as the workflow generates it;
- ``tail``: point spread 0.75 G(0.5) + 0.25 G(1.5) (a Gaussian core with a wide tail);
- ``halo``: G(0.7) followed by an edge-enhancing − 0.25 · Laplacian, as phase contrast gives;
- ``partial_volume``: the geometry drawn on 2 × 2 × 2 sub-voxels (``supersample: 2``), so surfaces cut
  voxels anywhere.

On the truth's own envelopes and planted phases (no segmentation, no thresholding), every face between a
particle and a background voxel (planted void or CBD) is read as electrolyte where the face neighbour is
darker than the level fitted to all of them (:func:`detachment.contact_level.fit_contact_level`), once
on the grey levels as they are, once sharpened with the σ measured on the particles' edges
(:class:`detachment.blur.EdgeProfiles`) and once less the spill (counted from the planted void/CBD
midpoint), then sharpened: the workflow's default. Prints per preset and variant the measured σ and, per
reading, the MAE and bias over particles (≥ 100 faces) of the electrolyte share against the planted one,
and the ratio of the MAEs (default / as reconstructed).

The last column is a reference, not a reading: the default reading (less spill, sharpened, with the σ
measured on the noisy volume) of the same geometry rendered without texture, noise or drift, each face
read against the one level that minimises that MAE (chosen on the truth). Where it is above a goal, no
such reading of each face's grey level on its own against one level reaches the goal on that image
model, however well the level is fitted; a reading that uses the neighbourhood (the refined phase map's)
can still do better.
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
from scipy import ndimage

from detachment import phantom
from detachment.blur import EdgeProfiles
from detachment.contact_level import fit_contact_level, sharpen, sharpening_weight
from detachment.particles import particle_spill
from detachment.phases import CBD, PHASE_NAMES, VOID
from detachment.presets import preset_params

VARIANTS = ("voxel_grid", "tail", "halo", "partial_volume")


def render(preset: str, variant: str, seed: int):
    """(volume, truth labels, planted phases, noise-free volume) of one preset rendered with one image model.

    The noise-free volume is the same geometry through the same point spread (and sub-voxel means), before
    texture, noise and drift are added."""
    d = preset_params({}, preset)
    if variant == "partial_volume":
        d["supersample"] = 2
    p = phantom.PhantomParams.from_dict(d)
    ph = phantom.generate_phantom(p, seed)
    if variant in ("voxel_grid", "partial_volume"):
        # the geometry is drawn before the grey levels: a phantom without texture, noise or drift has the
        # same phases, and its volume is the blurred (sub-voxel) means
        quiet = phantom.generate_phantom(phantom.PhantomParams.from_dict(
            {**d, "fwhm": {k: 1e-9 for k in p.fwhm}, "drift_amplitude": 0.0}), seed)
        if not np.array_equal(quiet.phases, ph.phases):
            raise RuntimeError(f"{preset} / {variant}: the noise-free phantom drew another geometry")
        return ph.volume, ph.labels, ph.phases, quiet.volume
    means = np.array([p.intensity[PHASE_NAMES[c]] for c in range(5)], np.float32)[ph.phases]
    if variant == "tail":
        density = 0.75 * ndimage.gaussian_filter(means, 0.5) + 0.25 * ndimage.gaussian_filter(means, 1.5)
    else:
        g = ndimage.gaussian_filter(means, 0.7)
        density = g - 0.25 * ndimage.laplace(g)
    volume, _ = phantom.render_intensity(ph.phases, p, np.random.default_rng(seed + 1), density=density)
    return volume, ph.labels, ph.phases, density


def faces(labels: np.ndarray, phases: np.ndarray, grey: np.ndarray) -> pd.DataFrame:
    """Per particle face with a planted void / CBD neighbour: owner label, neighbour grey, planted class."""
    background = (labels == 0) & ((phases == VOID) | (phases == CBD))
    rows = []
    for axis in range(3):
        n = labels.shape[axis]
        for step in (1, -1):
            k = np.arange(max(0, -step), n - max(0, step))
            own, nb = np.take(labels, k, axis), np.take(background, k + step, axis)
            m = (own > 0) & nb
            rows.append(pd.DataFrame({"label": own[m], "grey": np.take(grey, k + step, axis)[m],
                                      "gap": np.take(phases, k + step, axis)[m] == VOID}))
    return pd.concat(rows, ignore_index=True)


def _errors(f: pd.DataFrame, read: np.ndarray) -> pd.Series:
    """Per particle (≥ 100 faces): share of faces read as electrolyte minus the planted share."""
    t = pd.DataFrame({"label": f.label, "truth": f.gap, "read": read}).groupby("label").agg(
        truth=("truth", "mean"), read=("read", "mean"), n=("truth", "size"))
    return (t.read - t.truth)[t.n >= 100]


def score(f: pd.DataFrame, grey: np.ndarray) -> tuple[float, float]:
    """MAE and bias over particles of the share of faces read as electrolyte at the fitted level."""
    err = _errors(f, grey < fit_contact_level(grey, np.nan).level)
    return float(err.abs().mean()), float(err.mean())


def best_level_score(f: pd.DataFrame, grey: np.ndarray, steps: int = 200) -> tuple[float, float]:
    """MAE and bias at the level (of ``steps`` between the faces' lowest and highest grey level) with the
    lowest MAE: an oracle, the level is chosen on the planted classes."""
    best = (np.inf, np.nan)
    for level in np.linspace(grey.min(), grey.max(), steps):
        err = _errors(f, grey < level)
        if err.abs().mean() < best[0]:
            best = (float(err.abs().mean()), float(err.mean()))
    return best


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=["default", "large_particles", "bare_contacts", "thin_gaps"])
    ap.add_argument("--seed", type=int, default=5)
    args = ap.parse_args(argv)
    print(f"{'preset':16s} {'variant':15s} {'sigma':>6s} {'as reconstructed':>18s} {'sharpened':>18s} "
          f"{'less spill, sharp':>18s} {'ratio':>6s} {'noise-free, best level':>22s}")
    for preset in args.presets:
        intensity = preset_params({}, preset).get("intensity", phantom.PhantomParams().intensity)
        midpoint = 0.5 * (intensity["void"] + intensity["cbd"])
        for variant in VARIANTS:
            volume, labels, phases, clean = render(preset, variant, args.seed)
            edges = EdgeProfiles()
            edges.add(phases, volume)
            sigma = edges.sigma()
            f = faces(labels, phases, volume.astype(np.float64))
            plain = score(f, f.grey.to_numpy())
            w = sharpening_weight(sigma)
            sharp = score(f, faces(labels, phases, sharpen(volume, w)).grey.to_numpy())
            left = volume - particle_spill(labels, phases, volume, sigma, midpoint)
            both = score(f, faces(labels, phases, sharpen(left, w)).grey.to_numpy())
            clean = np.asarray(clean, np.float64)
            clean_left = sharpen(clean - particle_spill(labels, phases, clean, sigma, midpoint), w)
            oracle = best_level_score(f, faces(labels, phases, clean_left).grey.to_numpy())
            print(f"{preset:16s} {variant:15s} {sigma:6.2f} {plain[0]:9.3f} / {plain[1]:+.3f} "
                  f"{sharp[0]:9.3f} / {sharp[1]:+.3f} {both[0]:9.3f} / {both[1]:+.3f} "
                  f"{both[0] / max(plain[0], 1e-9):6.2f} {oracle[0]:13.3f} / {oracle[1]:+.3f}", flush=True)


if __name__ == "__main__":
    main()
