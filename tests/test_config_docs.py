"""config/README.md is the schema's reference, regenerated; it documents every key."""

from __future__ import annotations

import yaml

from detachment.config_docs import schema_markdown

from .conftest import ROOT


def test_config_readme_is_generated_from_the_schema():
    schema = yaml.safe_load((ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text())
    assert (ROOT / "config" / "README.md").read_text() == schema_markdown(schema), (
        "config/README.md is stale: python -m detachment.config_docs workflow/schemas/config.schema.yaml "
        "> config/README.md")


def test_every_key_and_default_appears_once():
    schema = {"properties": {
        "seed": {"type": "integer", "minimum": 0, "default": 3, "description": "Seed."},
        "link": {"type": "object", "description": "Linking.", "properties": {
            "cost": {"type": "string", "enum": ["iou", "overlap"], "default": "iou", "description": "a | b"},
            "p": {"$ref": "#/$defs/fraction", "default": 0.5}}}},
        "$defs": {"fraction": {"type": "number", "minimum": 0, "maximum": 1}}}
    text = schema_markdown(schema)
    assert "| `seed` | integer [0, ] | `3` | Seed. |" in text
    assert "| `link.cost` | `iou` \\| `overlap` | `\"iou\"` | a \\| b |" in text
    assert "| `link.p` | number [0, 1] | `0.5` |  |" in text
    assert text.count("`link.") == 2
