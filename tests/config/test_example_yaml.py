"""configs/example.yaml documents every key of the schema, and only keys of the schema.

The schema (auditors/config/schema.py) is walked, not listed here, so a key added to a section
without a line in example.yaml fails this test by name. A key counts as documented when it is
in the file as YAML, active or commented out (``# key: value`` with the ``#`` where the key
would start, for alternatives such as model.torchscript); a dict of sections (regions.custom)
is documented by one example entry that shows every key of its section.
"""

from __future__ import annotations

import re
import types
from pathlib import Path
from typing import Union, get_args, get_origin

from pydantic import BaseModel

from auditors.config import load_config
from auditors.config.schema import AuditConfig

EXAMPLE = Path(__file__).resolve().parents[2] / "configs" / "example.yaml"
_KEY = re.compile(r"^(?P<indent> *)(?P<key>[a-z_][a-z0-9_]*):(\s|$)")
_COMMENTED = re.compile(r"^(?P<indent> *)# (?P<rest>.*)$")


def _section(annotation: object) -> tuple[type[BaseModel] | None, bool]:
    """(section model, is a dict of them) for a field's annotation, (None, False) for a plain value."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, False
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is dict and len(args) == 2 and isinstance(args[1], type) and issubclass(args[1], BaseModel):
        return args[1], True
    if origin in (Union, types.UnionType):
        for a in args:
            model, many = _section(a)
            if model is not None:
                return model, many
    return None, False


def schema_keys(model: type[BaseModel] = AuditConfig, prefix: str = "") -> list[str]:
    """Every dotted key of ``model``; ``*`` stands for the user's name in a dict of sections."""
    keys = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        keys.append(key)
        section, many = _section(field.annotation)
        if section is not None and many:
            keys += [f"{key}.*", *schema_keys(section, f"{key}.*.")]
        elif section is not None:
            keys += schema_keys(section, f"{key}.")
    return keys


def documented_keys(text: str) -> set[str]:
    """Dotted keys written in ``text`` as YAML block keys, commented out or not."""
    stack: list[tuple[int, str]] = []
    found = set()
    for line in text.splitlines():
        commented = _COMMENTED.match(line)
        if commented:  # "  # limit: 500" -> "  limit: 500"
            line = commented["indent"] + commented["rest"]
        m = _KEY.match(line)
        if not m:
            continue
        indent = len(m["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, m["key"]))
        found.add(".".join(k for _, k in stack))
    return found


def _matches(pattern: str, key: str) -> bool:
    p, k = pattern.split("."), key.split(".")
    return len(p) == len(k) and all(a in ("*", b) for a, b in zip(p, k))


def test_every_schema_key_is_documented_in_example_yaml():
    documented = documented_keys(EXAMPLE.read_text())
    missing = [key for key in schema_keys() if not any(_matches(key, d) for d in documented)]
    assert not missing, (
        f"{EXAMPLE.name} does not document {len(missing)} schema key(s): {', '.join(missing)}. "
        "Add each with its default and a short comment (commented out, `# key: value`, if it is an alternative)."
    )


def test_example_yaml_documents_no_unknown_keys():
    """Commented-out keys escape the loader's unknown-key check: a renamed key must not linger here."""
    known = schema_keys()
    stale = sorted(d for d in documented_keys(EXAMPLE.read_text()) if not any(_matches(k, d) for k in known))
    assert not stale, f"{EXAMPLE.name} documents key(s) the schema does not have: {', '.join(stale)}"


def test_example_yaml_loads_with_the_real_loader(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(EXAMPLE)
    assert cfg.name == "poster-genre" and cfg.dataset.root == tmp_path / "data" / "posters"


def test_the_walk_sees_nested_and_named_sections():
    """The checker itself: sections, a dict of sections, and a missing key are all seen."""
    keys = schema_keys()
    assert {"counterfactual.placebo_tries", "regions.text.min_score", "regions.custom.*.masks_dir", "gate.max_lift"} <= set(keys)
    doc = documented_keys("regions:\n  text:\n    # min_score: 0.5\n  custom: {}\n  # custom:\n  #   logo:\n  #     column: c\n")
    assert doc == {"regions", "regions.text", "regions.text.min_score", "regions.custom", "regions.custom.logo",
                   "regions.custom.logo.column"}
    assert _matches("regions.custom.*.column", "regions.custom.logo.column")
    assert not _matches("regions.custom.*.column", "regions.custom.column")
