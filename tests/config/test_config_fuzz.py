"""Fuzz (hypothesis) of the config loader and ``--set``: a config or a ConfigError (exit 2), never a crash."""

from __future__ import annotations

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from auditors.config.loading import apply_overrides, config_from_dict, load_config, parse_yaml
from auditors.config.schema import AuditConfig
from auditors.errors import ConfigError

# --------------------------------------------------------------------------- config loader and --set fuzz

MINIMAL = {"name": "fuzz", "dataset": {"root": "data"}, "model": {"arch": "resnet18"}}
KEYS = ["name", "dataset.root", "dataset.limit", "model.arch", "model.classes", "model.input_size", "model.mean",
        "model.target_layer", "cam.target", "cam.batch_size", "cam.device", "regions.border.width", "regions.priority",
        "regions.custom", "gate.max_lift", "gate.max_effect", "counterfactual.enabled", "counterfactual.regions",
        "output.dir", "run.chunk_size", "stats.ci", "tokens.max_hamming", "nonsense.key", "model"]
yaml_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["~nosuchuser/x", "~", "/dev/null", "../../etc/passwd", "a\u2028b", "fc", "avgpool", "text", "1e400"]),
)
yaml_values = st.recursive(
    yaml_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)),
    max_leaves=12,
)


def _only_config_errors(fn, *args):
    """Run fn; the only acceptable failure is a ConfigError (exit 2), never another exception (exit 3)."""
    try:
        result = fn(*args)
    except ConfigError as exc:
        assert str(exc).strip(), "an error message must say something"
        return None
    return result


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(KEYS), yaml_values), max_size=4))
def test_fuzzed_set_overrides_give_a_config_or_a_config_error(pairs):
    overrides = [f"{k}={yaml.safe_dump(v, default_flow_style=True).strip().removesuffix('...').strip()}" for k, v in pairs]
    data = _only_config_errors(apply_overrides, MINIMAL, overrides)
    if data is not None:
        cfg = _only_config_errors(config_from_dict, data)
        assert cfg is None or isinstance(cfg, AuditConfig)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.text(max_size=40), max_size=3))
def test_fuzzed_raw_set_strings_give_a_config_or_a_config_error(raw):
    data = _only_config_errors(apply_overrides, MINIMAL, raw)
    if data is not None:
        _only_config_errors(config_from_dict, data)


@settings(max_examples=150, deadline=None)
@given(st.one_of(st.binary(max_size=300), st.text(max_size=300).map(lambda s: s.encode("utf-8"))))
def test_fuzzed_config_bytes_give_a_config_or_a_config_error(tmp_path_factory, raw):
    path = tmp_path_factory.mktemp("fuzz") / "c.yaml"
    path.write_bytes(raw)
    _only_config_errors(load_config, path)


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.sampled_from(["name", "dataset", "model", "cam", "gate", "regions", "output", "x"]), yaml_values,
                       max_size=6))
def test_fuzzed_config_documents_give_a_config_or_a_config_error(tmp_path_factory, doc):
    path = tmp_path_factory.mktemp("fuzz") / "c.yaml"
    path.write_text(yaml.safe_dump({**MINIMAL, **doc}), encoding="utf-8")
    _only_config_errors(load_config, path)


def test_yaml_bombs_and_duplicates_are_refused_quickly():
    laughs = 'a: &a ["x","x","x","x","x","x","x","x","x"]\n' + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join([f"*{chr(97 + i)}"] * 9) + "]\n" for i in range(9)
    )
    with pytest.raises(ConfigError, match="more than 100000 nodes"):
        parse_yaml(laughs, "bomb")
    with pytest.raises(ConfigError, match="duplicate key 'b'"):
        parse_yaml("a: {b: 1, b: 2}\n", "dup")
    with pytest.raises(ConfigError, match="recursive YAML alias"):
        parse_yaml("a: &x [*x]\n", "loop")
    assert parse_yaml("base: &b {x: 1}\nd:\n  <<: *b\n  x: 2\n", "merge") == {"base": {"x": 1}, "d": {"x": 2}}
