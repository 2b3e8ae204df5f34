"""Peak RSS of the streamed steps on a volume and on one 8x deeper: the ratio should stay near 1.

Usage: .venv/bin/python benchmarks/memory.py [--factor 8]

Each step runs in a fresh subprocess (its peak RSS from os.wait4) on 16 slices of the default phantom
and on the same volume tiled ``--factor`` times in z: threshold (detachment.threshold, ``gmm`` model,
two threads), infer
(detachment.inference.infer_slab over the whole depth, untrained default model), link
(detachment.linking.link_file) and particles (detachment.particles.particle_table_from_files).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

STEP = r'''
import sys, json, pandas as pd
from pathlib import Path
d = Path(sys.argv[1]); step = sys.argv[2]
from detachment import threshold, inference, linking, particles
if step == "threshold":
    # gmm: the 16 slices hold no collector slab for the informed model; the rule's two threads
    threshold.threshold_volume(d / "volume.h5", d / "phases.h5", threshold.ThresholdSettings(method="gmm"),
                               progress=False, workers=2)
elif step == "infer":
    import h5py
    n = h5py.File(d / "volume.h5")["volume"].shape[0]
    inference.infer_slab(d / "volume.h5", d / "w.pt", d / "m.json", 0, n, d / "slab.h5", device="cpu", progress=False)
elif step == "link":
    linking.link_file(d / "slices.h5", d / "particles.h5", linking.LinkSettings()).to_csv(d / "links.csv", index=False)
elif step == "particles":
    particles.particle_table_from_files(d / "particles.h5", d / "phases.h5", d / "volume.h5",
                                        pd.read_csv(d / "links.csv"), progress=False)
'''


def prepare(d: Path, volume, labels, phases):
    import torch

    from detachment import io
    from detachment.maskrcnn import ModelSettings, TrainSettings, build_model, settings_dict

    io.write_volume(d / "volume.h5", volume, 0.5, "benchmark")
    io.write_arrays(d / "slices.h5", {"labels": labels}, voxel_size_um=(0.5,) * 3)
    io.write_arrays(d / "phases.h5", {"phases": phases})
    m = ModelSettings(image_mean=0.3, image_std=0.3)
    torch.manual_seed(0)
    torch.save(build_model(m).state_dict(), d / "w.pt")
    (d / "m.json").write_text(json.dumps(settings_dict(m, TrainSettings())))


def peak_rss_mb(d: Path, step: str) -> float:
    proc = subprocess.Popen([sys.executable, "-c", STEP, str(d), step])
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise RuntimeError(f"step {step} failed")
    return usage.ru_maxrss / 1024


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--factor", type=int, default=8)
    args = ap.parse_args()
    from detachment.phantom import PhantomParams, generate_phantom

    ph = generate_phantom(PhantomParams(), seed=1)
    zs = slice(4, 20)  # 16 slices through the particle layer keep the 8x volume's inference affordable
    ph.volume, ph.labels, ph.phases = ph.volume[zs], ph.labels[zs], ph.phases[zs]
    with tempfile.TemporaryDirectory() as tmp:
        base, deep = Path(tmp) / "base", Path(tmp) / "deep"
        base.mkdir()
        deep.mkdir()
        prepare(base, ph.volume, ph.labels, ph.phases)
        tile = (args.factor, 1, 1)
        prepare(deep, np.tile(ph.volume, tile), np.tile(ph.labels, tile), np.tile(ph.phases, tile))
        print(f"{'step':10s} {'base MB':>9s} {'x' + str(args.factor) + ' MB':>9s} {'ratio':>6s}")
        for step in ("threshold", "infer", "link", "particles"):
            a, b = peak_rss_mb(base, step), peak_rss_mb(deep, step)
            print(f"{step:10s} {a:9.0f} {b:9.0f} {b / a:6.2f}")


if __name__ == "__main__":
    main()
