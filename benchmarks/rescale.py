"""Segmentation at other voxel sizes than the model's training data, with and without ``infer.rescale``.

Usage: .venv/bin/python benchmarks/rescale.py [--model results/model/maskrcnn.pt] [--slices 8] [--no-tta]
       [--threads 2]

Needs a finished default run (``make run``; ``make validate`` for the ``tune_large_particles_*`` volumes).
The model's training scale is its metadata's ``scale``; a model trained before the scale was recorded gets
it computed here as the train rule does (:func:`detachment.cnn.scale.training_scale` on
``results/annotations/train.h5`` and the labelled volumes of ``results/annotations/split.csv``).
Cases, each on ``--slices`` slices of the particle layer (slices with at least 3 true particle sections,
evenly spaced), scored per slice against the phantom's truth (instance precision, sensitivity, F1 at IoU
0.5, mean matched IoU), means over slices:

1. ``unseen_1C`` as it is (0.5 µm, the training voxel size): the reference.
2. ``unseen_1C`` coarsened to 1 µm in y and x (2 x 2 block means; truth: every second pixel), the same
   particles at half the pixels: ``rescale: auto`` (factor 2) and ``off``.
3. ``tune_large_particles_1C`` / ``_C10`` (preset ``large_particles``: 0.25 µm voxels, particles of ~36 px):
   ``auto`` (factor 0.5) and ``off``.

Inference settings are config/config.yaml's ``infer`` section (TTA unless ``--no-tta``).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

from detachment import io, metrics
from detachment.cnn.predict import load_model, predict
from detachment.cnn.reuse import meta_path_for
from detachment.cnn.scale import scale_factor, training_scale
from detachment.config_docs import with_defaults

ROOT = Path(__file__).resolve().parents[1]


def model_scale(meta: dict, results: Path) -> dict:
    """The metadata's training scale, else computed from the run's training split and labelled volumes."""
    if meta.get("scale"):
        return meta["scale"]
    split = pd.read_csv(results / "annotations" / "split.csv")
    voxels = {s: io.read_volume_info(results / s / "volume.h5")[1] for s in split["sample"].unique()}
    return training_scale(results / "annotations" / "train.h5", voxels)


def layer_slices(truth: np.ndarray, n: int) -> np.ndarray:
    """``n`` evenly spaced slices among those with at least 3 particle sections."""
    counts = np.array([len(np.unique(t)) - 1 for t in truth])
    zs = np.flatnonzero(counts >= 3)
    return zs[np.linspace(0, len(zs) - 1, min(n, len(zs))).round().astype(int)]


def coarsen(images: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """2 x 2 block means of (n, y, x) grey slices; every second pixel of their labels."""
    n, h, w = images.shape
    grey = images[:, : h // 2 * 2, : w // 2 * 2].reshape(n, h // 2, 2, w // 2, 2).mean((2, 4))
    return grey.astype(np.float32), labels[:, : h // 2 * 2 : 2, : w // 2 * 2 : 2]


def score(model, images, truth, factor, s: dict, tta: bool) -> dict:
    """Mean per-slice instance scores of the model's labels at ``factor`` against ``truth``; seconds per slice."""
    t0 = time.perf_counter()
    pred, _ = predict(model, images, torch.device("cpu"), s["batch_size"], s["score_threshold"],
                      s["mask_threshold"], min_visible_fraction=s["min_visible_fraction"], tta=tta, scale=factor)
    sec = (time.perf_counter() - t0) / len(images)
    sc = [metrics.instance_scores(t.astype(np.int64), p.astype(np.int64), 0.5) for t, p in zip(truth, pred)]
    return {"precision": np.mean([x.precision for x in sc]), "sensitivity": np.mean([x.sensitivity for x in sc]),
            "f1": np.mean([x.f1 for x in sc]), "mean_iou": np.mean([x.mean_matched_iou for x in sc]), "s_per_slice": sec}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="results/model/maskrcnn.pt")
    ap.add_argument("--results", default="results")
    ap.add_argument("--slices", type=int, default=8)
    ap.add_argument("--no-tta", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    results = Path(args.results)
    s = with_defaults(yaml.safe_load((ROOT / "config" / "config.yaml").read_text()))["infer"]
    tta = s["tta"] and not args.no_tta
    model, meta = load_model(args.model, meta_path_for(args.model), "cpu")
    meta = {**meta, "scale": model_scale(meta, results)}
    print(f"training scale: {meta['scale']}; tta {tta}")
    rows = []
    for sample in ("unseen_1C", "tune_large_particles_1C", "tune_large_particles_C10"):
        if not (results / sample / "volume.h5").exists():
            print(f"{sample}: not in {results}, skipped")
            continue
        volume, voxel = io.read_volume(results / sample / "volume.h5")
        truth = io.read_dataset(results / sample / "truth.h5", "labels")
        zs = layer_slices(truth, args.slices)
        cases = [(sample, volume[zs], truth[zs], voxel)]
        if sample == "unseen_1C":
            grey, lab = coarsen(volume[zs], truth[zs])
            cases.append((f"{sample} coarsened 2x", grey, lab, (voxel[0], 2 * voxel[1], 2 * voxel[2])))
        for name, images, lab, vox in cases:
            for mode in ("auto", "off"):
                factor = scale_factor(vox, meta, mode, where=name)
                rows.append({"case": name, "voxel_yx_um": vox[1], "rescale": mode, "factor": factor[0],
                             **score(model, images, lab, factor, s, tta)})
                print(rows[-1], flush=True)
    print(pd.DataFrame(rows).round(3).to_markdown(index=False))


if __name__ == "__main__":
    main()
