"""Shared fixtures: the repository root, the project's default config, a tiny workflow config."""

from __future__ import annotations

import fcntl
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


#: A guard against a hung whole tiny run, s: one takes about 5 min alone and up to twice that beside the other worker.
FULL_RUN_TIMEOUT = 1800


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


def session_root(tmp_path_factory) -> Path:
    """A directory of this test session that every pytest-xdist worker of it sees (without xdist: the basetemp)."""
    root = tmp_path_factory.getbasetemp()
    return root.parent if os.environ.get("PYTEST_XDIST_WORKER") else root


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """One finished run of the whole workflow on the tiny config, shared read-only by the test modules. Made once
    per session: the first worker to ask makes it under a lock, the others wait for it and read it."""
    root = session_root(tmp_path_factory)
    work, status = root / "tiny_run" / "work", root / "tiny_run" / "status"
    with open(root / "tiny_run.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not status.exists():
            write_tiny_workdir(work, detecting=True)
            try:
                r = run_snakemake(work, timeout=FULL_RUN_TIMEOUT)
                status.write_text(f"{r.returncode}\n{r.stderr[-3000:]}")
            except BaseException as e:  # a timeout too: the waiting worker must not start again in this directory
                status.write_text(f"error\n{e!r}")
                raise
    returncode, stderr = status.read_text().split("\n", 1)
    assert returncode == "0", stderr
    return work


@pytest.fixture
def tiny_workdir(tmp_path) -> Path:
    return write_tiny_workdir(tmp_path / "work")


#: Test modules that run whole workflows, started first so that the other modules fill the second core while they
#: run (`make test` runs two pytest-xdist workers, ``--dist loadfile --no-loadscope-reorder``: a module is one unit).
#: The first two share :func:`tiny_run`; the kill-and-resume test makes its run beside it and reads it at the end.
HEAVY_MODULES = ("tests/test_workflow.py", "tests/test_reliability.py", "tests/test_slurm.py")


def pytest_collection_modifyitems(config, items):
    """Put the tests of :data:`HEAVY_MODULES` first, in that order (the rest keep theirs)."""
    rank = {module: i for i, module in enumerate(HEAVY_MODULES)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::", 1)[0], len(rank)))


def pytest_terminal_summary(terminalreporter):
    """Print the size of the bad-input suite (tests named *bad_input*) after every run."""
    reports = [r for key in ("passed", "failed") for r in terminalreporter.stats.get(key, [])
               if getattr(r, "when", "call") == "call"]
    n = sum(1 for r in reports if "bad_input" in r.nodeid)
    terminalreporter.write_line(f"bad-input cases run: {n}")
