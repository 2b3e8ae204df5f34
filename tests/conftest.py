"""Shared fixtures: the repository root, the project's default config, a tiny workflow config."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from detachment.config_docs import with_defaults

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))

TINY_PHANTOM = {
    "shape_zyx": [24, 64, 64],
    "voxel_size_um": 0.5,
    "n_particles": 8,
    "diameter_median_um": 5.0,
    "diameter_min_um": 3.5,
    "diameter_max_um": 8.0,
}


@pytest.fixture(scope="session")
def default_config() -> dict:
    """``config/config.yaml`` completed with the schema's defaults, as the workflow sees it."""
    with open(ROOT / "config" / "config.yaml") as f:
        return with_defaults(yaml.safe_load(f))


TINY_SECTIONS = {
    "annotations": {"margin_slices": 1},
    "augment": {"copies": 2, "tile": 64},
    "model": {"fpn_channels": 16, "box_head_width": 32, "mask_head_width": 8},
    "train": {"epochs": 2, "max_iterations_per_epoch": 2, "batch_size": 2, "threads": 1, "warmup_iterations": 1},
    # tta is unit-tested (test_maskrcnn); a barely trained model's fused scores stay near 0.3 and would leave
    # the tiny run without particles, and four passes would lengthen every tiny run
    "infer": {"slabs": 2, "tta": False, "score_threshold": 0.7},
}

# The full tiny runs (the shared one, and those the reliability tests compare with it) train long enough for
# the CNN to find particles, with the schema's head widths: about 500 steps, a minute on 2 cores. Their CNN,
# linking and science are bounded against the truth in test_workflow. Other tiny work directories keep the
# few-step training above.
DETECTING_SECTIONS = {
    "augment": {"copies": 10},
    "train": {"epochs": 8, "max_iterations_per_epoch": 60, "warmup_iterations": 20, "score_threshold": 0.5},
    "infer": {"score_threshold": 0.5},
}


def write_tiny_workdir(path: Path, detecting: bool = False, **overrides) -> Path:
    """A work directory with a tiny config (small phantoms, a few training steps) and the default sheet.

    ``detecting``: train as :data:`DETECTING_SECTIONS` says, with the schema's model. ``overrides`` replace
    whole config sections.
    """
    path.mkdir(parents=True, exist_ok=True)
    with open(ROOT / "config" / "config.yaml") as f:
        cfg = with_defaults(yaml.safe_load(f))
    cfg["samples"] = "samples.tsv"
    cfg["phantom"]["defaults"].update(TINY_PHANTOM)
    for section, values in TINY_SECTIONS.items():
        if not (detecting and section == "model"):
            cfg[section].update(values)
    for section, values in (DETECTING_SECTIONS.items() if detecting else ()):
        cfg[section].update(values)
    for key, value in overrides.items():
        cfg[key] = value
    (path / "config.yaml").write_text(yaml.safe_dump(cfg))
    shutil.copy(ROOT / "config" / "samples.tsv", path / "samples.tsv")
    return path


def snakemake_command(workdir: Path, *args: str) -> tuple[list[str], dict]:
    """The command line and environment that run the project's Snakefile in ``workdir`` with its config.yaml."""
    cmd = [SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "--directory", str(workdir),
           "--configfile", str(workdir / "config.yaml"), "--cores", "2", *args]
    return cmd, dict(os.environ, PYTHONUNBUFFERED="1")


def run_snakemake(workdir: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run the project's Snakefile in ``workdir`` with its config.yaml; returns the completed process."""
    cmd, env = snakemake_command(workdir, *args)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=workdir)


def dag_inputs(workdir: Path) -> dict[str, set[str]]:
    """Per rule, every input file of its jobs still to run (from a dry run's job listing)."""
    r = run_snakemake(workdir, "-n")
    assert r.returncode == 0, r.stderr[-2000:]
    out: dict[str, set[str]] = {}
    rule = None
    for line in (r.stdout + r.stderr).splitlines():
        head = re.match(r"^(?:local)?rule (\w+):", line)
        if head:
            rule = head.group(1)
            out.setdefault(rule, set())
        elif rule and line.strip().startswith("input:"):
            out[rule].update(f.strip() for f in line.split(":", 1)[1].split(","))
    return out


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """One finished run of the whole workflow on the tiny config, shared read-only by the test modules."""
    work = write_tiny_workdir(tmp_path_factory.mktemp("tiny_run") / "work", detecting=True)
    r = run_snakemake(work)
    assert r.returncode == 0, r.stderr[-3000:]
    return work


@pytest.fixture
def tiny_workdir(tmp_path) -> Path:
    return write_tiny_workdir(tmp_path / "work")


def pytest_terminal_summary(terminalreporter):
    """Print the size of the bad-input suite (tests named *bad_input*) after every run."""
    reports = [r for key in ("passed", "failed") for r in terminalreporter.stats.get(key, [])
               if getattr(r, "when", "call") == "call"]
    n = sum(1 for r in reports if "bad_input" in r.nodeid)
    terminalreporter.write_line(f"bad-input cases run: {n}")
