"""The tiny workflow through the SLURM profile on a real one-node SLURM equals a local run."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from .conftest import ROOT, snakemake_command, write_tiny_workdir
from .test_reliability import assert_same_results

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


SLURM_PLUGINS = ["snakemake-executor-plugin-slurm==2.8.0", "snakemake-executor-plugin-slurm-jobstep==0.6.1",
                 "throttler==1.2.3"]


@pytest.fixture(scope="module")
def slurm_python(tmp_path_factory) -> str:
    """A Python with the SLURM executor plugin: an overlay venv on top of the project's environment,
    so the project's own snakemake stays free of the plugin (see pyproject's `slurm` extra)."""
    import site
    import sys

    env = tmp_path_factory.mktemp("slurm-venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    py = env / "bin" / "python"
    purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    base = [p for p in site.getsitepackages() if p.endswith("site-packages")][0]
    Path(purelib, "_project_env.pth").write_text(f"import site; site.addsitedir({base!r})\n")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", purelib,
                    *SLURM_PLUGINS], check=True)
    return str(py)


def slurm_test_refusal(environ) -> str | None:
    """Why the SLURM test must not run here (``None``: it may). It installs packages, writes /etc/slurm and
    starts daemons, so it runs only when asked: ``DETACHMENT_SLURM_TEST=1`` (set by ``.ci/run``) or ``CI=true``."""
    if environ.get("DETACHMENT_SLURM_TEST") != "1" and environ.get("CI", "").lower() != "true":
        return "the SLURM test runs only when asked: DETACHMENT_SLURM_TEST=1 (as .ci/run sets) or CI=true"
    return None


@pytest.fixture(scope="module")
def local_slurm(tmp_path_factory):
    refusal = slurm_test_refusal(os.environ)
    if refusal:
        pytest.skip(refusal)
    if os.geteuid() != 0 and not shutil.which("slurmctld"):
        pytest.skip("starting a local SLURM needs root (apt-get, daemons)")
    state = tmp_path_factory.mktemp("slurm-state")
    start = subprocess.run([str(ROOT / "tests/slurm/start-local-slurm.sh"), str(state)], capture_output=True,
                           text=True, timeout=900)
    if start.returncode == 3:  # a site SLURM (conf or daemons) this test must not touch
        pytest.skip(start.stderr.strip())
    if start.returncode != 0:
        pytest.fail(f"local SLURM did not start:\n{start.stdout}\n{start.stderr}")
    yield state
    subprocess.run([str(ROOT / "tests/slurm/stop-local-slurm.sh"), str(state)], timeout=60)


def test_slurm_test_runs_only_when_asked():
    assert slurm_test_refusal({}) is not None
    assert slurm_test_refusal({"CI": "false", "DETACHMENT_SLURM_TEST": "0"}) is not None
    assert slurm_test_refusal({"DETACHMENT_SLURM_TEST": "1"}) is None
    assert slurm_test_refusal({"CI": "true"}) is None


def test_start_script_leaves_a_site_slurm_conf_alone(tmp_path):
    """A machine with its own slurm.conf (a cluster node): the start script refuses before installing,
    writing or starting anything, and the file is unchanged."""
    site = tmp_path / "etc-slurm"
    site.mkdir()
    conf = site / "slurm.conf"
    conf.write_text("ClusterName=site\nSlurmctldHost=head\n")
    before = conf.read_bytes(), conf.stat().st_mtime_ns
    state = tmp_path / "state"
    r = subprocess.run([str(ROOT / "tests/slurm/start-local-slurm.sh"), str(state)], capture_output=True, text=True,
                       timeout=60, env={**os.environ, "SLURM_CONF_DIR": str(site)})
    assert r.returncode == 3, r.stderr
    assert f"{conf} exists and was not written by these tests" in r.stderr
    assert (conf.read_bytes(), conf.stat().st_mtime_ns) == before
    assert not state.exists()  # nothing started, no PID recorded


#: What the SLURM run is asked for: the statistics, whose jobs span every kind of step from the phantoms through
#: the thresholding, training, scattered inference, linking and the per-particle parts to the local rules (32 jobs
#: of the DAG's 52; the evaluation against the truth and the CNN/watershed comparison are the same kind of job).
SLURM_TARGET = "results/statistics/detachment_by_c_rate.csv"


def two_cell_workdir(path: Path) -> Path:
    """The tiny work directory with the sheet's two labelled cells (1C and C/10) only (each SLURM job costs
    seconds of start-up and status polling)."""
    work = write_tiny_workdir(path)
    sheet = work / "samples.tsv"
    rows = sheet.read_text().splitlines()
    sheet.write_text("\n".join(rows[:3]) + "\n")
    return work


def test_tiny_workflow_on_slurm_equals_local_run(local_slurm, slurm_python, tmp_path):
    # the local run goes on beside the SLURM run, which spends most of its time waiting on the queue
    local = two_cell_workdir(tmp_path / "local")
    local_cmd, local_env = snakemake_command(local, SLURM_TARGET)
    local_log = tmp_path / "local.log"  # a file, not a pipe: nothing reads the log until the SLURM run ends
    with open(local_log, "w") as log:
        local_proc = subprocess.Popen(local_cmd, cwd=local, env=local_env, stdout=log, stderr=subprocess.STDOUT)
    cluster = two_cell_workdir(tmp_path / "cluster")
    cmd = [slurm_python, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--directory", str(cluster), "--configfile",
           str(cluster / "config.yaml"), "--workflow-profile", str(ROOT / "profiles/slurm"),
           "--slurm-init-seconds-before-status-checks", "2", "--jobs", "4", SLURM_TARGET]
    proc = subprocess.Popen(cmd, cwd=cluster, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = proc.communicate(timeout=900)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)  # snakemake ignores SIGTERM while it waits on jobs
        out, _ = proc.communicate(timeout=120)
        pytest.fail("SLURM run timed out:\n" + out[-3000:])
    finally:
        local_proc.wait(timeout=600)
    assert local_proc.returncode == 0, local_log.read_text()[-2000:]
    assert {p.name for p in (local / "results").iterdir()} >= {"cell_1C", "cell_C10", "statistics"}
    assert proc.returncode == 0, out[-4000:]
    # the jobs really went through SLURM: the plugin reports each submission's SLURM job id
    assert len(re.findall(r"SLURM job ?id \d+", out, re.I)) >= 5, out[-3000:]
    # the heavy steps went through SLURM, a local one (joining tables) did not
    submitted = set(re.findall(r"slurm_logs/rule_(\w+)/", out))
    assert {"make_phantom", "threshold_phases", "train", "infer_slab", "link_slices", "particles_part",
            "diffusion_part", "diffusion", "self_consistency"} <= submitted
    assert not {"particles", "statistics"} & submitted
    assert_same_results(local, cluster)
