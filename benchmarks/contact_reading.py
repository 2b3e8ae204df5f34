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
    """(volume, truth labels, planted phases) of one preset rendered with one image model."""
    d = preset_params({}, preset)
    if variant == "partial_volume":
        d["supersample"] = 2
    p = phantom.PhantomParams.from_dict(d)
    ph = phantom.generate_phantom(p, seed)
    if variant in ("voxel_grid", "partial_volume"):
        return ph.volume, ph.labels, ph.phases
    means = np.array([p.intensity[PHASE_NAMES[c]] for c in range(5)], np.float32)[ph.phases]
    if variant == "tail":
        density = 0.75 * ndimage.gaussian_filter(means, 0.5) + 0.25 * ndimage.gaussian_filter(means, 1.5)
    else:
        g = ndimage.gaussian_filter(means, 0.7)
        density = g - 0.25 * ndimage.laplace(g)
    volume, _ = phantom.render_intensity(ph.phases, p, np.random.default_rng(seed + 1), density=density)
    return volume, ph.labels, ph.phases


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


def score(f: pd.DataFrame, grey: np.ndarray) -> tuple[float, float]:
    """MAE and bias over particles of the share of faces read as electrolyte at the fitted level."""
    level = fit_contact_level(grey, np.nan).level
    g = pd.DataFrame({"label": f.label, "truth": f.gap, "read": grey < level}).groupby("label")
    t = g.agg(truth=("truth", "mean"), read=("read", "mean"), n=("truth", "size"))
    err = (t.read - t.truth)[t.n >= 100]
    return float(err.abs().mean()), float(err.mean())


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=["default", "large_particles", "bare_contacts", "thin_gaps"])
    ap.add_argument("--seed", type=int, default=5)
    args = ap.parse_args(argv)
    print(f"{'preset':16s} {'variant':15s} {'sigma':>6s} {'as reconstructed':>18s} {'sharpened':>18s} "
          f"{'less spill, sharp':>18s} {'ratio':>6s}")
    for preset in args.presets:
        intensity = preset_params({}, preset).get("intensity", phantom.PhantomParams().intensity)
        midpoint = 0.5 * (intensity["void"] + intensity["cbd"])
        for variant in VARIANTS:
            volume, labels, phases = render(preset, variant, args.seed)
            edges = EdgeProfiles()
            edges.add(phases, volume)
            sigma = edges.sigma()
            f = faces(labels, phases, volume.astype(np.float64))
            plain = score(f, f.grey.to_numpy())
            w = sharpening_weight(sigma)
            sharp = score(f, faces(labels, phases, sharpen(volume, w)).grey.to_numpy())
            left = volume - particle_spill(labels, phases, volume, sigma, midpoint)
            both = score(f, faces(labels, phases, sharpen(left, w)).grey.to_numpy())
            print(f"{preset:16s} {variant:15s} {sigma:6.2f} {plain[0]:9.3f} / {plain[1]:+.3f} "
                  f"{sharp[0]:9.3f} / {sharp[1]:+.3f} {both[0]:9.3f} / {both[1]:+.3f} "
                  f"{both[0] / max(plain[0], 1e-9):6.2f}", flush=True)


if __name__ == "__main__":
    main()
