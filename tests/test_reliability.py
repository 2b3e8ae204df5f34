"""Crash and resume, determinism: the tiny workflow killed with SIGKILL at several points and rerun."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from .conftest import ROOT, SNAKEMAKE, run_snakemake, write_tiny_workdir

pytestmark = pytest.mark.slow


@pytest.fixture
def reference_run(tiny_run):
    return tiny_run


def result_files(work: Path) -> dict[str, Path]:
    return {str(p.relative_to(work)): p for p in sorted((work / "results").rglob("*"))
            if p.is_file() and p.suffix in (".csv", ".h5") and not p.name.startswith(".")}


def assert_same_results(a: Path, b: Path) -> None:
    fa, fb = result_files(a), result_files(b)
    assert fa.keys() == fb.keys()
    for name in fa:
        if name.endswith(".csv"):
            pd.testing.assert_frame_equal(pd.read_csv(fa[name]), pd.read_csv(fb[name]), obj=name)
        else:
            with h5py.File(fa[name]) as x, h5py.File(fb[name]) as y:
                assert set(x) == set(y), name
                for k in x:
                    np.testing.assert_array_equal(x[k][...], y[k][...], err_msg=f"{name}:{k}")


def test_same_seed_gives_identical_tables_and_label_volumes(reference_run, tmp_path):
    again = write_tiny_workdir(tmp_path / "again")
    assert run_snakemake(again).returncode == 0
    assert_same_results(reference_run, again)


def test_other_seed_gives_another_phantom(tmp_path):
    other = write_tiny_workdir(tmp_path / "other", seed=99)
    r = run_snakemake(other, "--until", "make_phantom")
    assert r.returncode == 0, r.stderr[-2000:]
    with h5py.File(other / "results/cell_1C/truth.h5") as f:
        labels = f["labels"][...]
    ref = write_tiny_workdir(tmp_path / "ref")
    assert run_snakemake(ref, "--until", "make_phantom").returncode == 0
    with h5py.File(ref / "results/cell_1C/truth.h5") as f:
        assert not np.array_equal(labels, f["labels"][...])


def _run_and_kill(work: Path, ready, timeout: float = 300) -> None:
    """Start the workflow, SIGKILL its whole process group as soon as ``ready(work)`` holds."""
    cmd = [SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "--directory", str(work), "--configfile",
           str(work / "config.yaml"), "--cores", "2"]
    proc = subprocess.Popen(cmd, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    t0 = time.time()
    try:
        while not ready(work):
            if proc.poll() is not None:
                pytest.fail("the workflow finished before the kill point was reached")
            if time.time() - t0 > timeout:
                pytest.fail("kill point not reached in time")
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _all_h5_readable(work: Path) -> None:
    """No output of a killed job may look complete: every final-named HDF5 file opens and reads."""
    for p in (work / "results").rglob("*.h5"):
        if not p.name.startswith("."):
            with h5py.File(p) as f:
                for k in f:
                    f[k][...]


KILL_POINTS = {
    "training": lambda w: (w / "results/model/checkpoints/last.pt").exists(),
    "inference": lambda w: any((w / "results").glob("*/cnn/slabs/*.h5")),
    "linking": lambda w: any((w / "logs/link_slices").glob("*.log")) if (w / "logs/link_slices").exists() else False,
}


@pytest.mark.parametrize("point", sorted(KILL_POINTS))
def test_killed_run_resumes_and_matches_an_uninterrupted_run(reference_run, tmp_path, point):
    work = write_tiny_workdir(tmp_path / "killed")
    _run_and_kill(work, KILL_POINTS[point])
    _all_h5_readable(work)
    # a SIGKILLed Snakemake cannot release its lock: the documented recovery is --unlock, then rerun
    run_snakemake(work, "--unlock")
    r = run_snakemake(work, "--rerun-incomplete")
    assert r.returncode == 0, r.stderr[-3000:]
    assert_same_results(reference_run, work)
    if point == "training":
        assert "resuming from" in (work / "logs/train.log").read_text()
