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


def test_the_preset_key_names_every_built_in_preset():
    import re

    from detachment.presets import PRESETS
    schema = yaml.safe_load((ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text())
    text = schema["properties"]["phantom"]["properties"]["preset"]["description"]
    named = set(re.findall(r"[a-z0-9_]+", text.split("detachment.presets:", 1)[1].split("or one of", 1)[0]))
    assert named == set(PRESETS), f"phantom.preset's description lacks {sorted(set(PRESETS) - named)}, " \
        f"names unknown {sorted(named - set(PRESETS))}"


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


def test_with_defaults_completes_configs_as_snakemake_validate_does():
    """Oracle: snakemake.utils.validate(set_default=True), what the workflow applies."""
    import copy

    from snakemake.utils import validate

    from detachment.config_docs import with_defaults
    schema_path = ROOT / "workflow" / "schemas" / "config.schema.yaml"
    for cfg in [{}, yaml.safe_load((ROOT / "config" / "config.yaml").read_text()),
                yaml.safe_load((ROOT / "config" / "paper.yaml").read_text()),
                {"link": {"max_gap": 1}, "phantom": {"defaults": {"n_particles": 3}}}]:
        expected = copy.deepcopy(cfg)
        validate(expected, str(schema_path), set_default=True)
        got = with_defaults(cfg)
        assert got == expected
        assert got["link"]["min_iou"] == 0.2 and "slab" in got["threshold"]


def test_config_yaml_sets_only_what_differs_from_the_schema():
    schema = yaml.safe_load((ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text())
    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    same = [f"{section}.{key}" for section, values in cfg.items() if isinstance(values, dict)
            for key, value in values.items()
            if schema["properties"][section].get("properties", {}).get(key, {}).get("default", object()) == value]
    same += [k for k, v in cfg.items() if not isinstance(v, dict) and schema["properties"][k].get("default") == v]
    assert not same, f"config/config.yaml repeats schema defaults: {same}"
