"""The benchmarks that replay the workflow's scripts give them what the rules give them."""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _paper_volume():
    spec = importlib.util.spec_from_file_location("paper_volume", ROOT / "benchmarks" / "paper_volume.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_paper_volume_gives_each_replayed_script_every_input_and_param_it_reads(tmp_path):
    """Each script the benchmark replays reads ``snakemake.input.<name>``, ``.output.<name>``,
    ``.params.<name>`` and ``.wildcards.<name>``: every such name must be in the job the benchmark builds
    (a rule that gained an input or a param, and a benchmark that did not, fails here, not at bench time)."""
    pv = _paper_volume()
    args = argparse.Namespace(side=64, depth=16, seed=1, preset="default", model=str(tmp_path / "m.pt"),
                              volume_tta="config", tta_slices=1, threads=1, tile_px="config")
    plan = pv.Plan(tmp_path, args, pv.load_config())
    plan.info.write_text(json.dumps({"voxel_size_um": [0.5, 0.5, 0.5], "dense_slices": [0]}))
    checked = 0
    for step in pv.STEPS:
        jobs, _ = plan.jobs(step)
        for job in jobs:
            text = (ROOT / "workflow" / "scripts" / job["script"]).read_text()
            for kind, name in set(re.findall(r"snakemake\.(input|output|params|wildcards)\.(\w+)", text)):
                given = job.get(kind)
                assert isinstance(given, dict) and name in given, (step, job["script"], kind, name)
                checked += 1
    assert checked > 20
