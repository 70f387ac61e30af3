"""The gate, the one module that decides: class rules on interval lower bounds, token and
validation failures, and the levels the report colours cells with."""

from __future__ import annotations

import numpy as np
import pandas as pd

from auditors.analysis.aggregate import aggregate
from auditors.analysis.gate import (
    decide, effect_status, flag_tokens, interval_level, limit, point_level, token_status,
)
from auditors.config.schema import GateConfig, TokensConfig
from tests.report.builders import audit_config, image_rows, token_entry

OK = {"success": True, "n_expectations": 5, "n_failed": 0}


def per_class(spec: dict[str, tuple]) -> dict[str, dict]:
    """Aggregates of a real images table: {class: (n, text_mass, text_area)}."""
    cfg = audit_config(stats={"bootstrap": 300})
    images = pd.DataFrame([r for c, (n, m, a) in spec.items() for r in image_rows(c, n, m, a, spread=0.3)])
    return aggregate(images, cfg, list(spec), ["text", "border"], "label")[0]


def test_a_class_fails_on_its_interval_lower_bound_not_its_point_value():
    classes = per_class({"clear": (40, 0.4, 0.1), "noisy": (3, 0.21, 0.1), "fine": (40, 0.1, 0.1)})
    noisy = classes["noisy"]
    assert noisy["text_lift"] > 2.0 and noisy["text_lift_ci"][0] < 2.0  # above on its point value only
    gate = decide(classes, GateConfig(max_text_lift=2.0), ["text", "border"], [], [], OK)
    assert gate["passed"] is False
    assert [(f["class"], f["rule"]) for f in gate["failures"]] == [("clear", "max_text_lift")]
    assert gate["failures"][0]["lower"] == classes["clear"]["text_lift_ci"][0] > 2.0
    assert [c for c, s in classes.items() if s["flagged"]] == ["clear"]
    assert classes["clear"]["flag_reasons"][0].startswith("text_lift 4 (interval lower bound")
    assert classes["noisy"]["flag_reasons"] == [] and classes["fine"]["flagged"] is False


def test_small_classes_are_never_flagged():
    classes = per_class({"tiny": (4, 0.4, 0.1)})
    gate = decide(classes, GateConfig(max_text_lift=2.0, min_images_per_class=5), ["text"], [], [], OK)
    assert gate["passed"] and not classes["tiny"]["flagged"]


def test_tokens_and_validation_fail_the_gate_after_the_class_rules():
    classes = per_class({"clear": (40, 0.4, 0.1)})
    tokens = [token_entry("text:new", 30, "clear", 0.9, 1e-9, 4.0, 0.3, [0.2, 0.4], flagged=True),
              token_entry("text:ok", 30, "clear", 0.5, 0.4, 1.0)]
    invalid = {"success": False, "n_expectations": 5, "n_failed": 2}
    gate = decide(classes, GateConfig(), ["text"], [], tokens, invalid)
    assert [f["rule"] for f in gate["failures"]] == ["max_text_lift", "token", "validation"]
    expected = {"class": "clear", "rule": "token", "token": "text:new", "value": 4.0, "effect": 0.3, "lower": 0.2, "threshold": None}
    assert expected.items() <= gate["failures"][1].items()  # plus the issue-10 keys: finding, q-values
    assert gate["failures"][2] == {"class": None, "rule": "validation", "value": 2, "threshold": 0}
    # Either alone fails a run whose classes pass.
    fine = per_class({"fine": (40, 0.1, 0.1)})
    assert decide(fine, GateConfig(), ["text"], [], tokens, OK)["passed"] is False
    assert decide(fine, GateConfig(), ["text"], [], [], invalid)["passed"] is False
    assert decide(fine, GateConfig(), ["text"], [], [], OK)["passed"] is True


def test_limits_of_other_regions_and_effects():
    g = GateConfig(max_text_lift=2.5, max_text_effect=0.1, max_lift={"border": 1.5}, max_effect={"background": 0.2})
    assert (limit(g, "text", "lift"), limit(g, "text", "effect")) == (2.5, 0.1)
    assert (limit(g, "border", "lift"), limit(g, "border", "effect"), limit(g, "background", "effect")) == (1.5, None, 0.2)
    stats = {"n": 10, "border_lift": 1.9, "border_lift_ci": [1.6, 2.2], "background_effect": 0.3,
             "background_effect_ci": [0.25, 0.35]}
    gate = decide({"a": stats}, g, ["border", "background"], ["background"], [], OK)
    assert [f["rule"] for f in gate["failures"]] == ["max_border_lift", "max_background_effect"]


def test_flag_tokens_dependence_alone_or_association_with_attention():
    """Issue 10: the model's dependence fails on its own; association needs attention (by default)."""
    table = pd.DataFrame([
        {"p_value": 1e-6, "lift": 3.0, "effect_p_value": np.nan, "n_images": 10},  # attended + associated
        {"p_value": 1e-6, "lift": 1.0, "effect_p_value": 1e-4, "n_images": 10},    # needed (+ associated)
        {"p_value": 0.5, "lift": 3.0, "effect_p_value": 1e-4, "n_images": 10},     # needed, spread over classes
        {"p_value": 1e-6, "lift": 3.0, "effect_p_value": np.nan, "n_images": 2},   # too rare
        {"p_value": 1e-6, "lift": 1.0, "effect_p_value": 0.5, "n_images": 10},     # associated only
    ])
    assert flag_tokens(table, TokensConfig()).tolist() == [True, True, True, False, False]
    assert flag_tokens(table, TokensConfig(fail_on_association=True)).tolist() == [True, True, True, False, True]


def test_levels_follow_the_rules():
    assert [point_level(v, 2.0) for v in (2.1, 1.5, 1.0, None)] == ["bad", "warn", "ok", ""]
    assert interval_level(2.2, [2.1, 2.6], 2.0) == "bad"
    assert interval_level(2.2, [1.8, 2.6], 2.0) == "warn"  # the gate would not flag it
    assert interval_level(1.5, [1.2, 1.8], 2.0) == "ok"
    assert interval_level(2.2, None, 2.0) == "bad" and interval_level(2.2, [1.8, 2.6], None) == ""
    assert [effect_status(lv, 3, 5) for lv in ("bad", "warn", "")] == ["small", "warn", "none"]
    assert effect_status("bad", 10, 5) == "bad"
    limits = {"lift": 2.0, "effect": 0.05, "p_value": 0.01}
    assert token_status({"lift": 3.0, "p_value": 1e-6, "effect_ci": [0.1, 0.2], "flagged": True}, limits) == (
        "flagged", "model dependence; data association + attention")
    assert token_status({"lift": 3.0, "p_value": 0.4, "flagged": False}, limits) == ("ok", "")
    assert token_status({"lift": 1.0, "p_value": 1e-6, "flagged": False}, limits) == ("reported", "data association, not attended")
