"""Paper-scale end-to-end run: a side x side x depth tiled phantom through the default workflow's steps.

Usage: .venv/bin/python benchmarks/paper_volume.py [--side 1024] [--depth 256] [--model results/model/maskrcnn.pt]
       [--workdir DIR] [--tta-slices 2] [--steps build,import,...] [--threads 2] [--tile-px auto] [--json OUT.json]
Each step runs its workflow script (workflow/scripts/*.py, config/config.yaml) in a fresh subprocess; printed:
wall and CPU time, peak RSS and Mvoxel/s per step, seconds per slice with and without TTA, whether inference ran
in tiles (infer.tile_px) and which slices reached the model's detection cap (the inference's warnings), and the
totals against the paper-scale targets (60 min on 2 cores, 4 GiB peak RSS).
The volume is PhantomParams() (seed 1) tiled: mirrored in y and x, its part above the Al collector repeated in z.
--workdir keeps the files, so --steps can rerun a subset. `make bench` runs 256 x 256 x 32, `make bench-paper` 1024.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "workflow" / "scripts"
SAMPLE = "bench"
STEPS = ("build", "import", "threshold", "infer", "tta", "gather", "link", "contact_level", "particles",
         "diffusion", "damage", "statistics")
NOT_PIPELINE = ("build", "tta")  # the phantom's construction and the TTA side measurement: not in the totals
TARGET_S, TARGET_RSS_MIB = 3600.0, 4096.0


# ---------------------------------------------------------------------------------------------------------------
# child side: one step = one or more workflow scripts run with a stand-in for Snakemake's `snakemake` object


class _Named(list):
    """A list with named members, like Snakemake's input / output / params / wildcards / log."""

    def __init__(self, spec=None):
        spec = spec if spec is not None else []
        if isinstance(spec, dict):
            flat = []
            for v in spec.values():
                flat.extend(v if isinstance(v, list) else [v])
            super().__init__(flat)
            for k, v in spec.items():
                setattr(self, k, v)
        else:
            super().__init__(spec)


class _Snakemake:
    def __init__(self, job: dict, config: dict):
        for key in ("input", "output", "params", "wildcards", "log"):
            setattr(self, key, _Named(job.get(key)))
        self.threads = job.get("threads", 1)
        self.config = config


def run_step(spec_path: str) -> None:
    """Child process: run the jobs of one step (``--run-step``)."""
    import runpy

    sys.path.insert(0, str(ROOT / "src"))  # as workflow/rules/common.smk does
    spec = json.loads(Path(spec_path).read_text())
    if spec["step"] == "build":
        build_volume(**spec["build"])
    elif spec["step"] == "tta":
        time_tta(**spec["tta"])
    for job in spec["jobs"]:
        for p in job.get("log", []):
            Path(p).parent.mkdir(parents=True, exist_ok=True)
        out = job.get("output", {})
        for p in out.values() if isinstance(out, dict) else out:
            Path(p).parent.mkdir(parents=True, exist_ok=True)
        runpy.run_path(str(SCRIPTS / job["script"]), init_globals={"snakemake": _Snakemake(job, spec["config"])},
                       run_name="__main__")
    Path(spec["rss_out"]).write_text(str(peak_rss_mib()))


def peak_rss_mib() -> float:
    """This process's peak RSS (MiB) since its exec: VmHWM. Not ``ru_maxrss``: Linux carries the parent's
    peak RSS over exec into the child's ``ru_maxrss`` (and so into ``os.wait4``'s), whatever the child uses."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # no procfs: an upper bound


def mirror_index(n_out: int, n_in: int):
    """Indices 0..n_out-1 into an axis of n_in, mirrored at each end (0 1 .. n-1 n-1 .. 1 0 0 1 ..)."""
    import numpy as np

    i = np.arange(n_out) % (2 * n_in)
    return np.where(i < n_in, i, 2 * n_in - 1 - i)


def build_volume(source: str, info: str, side: int, depth: int, seed: int, preset: str, slab: int) -> None:
    """Write the tiled phantom to ``source`` (HDF5 dataset ``raw``, float32) slab by slab, and what the tiling
    plants (particles, sections per slice) to ``info`` (JSON). Memory: the small base phantom and one slab."""
    import h5py
    import numpy as np

    from detachment import io
    from detachment.phantom import PhantomParams, generate_phantom, params_dict
    from detachment.phases import AL
    from detachment.presets import preset_params

    params = PhantomParams.from_dict(preset_params(params_dict(PhantomParams()), preset), where=f"preset {preset}")
    ph = generate_phantom(params, seed=seed)
    nz, ny, nx = ph.volume.shape
    al = (ph.phases == AL).mean(axis=(1, 2))
    top = int(np.argmin(al > 0.5))  # first slice that is not mostly Al: the collector is [0, top)
    # z: the collector once, then the part above it repeated (mirroring would set each particle resting on the
    # collector onto its own reflection, one particle of twice the height)
    zmap = np.where(np.arange(depth) < top, np.arange(depth), top + (np.arange(depth) - top) % (nz - top))
    iy, ix = mirror_index(side, ny), mirror_index(side, nx)
    shape = (depth, side, side)
    with io.atomic_output(source) as tmp, h5py.File(tmp, "w") as f:
        d = f.create_dataset("raw", shape=shape, dtype=np.float32, chunks=io.slab_chunks(shape))
        for z0, z1 in io.slab_ranges(depth, slab):
            d[z0:z1] = ph.volume[zmap[z0:z1]][:, iy][:, :, ix]
    # planted particles: each (label, y-tile, x-tile, z-repeat) is one (a particle cut by a mirror seam and its
    # reflection are counted twice: they form one object)
    ty, tx = np.arange(side) // ny, np.arange(side) // nx
    rep = np.where(np.arange(depth) < top, -1, (np.arange(depth) - top) // (nz - top))
    n_planted = 0
    for r in np.unique(rep[rep >= 0]):
        block = ph.labels[np.unique(zmap[rep == r])]
        for a in np.unique(ty):
            for b in np.unique(tx):
                lab = block[:, iy[ty == a]][:, :, ix[tx == b]]
                n_planted += len(np.unique(lab[lab > 0]))
    n_tiles = int(ty.max() + 1) * int(tx.max() + 1)
    per_slice = []
    for z in range(nz):  # cross-sections per slice of the base, tiled the same way
        lab = ph.labels[z][iy][:, ix]
        key = lab.astype(np.int64) * n_tiles + (ty[:, None] * (tx.max() + 1) + tx[None, :])
        per_slice.append(len(np.unique(key[lab > 0])))
    per_slice = np.asarray(per_slice)[zmap]
    Path(info).write_text(json.dumps({
        "base_shape": [nz, ny, nx], "collector_top": top, "base_particles": len(ph.table),
        "planted_particles": int(n_planted), "sections_per_slice_max": int(per_slice.max()),
        "sections_per_slice_mean": float(per_slice[per_slice > 0].mean()), "voxel_size_um": params.voxel_size_um,
        "dense_slices": [int(z) for z in np.argsort(-per_slice, kind="stable")[:64]]}))


def time_tta(volume: str, weights: str, meta: str, out: str, slices: list, settings: dict, threads: int) -> None:
    """Seconds per slice of the workflow's inference on ``slices`` without and with TTA (after a one-slice
    warm-up; rescaled and tiled as the workflow does), detections per slice, tiles per slice, the detection-cap
    warnings and the peak RSS after each (RSS only grows: the TTA figure includes the plain pass's)."""
    import h5py
    import numpy as np
    import torch

    from detachment import io
    from detachment.cnn.tiles import resolve_tile_px, tile_overlap, tile_windows
    from detachment.inference import model_slices
    from detachment.maskrcnn import load_model, predict, scale_factor, select_device

    warnings = _WarningCount()
    logging.getLogger("detachment").addHandler(warnings)

    torch.set_num_threads(max(1, threads))
    dev = select_device(settings["device"])
    model, m = load_model(weights, meta, dev)
    context = int(m["model"].get("context_slices", 0))
    with h5py.File(volume, "r") as f:
        d = f[io.VOLUME_DATASET]
        images = [model_slices(d, z, z + 1, context) for z in slices]
    images = np.concatenate(images)
    factor = scale_factor(io.read_volume_info(volume)[1], m, settings.get("rescale", "auto"))
    tiling = {"tile_px": resolve_tile_px(settings.get("tile_px", "auto")), "overlap_px": tile_overlap(m)}
    tiles = tile_windows(images.shape[-2:], factor, **tiling)
    kw = dict(device=dev, batch_size=settings["batch_size"], score_threshold=settings["candidate_threshold"],
              mask_threshold=settings["mask_threshold"], min_visible_fraction=settings["min_visible_fraction"],
              scale=factor, max_detections=settings.get("max_detections"), **tiling)
    predict(model, images[:1], tta=False, **kw)  # warm-up: allocators, kernels
    result = {"slices": [int(z) for z in slices], "tiles_per_slice": len(tiles) if tiles else 1, **tiling}
    for tta in (False, True):
        warnings.messages.clear()
        t0 = time.perf_counter()
        labels, rows = predict(model, images, tta=tta, **kw)
        dt = time.perf_counter() - t0
        det = [sum(1 for r in rows if r["index"] == i and r["score"] >= settings["score_threshold"])
               for i in range(len(images))]
        result["tta" if tta else "plain"] = {
            "s_per_slice": dt / len(images), "candidates_per_slice": [int(x.max()) for x in labels],
            "detections_per_slice": det, "cap_warnings": list(warnings.messages), "peak_rss_mib": peak_rss_mib()}
    Path(out).write_text(json.dumps(result))


class _WarningCount(logging.Handler):
    """Keeps the messages of the warnings logged (the inference's detection-cap warnings)."""

    def __init__(self):
        super().__init__(level=logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def infer_log_findings(log_path: Path) -> dict:
    """From the infer step's log (its last run): how slices were predicted (whole or in tiles, the inference's
    own line) and the slices that reached the model's detection cap (its warnings)."""
    if not log_path.exists():
        return {"tiling": "not logged", "capped": []}
    lines = log_path.read_text().splitlines()
    starts = [i for i, line in enumerate(lines) if "as the model sees them" in line]
    lines = lines[starts[-1]:] if starts else lines
    tiling = re.search(r"(whole )?slices of \[.*", lines[0]).group(0) if starts else "not logged"
    capped = [line.split("WARNING ", 1)[1].split(": ", 1)[1] for line in lines
              if " WARNING " in line and "detections" in line and "cap" in line]
    return {"tiling": tiling, "tiled": " tiles of " in tiling, "capped": capped}


# ---------------------------------------------------------------------------------------------------------------
# parent side


def load_config() -> dict:
    """config/config.yaml with the schema's defaults filled in (what the workflow sees)."""
    import yaml

    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    try:
        from snakemake.utils import validate

        validate(config, str(ROOT / "workflow" / "schemas" / "config.schema.yaml"), set_default=True)
    except ImportError:
        config["threshold"].setdefault("on_implausible", "stop")
    config["science"]["on_ambiguous_contacts"] = "warn"  # the benchmark times the steps, ambiguous or not
    return config


class Plan:
    """Paths of one benchmark run (the workflow's layout under ``workdir``) and each step's jobs."""

    def __init__(self, workdir: Path, args, config: dict):
        self.w, self.args, self.config = workdir, args, config
        r = workdir / "results" / SAMPLE
        self.source, self.info = workdir / "source.h5", workdir / "build.json"
        self.volume, self.phases = r / "volume.h5", r / "phases.h5"
        self.slab_file, self.slices = r / "cnn" / "slabs" / "1-of-1.h5", r / "cnn" / "slices.h5"
        self.particles_h5, self.links = r / "cnn" / "particles.h5", r / "cnn" / "links.csv"
        self.contact = r / "contact_level.csv"
        self.particles, self.diffusion = r / "particles.csv", r / "diffusion.csv"
        self.tta_out = workdir / "tta.json"
        self.r, self.logs = r, workdir / "logs"
        self.weights = Path(args.model)
        self.meta = self.weights.with_suffix(".json")

    def log(self, name: str) -> list[str]:
        return [str(self.logs / f"{name}.log")]

    def jobs(self, step: str) -> tuple[list[dict], dict]:
        """(workflow-script jobs, extra spec) of a step, with the rules' inputs, outputs and params."""
        c, r, s = self.config, self.r, str
        if step == "build":
            return [], {"build": {"source": s(self.source), "info": s(self.info), "side": self.args.side,
                                  "depth": self.args.depth, "seed": self.args.seed, "preset": self.args.preset,
                                  "slab": c["io"]["slab"]}}
        if step == "import":
            return [{"script": "import_volume.py", "output": {"volume": s(self.volume)}, "log": self.log(step),
                     "params": {"fields": {"source": s(self.source), "dataset": "raw",
                                           "voxel_size_um": self.built()["voxel_size_um"], "collector_side": "z0",
                                           "sheet": "benchmark"},
                                "slab": c["io"]["slab"]}, "wildcards": {"sample": SAMPLE}}], {}
        if step == "threshold":
            return [{"script": "threshold_phases.py", "input": {"volume": s(self.volume)}, "log": self.log(step),
                     "output": {"phases": s(self.phases), "histogram": s(r / "histogram.csv"),
                                "fwhm": s(r / "phase_fwhm.csv"), "qc": s(r / "phase_qc.csv"),
                                "figure": s(r / "fig1_phases.png")},
                     "params": {"settings": {k: v for k, v in c["threshold"].items() if k != "on_implausible"}},
                     "wildcards": {"sample": SAMPLE}, "threads": self.args.threads}], {}
        if step == "infer":
            settings = self.infer_settings()
            if self.args.volume_tta != "config":
                settings["tta"] = self.args.volume_tta == "on"
            return [{"script": "infer_slab.py", "output": [s(self.slab_file)], "log": self.log(step),
                     "input": {"volume": s(self.volume), "weights": s(self.weights), "meta": s(self.meta)},
                     "params": {"settings": settings}, "wildcards": {"sample": SAMPLE, "scatteritem": "1-of-1"},
                     "threads": self.args.threads}], {}
        if step == "tta":
            dense = [z for z in self.built()["dense_slices"] if z < self.args.depth][: self.args.tta_slices]
            return [], {"tta": {"volume": s(self.volume), "weights": s(self.weights), "meta": s(self.meta),
                                "out": s(self.tta_out), "slices": sorted(dense), "settings": self.infer_settings(),
                                "threads": self.args.threads}}
        if step == "gather":
            return [{"script": "gather_slices.py", "input": {"slabs": [s(self.slab_file)], "volume": s(self.volume)},
                     "output": {"labels": s(self.slices), "table": s(r / "cnn" / "slices.csv")},
                     "log": self.log(step)}], {}
        if step == "link":
            link = dict(c["link"])
            if link.get("min_track_score") is None:
                link["min_track_score"] = c["infer"]["score_threshold"]
            return [{"script": "link_slices.py", "input": {"slices": s(self.slices)},
                     "output": {"particles": s(self.particles_h5), "links": s(self.links)},
                     "params": {"settings": link}, "log": self.log(step)}], {}
        common = {"particles": s(self.particles_h5), "links": s(self.links), "phases": s(self.phases),
                  "volume": s(self.volume)}
        sc = c["science"]
        if step == "contact_level":  # an ambiguous reading is logged, not stopped (load_config): timed either way
            return [{"script": "contact_level.py", "input": {**common, "qc": s(r / "phase_qc.csv")},
                     "output": {"table": s(self.contact), "figure": s(r / "contact_level.png")},
                     "params": {"max_spread": sc["contact_max_spread"], "max_ambiguity": sc["contact_max_ambiguity"],
                                "partition": sc["envelope_partition"], "sharpen": sc["contact_sharpen"],
                                "spill": sc["contact_spill"], "gap_from_intensity": sc["contact_gap_from_intensity"],
                                "partial_volume": sc["contact_partial_volume"]},
                     "log": self.log(step), "wildcards": {"sample": SAMPLE}}], {}
        if step == "particles":  # one part (the workflow runs science.particle_parts of them in parallel)
            part = r / "parts" / "particles_1-of-1.csv"
            return [{"script": "particles_part.py", "input": {**common, "contact_level": s(self.contact)},
                     "output": [s(part)], "log": self.log(step), "wildcards": {"sample": SAMPLE,
                                                                               "scatteritem": "1-of-1"},
                     "params": {"probe": sc["contact_probe_vox"], "gap_from_intensity":
                                sc["contact_gap_from_intensity"], "contact_level": sc["contact_level"],
                                "partial_volume": sc["contact_partial_volume"], "partition": sc["envelope_partition"]}},
                    {"script": "gather_table.py", "input": [s(part)], "output": [s(self.particles)],
                     "log": self.log(step)}], {}
        if step == "diffusion":
            part = r / "parts" / "diffusion_1-of-1.csv"
            return [{"script": "diffusion_part.py", "input": common, "output": [s(part)], "log": self.log(step),
                     "wildcards": {"sample": SAMPLE, "scatteritem": "1-of-1"}},
                    {"script": "diffusion.py", "input": {"parts": [s(part)], **common}, "log": self.log(step),
                     "output": {"table": s(self.diffusion), "figure": s(r / "fig3_diffusion.png")}}], {}
        if step == "damage":
            return [{"script": "damage.py", "log": self.log(step), "wildcards": {"sample": SAMPLE},
                     "input": {"table": s(self.particles), "particles": s(self.particles_h5),
                               "phases": s(self.phases), "volume": s(self.volume)},
                     "output": {"table": s(r / "damage_profile.csv"), "figure": s(r / "fig2_damage.png")},
                     "params": {"bin_um": sc["damage_bin_um"]}}], {}
        if step == "statistics":
            # the workflow compares C-rates across samples: the one sample stands in for both (same rows)
            st = self.w / "results" / "statistics"
            two = [s(self.particles)] * 2
            return [{"script": "statistics.py", "log": self.log(step),
                     "input": {"particles": two, "diffusion": [s(self.diffusion)] * 2,
                               "histograms": [s(r / "histogram.csv")] * 2, "fwhm": [s(r / "phase_fwhm.csv")] * 2,
                               "contact_level": [s(self.contact)] * 2, "qc": [s(r / "phase_qc.csv")] * 2,
                               "self_consistency": []},  # the paper-scale run does not read it again
                     "output": {k: s(st / v) for k, v in (
                         ("all_particles", "particles_all.csv"), ("by_rate", "detachment_by_c_rate.csv"),
                         ("by_cell", "detachment_by_cell.csv"), ("by_size", "detachment_by_size.csv"),
                         ("correlations", "correlations.csv"), ("fig4", "fig4.png"), ("fig8", "fig8.png"))},
                     "params": {"samples": [f"{SAMPLE}_1C", f"{SAMPLE}_C10"], "c_rates": ["1C", "C/10"],
                                "cells": [f"{SAMPLE}_a", f"{SAMPLE}_b"], "size_bins": sc["size_bins"],
                                "seed": c["seed"], "exclude_border": sc["exclude_border"]}}], {}
        raise ValueError(step)

    def infer_settings(self) -> dict:
        """The config's ``infer`` section, with ``--tile-px`` where given."""
        settings = dict(self.config["infer"])
        if self.args.tile_px != "config":
            settings["tile_px"] = None if self.args.tile_px == "null" else \
                (self.args.tile_px if self.args.tile_px == "auto" else int(self.args.tile_px))
        return settings

    def built(self) -> dict:
        return json.loads(self.info.read_text())


def run_child(plan: Plan, step: str) -> dict:
    """Run one step in a fresh interpreter; its wall time, CPU time (user + system) and peak RSS."""
    try:
        jobs, extra = plan.jobs(step)
    except FileNotFoundError as e:
        raise RuntimeError(f"step {step} needs {e.filename}: run the steps before it (same --workdir)") from None
    made = set()  # outputs of the step's earlier jobs
    for job in jobs:
        for p in _Named(job.get("input")):
            if p not in made and not Path(p).exists():
                raise RuntimeError(f"step {step} needs {p}: run the steps before it (same --workdir)")
        made.update(_Named(job.get("output")))
    config = dict(plan.config)
    config["threshold"] = {**config["threshold"], "on_implausible": "warn"}  # report, never stop the benchmark
    spec_path = plan.w / "specs" / f"{step}.json"
    spec_path.parent.mkdir(parents=True, exist_ok=True)
    rss_out = spec_path.with_suffix(".rss")
    rss_out.unlink(missing_ok=True)
    spec_path.write_text(json.dumps({"step": step, "jobs": jobs, "config": config, "rss_out": str(rss_out),
                                     **extra}))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT / "src"),
                                                                     os.environ.get("PYTHONPATH")])))
    stderr = plan.logs / f"{step}.stderr"
    stderr.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(stderr, "w") as err:
        proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--run-step", str(spec_path)],
                                env=env, stdout=err, stderr=err, cwd=plan.w)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if status != 0:
        logs = [stderr] + [Path(p) for j in jobs for p in j.get("log", [])]
        tail = "\n".join(p.read_text()[-3000:] for p in dict.fromkeys(logs) if p.exists())
        raise RuntimeError(f"step {step} failed (exit status {status}); logs in {plan.logs}:\n{tail}")
    return {"step": step, "wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime,
            "peak_rss_mib": float(rss_out.read_text())}


def report_after(plan: Plan, step: str, row: dict) -> list[str]:
    """What a finished step found that bears on scaling or sanity (printed as it finishes and again at the end);
    adds what it measured to ``row``."""
    import pandas as pd

    lines = []
    if step in ("contact_level", "particles", "diffusion") and plan.links.exists():
        n = len(pd.read_csv(plan.links))
        row["particles"] = n
        if n:
            lines.append(f"{step}: {n} particles, {row['wall_s'] / n * 1e3:.0f} ms wall / "
                         f"{row['cpu_s'] / n * 1e3:.0f} ms CPU per particle (interpreter start included)")
    if step == "build":
        b = plan.built()
        lines.append(f"build: {b['planted_particles']} planted particles (base {b['base_particles']}, collector "
                     f"z < {b['collector_top']}), up to {b['sections_per_slice_max']} particle sections per slice "
                     f"(mean {b['sections_per_slice_mean']:.0f} where any)")
    elif step == "threshold":
        qc = pd.read_csv(plan.r / "phase_qc.csv")
        verdict = "passed" if qc.passed.all() else "FAILED (on_implausible: warn; the benchmark goes on)"
        lines.append(f"threshold: plausibility {verdict}: " + ", ".join(
            f"{row.check} {row.value:.3f}{'' if row.passed else ' < ' + str(row.bound)}" for row in qc.itertuples()))
    elif step in ("infer", "gather"):
        lines += inference_findings(plan, step, row)
    elif step == "tta":
        t = json.loads(plan.tta_out.read_text())
        row["tta"] = t
        p, q = t["plain"], t["tta"]
        side = plan.args.side
        lines.append(f"inference per {side}x{side} slice (slices {t['slices']}, batch "
                     f"{plan.config['infer']['batch_size']}, {plan.args.threads} threads): without TTA "
                     f"{p['s_per_slice']:.2f} s, with TTA {q['s_per_slice']:.2f} s (x{q['s_per_slice'] / p['s_per_slice']:.1f}); "
                     f"detections per slice {p['detections_per_slice']} / {q['detections_per_slice']}; "
                     f"{t['tiles_per_slice']} tile(s) per slice (infer.tile_px {t['tile_px']}, overlap "
                     f"{t['overlap_px']} px); detection-cap warnings {len(p['cap_warnings'])} / "
                     f"{len(q['cap_warnings'])}; peak RSS after the plain pass {p['peak_rss_mib']:.0f} MiB, after "
                     f"TTA {q['peak_rss_mib']:.0f} MiB")
    elif step == "link":
        n = len(pd.read_csv(plan.links))
        b = plan.built() if plan.info.exists() else {}
        lines.append(f"link: {n} particles (planted {b.get('planted_particles', '?')})")
    elif step == "contact_level":
        t = pd.read_csv(plan.contact)
        lines.append(f"contact level: {t.level.iloc[0]:.4f} ({'fitted' if t.fitted.iloc[0] else 'fallback'}, "
                     f"{int(t.n_faces.iloc[0])} faces)")
    elif step == "statistics":
        lines.append("statistics: the one sample stands in for both C-rates (1C and C/10: the same rows) so that "
                     "the workflow's statistics script runs unchanged")
    return lines


def inference_findings(plan: Plan, step: str, row: dict) -> list[str]:
    """:func:`report_after`'s lines for the infer step (tiling, slices at the detection cap, from its log) and the
    gather step (candidates and detections per slice against the model's cap and the planted sections)."""
    import pandas as pd

    found = infer_log_findings(Path(plan.log("infer")[0]))
    if step == "infer":
        row["tiled"], row["capped_slices"] = found.get("tiled"), len(found["capped"])
        return [f"infer: {found['tiling']}",
                f"infer: {len(found['capped'])} slices reached the model's detection cap" +
                (f" (particles lost there), e.g. {found['capped'][0]}" if found["capped"] else "")]
    t = pd.read_csv(plan.r / "cnn" / "slices.csv")
    cap = model_cap(plan)
    per = t.groupby("z").size()
    det = t[t.detection].groupby("z").size()
    b = plan.built() if plan.info.exists() else {}
    lines = [f"infer: {len(t)} candidates, {int(t.detection.sum())} detections; per slice at most "
             f"{per.max() if len(per) else 0} candidates / {det.max() if len(det) else 0} detections; "
             f"model cap {cap['box_detections_per_img']} detections and {cap['rpn_post_nms_top_n_test']} "
             f"proposals per image (per tile where tiled); planted sections per slice up to "
             f"{b.get('sections_per_slice_max', '?')}"]
    if b and not found.get("tiled") and isinstance(cap["box_detections_per_img"], int) and \
            b["sections_per_slice_max"] > cap["box_detections_per_img"]:
        lines.append(f"  WARNING: a slice holds more particles ({b['sections_per_slice_max']}) than the model "
                     f"may return ({cap['box_detections_per_img']}) and slices were predicted whole: "
                     f"detections are capped at this slice size")
    return lines


def model_cap(plan: Plan) -> dict:
    """Detections and proposals the model keeps per image (from its metadata: the parent never imports torch,
    whose memory would not count anyway, see :func:`peak_rss_mib`, but would slow every fork)."""
    meta = json.loads(plan.meta.read_text())["model"]
    return {k: meta.get(k, "?") for k in ("box_detections_per_img", "rpn_post_nms_top_n_test")}


def print_table(rows: list[dict], voxels: int) -> None:
    if not rows:
        return
    print(f"\n{'step':14s} {'wall s':>9s} {'CPU s':>9s} {'peak RSS MiB':>13s} {'Mvoxel/s':>9s}")
    for r in rows:
        mark = " (not in total)" if r["step"] in NOT_PIPELINE else ""
        print(f"{r['step']:14s} {r['wall_s']:9.1f} {r['cpu_s']:9.1f} {r['peak_rss_mib']:13.0f} "
              f"{voxels / r['wall_s'] / 1e6:9.2f}{mark}")
    pipe = [r for r in rows if r["step"] not in NOT_PIPELINE]
    if pipe:
        wall, cpu = sum(r["wall_s"] for r in pipe), sum(r["cpu_s"] for r in pipe)
        rss = max(r["peak_rss_mib"] for r in pipe)
        print(f"{'total':14s} {wall:9.1f} {cpu:9.1f} {rss:13.0f} {voxels / wall / 1e6:9.2f}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--side", type=int, default=1024, help="slice size in px (y = x)")
    ap.add_argument("--depth", type=int, default=256, help="slices")
    ap.add_argument("--model", default=str(ROOT / "results" / "model" / "maskrcnn.pt"),
                    help="weights; the metadata is the .json beside them")
    ap.add_argument("--workdir", help="keep every file here (default: a temporary folder, removed)")
    ap.add_argument("--tta-slices", type=int, default=2, help="slices timed with and without TTA (0: none)")
    ap.add_argument("--steps", default=",".join(STEPS), help="comma list, from: " + ",".join(STEPS))
    ap.add_argument("--threads", type=int, default=2, help="threads of the thresholding and inference steps")
    ap.add_argument("--volume-tta", choices=("config", "on", "off"), default="config",
                    help="TTA of the whole-volume inference (default: the config's infer.tta)")
    ap.add_argument("--tile-px", default="config", help="infer.tile_px: auto, null, px, or config (default)")
    ap.add_argument("--preset", default="default", help="phantom preset (detachment.presets) of the tiled base")
    ap.add_argument("--seed", type=int, default=1, help="phantom seed")
    ap.add_argument("--json", help="write the step table and findings here")
    ap.add_argument("--skip-without-model", action="store_true",
                    help="exit 0 with a note when the model does not exist (make bench before make run)")
    ap.add_argument("--run-step", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.run_step:
        run_step(args.run_step)
        return 0
    steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    unknown = sorted(set(steps) - set(STEPS))
    if unknown:
        ap.error(f"--steps: unknown {unknown}; known: {', '.join(STEPS)}")
    if args.tta_slices <= 0 and "tta" in steps:
        steps.remove("tta")
    steps = [s for s in STEPS if s in steps]  # in pipeline order
    needs_model = {"infer", "tta", "gather"} & set(steps)
    if needs_model and not (Path(args.model).exists() and Path(args.model).with_suffix(".json").exists()):
        msg = f"no trained model at {args.model} (and its .json): run `make run` first or pass --model"
        if args.skip_without_model:
            print(f"skipped: {msg}")
            return 0
        ap.error(msg)
    args.model = str(Path(args.model).resolve())
    config = load_config()
    tmp = None
    if args.workdir:
        workdir = Path(args.workdir).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.mkdtemp(prefix="paper_volume_")
        workdir = Path(tmp)
    plan = Plan(workdir, args, config)
    voxels = args.side * args.side * args.depth
    tta = config["infer"]["tta"] if args.volume_tta == "config" else args.volume_tta == "on"
    print(f"volume {args.depth} x {args.side} x {args.side} ({voxels / 1e6:.1f} Mvoxel, float32 "
          f"{voxels * 4 / 2**30:.2f} GiB); model {args.model}; whole-volume inference TTA {'on' if tta else 'off'} "
          f"(infer.tta {config['infer']['tta']}), {args.threads} threads; workdir {workdir}", flush=True)
    rows, notes = [], []
    try:
        for step in steps:
            r = run_child(plan, step)
            rows.append(r)
            print(f"  {step:14s} {r['wall_s']:8.1f} s  {r['peak_rss_mib']:7.0f} MiB", flush=True)
            for line in report_after(plan, step, r):
                print("  " + line, flush=True)
                notes.append(line)
    except RuntimeError as e:
        print(str(e), file=sys.stderr)
        print_table(rows, voxels)
        return 1
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    print_table(rows, voxels)
    result = {"side": args.side, "depth": args.depth, "voxels": voxels, "tta_volume": tta, "steps": rows,
              "notes": notes}
    if notes:
        print("\n" + "\n".join(notes))
    pipe = [r for r in rows if r["step"] not in NOT_PIPELINE]
    if pipe:
        wall = sum(r["wall_s"] for r in pipe)
        rss = max(r["peak_rss_mib"] for r in pipe)
        worst = max(pipe, key=lambda r: r["peak_rss_mib"])["step"]
        subset = "" if len(pipe) == len(STEPS) - len(NOT_PIPELINE) else "; a subset of the steps"
        print(f"\npipeline ({', '.join(r['step'] for r in pipe)}{subset}; one job at a time, where the workflow "
              f"runs infer.slabs and science.particle_parts jobs side by side): {wall / 60:.1f} min "
              f"({'within' if wall <= TARGET_S else 'OVER'} the {TARGET_S / 60:.0f} min target), peak RSS "
              f"{rss / 1024:.2f} GiB in {worst} ({'within' if rss <= TARGET_RSS_MIB else 'OVER'} the "
              f"{TARGET_RSS_MIB / 1024:.0f} GiB target)")
        result.update(total_wall_s=wall, peak_rss_mib=rss)
    load = os.getloadavg()[0]
    if load > (os.cpu_count() or 1):
        print(f"note: the machine is busy (load average {load:.1f} on {os.cpu_count()} cores): wall times are "
              f"inflated; CPU s (user + system of the step's process) is the steadier measure")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
