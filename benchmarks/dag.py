"""Wall time of the default DAG from scratch and of a no-op rerun, in a scratch work directory.

Usage: .venv/bin/python benchmarks/dag.py [--cores 2]

Runs `snakemake --cores N` on config/config.yaml (the two default phantoms) in a temporary directory,
then again (nothing to do), and prints both times and their ratio.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cores", type=int, default=2)
    args = ap.parse_args()
    snakemake = str(Path(sys.executable).with_name("snakemake"))
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        shutil.copytree(ROOT / "config", work / "config")
        cmd = [snakemake, "-s", str(ROOT / "Snakefile"), "--directory", str(work), "--cores", str(args.cores), "-q"]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        full = time.perf_counter() - t0
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        noop = time.perf_counter() - t0
    print(f"default DAG from scratch: {full:7.1f} s ({args.cores} cores)")
    print(f"no-op rerun            : {noop:7.1f} s")
    print(f"ratio no-op / full     : {noop / full:.4f}")


if __name__ == "__main__":
    main()
