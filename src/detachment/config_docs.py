"""The configuration reference (``config/README.md``), generated from the config schema.

Run ``python -m detachment.config_docs workflow/schemas/config.schema.yaml > config/README.md``;
a test keeps the file equal to what this writes, so the schema stays the one source of defaults.

Main entry points: :func:`schema_markdown`, :func:`main`, :func:`with_defaults` (a config file completed
with the schema's defaults, as the workflow sees it).
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import yaml

SCHEMA = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"

HEADER = """# Configuration reference

Generated from `workflow/schemas/config.schema.yaml` by
`python -m detachment.config_docs workflow/schemas/config.schema.yaml > config/README.md`; do not edit by
hand. `config/config.yaml` sets only what the default run changes; a key left out takes the default below.
Unknown (e.g. misspelled) keys are refused.
"""


def _one_line(text) -> str:
    return " ".join(str(text or "").split()).replace("|", "\\|")


def _type(spec: dict, defs: dict) -> str:
    """A short type description: type, enum, range, array items, or the referenced definition."""
    if "$ref" in spec:
        ref = spec["$ref"].split("/")[-1]
        if ref in defs and defs[ref].get("type") != "object":
            return _type({**defs[ref], **{k: v for k, v in spec.items() if k != "$ref"}}, defs)
        return f"see *{ref}*"
    if "enum" in spec:
        return " \\| ".join(f"`{v}`" for v in spec["enum"])
    t = spec.get("type", "")
    t = " or ".join(t) if isinstance(t, list) else t
    if t == "array" and "items" in spec:
        t = f"array of {_type(spec['items'], defs)}"
    lo = spec.get("minimum", spec.get("exclusiveMinimum"))
    hi = spec.get("maximum", spec.get("exclusiveMaximum"))
    if lo is not None or hi is not None:
        left = "(" if "exclusiveMinimum" in spec else "["
        right = ")" if "exclusiveMaximum" in spec else "]"
        t += f" {left}{'' if lo is None else lo}, {'' if hi is None else hi}{right}"
    return t


def _table(props: dict, defs: dict, prefix: str) -> list[str]:
    rows = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for key, spec in props.items():
        default = f"`{json.dumps(spec['default'])}`" if "default" in spec else ""
        rows.append(f"| `{prefix}{key}` | {_type(spec, defs)} | {default} | {_one_line(spec.get('description'))} |")
    return rows


def schema_markdown(schema: dict) -> str:
    """Markdown reference of a JSON config schema.

    The top-level keys in one table, one table per section and one per shared definition (``$defs``) of
    object type; columns key, type (with enum, range, array items or the referenced definition), default
    and meaning (the ``description``).

    Parameters
    ----------
    schema : dict
        The parsed schema (``properties``, optional ``$defs``).

    Returns
    -------
    str
        The document, ending in a newline.
    """
    defs = schema.get("$defs", {})
    props = schema["properties"]
    top = {k: v for k, v in props.items() if v.get("type") != "object" or "properties" not in v}
    out = [HEADER, "## Top level", "", *_table(top, defs, ""), ""]
    for section, spec in props.items():
        if section in top:
            continue
        about = _one_line(spec.get("description"))
        out += [f"## `{section}`", "", *([about, ""] if about else []), *_table(spec["properties"], defs, f"{section}."),
                ""]
    for name, spec in defs.items():
        if spec.get("type") == "object" and "properties" in spec:
            about = _one_line(spec.get("description"))
            out += [f"## *{name}*", "", *([about, ""] if about else []), *_table(spec["properties"], defs, ""), ""]
    return "\n".join(line for line in out).rstrip() + "\n"


def with_defaults(config: dict, schema: dict | None = None) -> dict:
    """A copy of ``config`` with every key it leaves out set to the schema's default.

    The same completion the workflow applies (``snakemake.utils.validate(..., set_default=True)``), for
    code that reads ``config/config.yaml`` outside Snakemake (tests, benchmarks).

    Parameters
    ----------
    config : dict
        A configuration as loaded from YAML (may leave sections and keys out).
    schema : dict, optional
        The config schema; default: ``workflow/schemas/config.schema.yaml`` of this checkout.

    Returns
    -------
    dict
        A new mapping; ``config`` is left unchanged.
    """
    schema = yaml.safe_load(SCHEMA.read_text()) if schema is None else schema
    defs = schema.get("$defs", {})

    def fill(node: dict, spec: dict) -> None:
        if "$ref" in spec:
            spec = {**defs[spec["$ref"].split("/")[-1]], **spec}
        for key, sub in spec.get("properties", {}).items():
            if key not in node and "default" in sub:
                node[key] = copy.deepcopy(sub["default"])
            if isinstance(node.get(key), dict):
                fill(node[key], sub)

    out = copy.deepcopy(config)
    fill(out, schema)
    return out


def main(argv: list[str]) -> None:
    """Write the reference of a YAML schema file to standard output.

    Parameters
    ----------
    argv : list of str
        Command-line arguments; the first is the schema file.
    """
    import yaml

    with open(argv[0]) as f:
        sys.stdout.write(schema_markdown(yaml.safe_load(f)))


if __name__ == "__main__":
    main(sys.argv[1:])
