"""Static security checks of the code base, and safe failure on unwritable or full output folders."""

from __future__ import annotations

import errno
import re
from pathlib import Path

import pandas as pd
import pytest

from detachment import io

ROOT = Path(__file__).resolve().parents[1]
PY = [p for d in ("src", "workflow", "benchmarks") for p in (ROOT / d).rglob("*.py")]
SMK = list((ROOT / "workflow" / "rules").glob("*.smk")) + [ROOT / "Snakefile", ROOT / "workflow" / "Snakefile"]


def test_every_torch_load_is_weights_only():
    for p in PY:
        for m in re.finditer(r"torch\.load\(([^)]*)\)", p.read_text()):
            assert "weights_only=True" in m.group(1), f"{p}: {m.group(0)}"


def test_yaml_is_only_read_with_safe_load():
    for p in PY + SMK + list((ROOT / "tests").glob("*.py")):
        text = p.read_text()
        assert not re.search(r"yaml\.(load|unsafe_load|full_load)\(", text), p


def test_rules_run_scripts_not_shell_commands():
    # no shell: directive means no user string can reach a shell unquoted
    for p in SMK:
        assert not re.search(r"^\s+shell:", p.read_text(), re.M), p
        assert not re.search(r"^\s+run:", p.read_text(), re.M), p


def test_sample_names_are_constrained_by_the_schema():
    schema = (ROOT / "workflow/schemas/samples.schema.yaml").read_text()
    assert 'pattern: "^[A-Za-z0-9](?:[A-Za-z0-9_-]|\\\\.(?!\\\\.))*$"' in schema


def test_bad_input_output_folder_that_is_a_file(tmp_path):
    (tmp_path / "results").write_text("not a folder")
    with pytest.raises(OSError):
        io.write_csv(tmp_path / "results" / "x.csv", pd.DataFrame({"a": [1]}))


def test_bad_input_full_disk_keeps_previous_result(tmp_path, monkeypatch):
    target = tmp_path / "particles.csv"
    pd.DataFrame({"label": [1, 2]}).to_csv(target, index=False)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_csv", full)
    with pytest.raises(OSError, match="No space left"):
        io.write_csv(target, pd.DataFrame({"label": [3]}))
    monkeypatch.undo()
    assert pd.read_csv(target).label.tolist() == [1, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["particles.csv"]
