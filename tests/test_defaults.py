"""One source of defaults: every settings dataclass field that the config schema documents has the schema's
default, so a library user calling ``LinkSettings()`` gets what a workflow user gets from an empty config."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from detachment.annotations import SplitSettings
from detachment.augment import AugmentSettings
from detachment.linking import LinkSettings
from detachment.maskrcnn import ModelSettings, TrainSettings
from detachment.threshold import ThresholdSettings

from .conftest import ROOT

SECTIONS = {"link": LinkSettings, "model": ModelSettings, "train": TrainSettings, "augment": AugmentSettings,
            "threshold": ThresholdSettings, "annotations": SplitSettings}
#: fields whose schema default is resolved by the workflow, not a value: null = infer.score_threshold
RESOLVED_BY_WORKFLOW = {("link", "min_track_score")}


def _default(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _norm(v):
    return tuple(_norm(x) for x in v) if isinstance(v, (list, tuple)) else v


@pytest.mark.parametrize("section", sorted(SECTIONS))
def test_dataclass_defaults_equal_the_schema_defaults(section):
    schema = yaml.safe_load((ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text())
    documented = schema["properties"][section]["properties"]
    compared = 0
    for f in dataclasses.fields(SECTIONS[section]):
        if f.name not in documented or (section, f.name) in RESOLVED_BY_WORKFLOW:
            continue
        assert "default" in documented[f.name], f"{section}.{f.name} has no default in the schema"
        assert _norm(_default(f)) == _norm(documented[f.name]["default"]), f"{section}.{f.name}"
        compared += 1
    assert compared >= 5


def test_no_library_function_is_over_60_lines():
    """A function a newcomer can read on one screen: every function in ``src/`` (decorators excluded, its
    docstring included) spans at most 60 lines."""
    import ast

    long = []
    for path in sorted((ROOT / "src").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > 60:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({n} lines)")
    assert not long, long
