"""The conda environments (workflow/envs/*.yaml) agree with pyproject.toml, the venv's source of pins."""

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
ENVS = sorted((ROOT / "workflow" / "envs").glob("*.yaml"))


def _pyproject_pins() -> dict[str, str]:
    # the [project] dependencies list (tomllib is not in Python 3.10, which the project supports)
    block = re.search(r"^dependencies = \[(.*?)^\]", (ROOT / "pyproject.toml").read_text(), re.S | re.M).group(1)
    return dict(re.findall(r'"([A-Za-z0-9_.-]+)==([^"]+)"', block))


def _env_pins(env: dict) -> tuple[dict[str, str], list[str]]:
    pins, editable = {}, []
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            for p in dep["pip"]:
                if p.startswith("-e "):
                    editable.append(p[3:])
                else:
                    name, version = p.split("==")
                    pins[name] = version
        elif "=" in dep:
            name, version = dep.split("=", 1)
            pins[name] = version
    return pins, editable


@pytest.mark.parametrize("path", ENVS, ids=[p.name for p in ENVS])
def test_env_pins_equal_pyproject_and_install_this_checkout(path):
    pins, editable = _env_pins(yaml.safe_load(path.read_text()))
    project = _pyproject_pins()
    disagree = {k: (v, project[k]) for k, v in pins.items() if k in project and project[k] != v}
    assert not disagree, f"{path.name}: versions differ from pyproject.toml: {disagree}"
    assert set(pins) - {"python", "pip"} <= set(project), f"{path.name}: pins a package pyproject.toml does not"
    # the editable install is resolved relative to the env file and must name this checkout
    assert editable and all((path.parent / e / "pyproject.toml").is_file() for e in editable), editable


def test_envs_are_found_where_rules_and_users_look():
    assert ENVS, "no workflow/envs/*.yaml"
    assert {p.name for p in (ROOT / "envs").glob("*.yaml")} == {p.name for p in ENVS}
    for rule_file in (ROOT / "workflow" / "rules").glob("*.smk"):
        for ref in re.findall(r'"(\.\./envs/[^"]+)"', rule_file.read_text()):
            assert (rule_file.parent / ref).is_file(), f"{rule_file.name}: {ref}"
