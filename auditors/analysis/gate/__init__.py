"""The bias gate: the one package that decides what is flagged and whether the audit passes.

Every pass/fail decision lives here, one module per kind of rule:

- :mod:`.class_rules` (:func:`apply_gate`): a rule fails when a class's statistic exceeds its
  threshold significantly: a one-sided p-value per (class, rule) cell, Benjamini-Hochberg
  adjusted across the whole grid, so more regions and classes do not multiply false alarms;
- :mod:`.token_gate` (:func:`token_decisions`, :func:`token_failures`): a token the model depends
  on (on its own), or a class-associated token that is over-attended (association alone only
  with ``tokens.fail_on_association``);
- :mod:`.regression` (:func:`apply_regression_rule`): a class got worse than ``gate.baseline`` by
  more than allowed, beyond sampling noise;
- run rules (:func:`validation_failure`, here): result tables that fail validation cannot be trusted;
- :mod:`.inconclusive`: whether the numbers could be judged at all (status "inconclusive");
- :mod:`.levels`: the levels the report colours cells with (:func:`interval_level`,
  :func:`point_level`, :func:`effect_status`, :func:`token_status`), by the same rules, so the
  report never re-derives a decision from thresholds on its own.

:func:`decide` combines them into the ``gate`` section of summary.json. Adding a rule: a module
with a function returning failure dicts ``{"class", "rule", "value", "threshold", ...}``, its
failures appended in :func:`decide`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from auditors.analysis.gate.class_rules import RULE, apply_gate, grid_cells, grid_rules
from auditors.analysis.gate.inconclusive import GATE_STATUSES, gate_status, inconclusive_reasons, judge_inconclusive
from auditors.analysis.gate.levels import WARN_SHARE, effect_status, interval_level, point_level, token_status
from auditors.analysis.gate.limits import effect_limits, lift_limits, limit
from auditors.analysis.gate.regression import REGRESSION_RULE, apply_regression_rule
from auditors.analysis.gate.token_gate import TOKEN_GATE_RULE, flag_tokens, token_decisions, token_failures
from auditors.config.schema import GateConfig

__all__ = [
    "RULE", "apply_gate", "apply_regression_rule", "decide", "limit", "lift_limits", "effect_limits", "token_failures",
    "validation_failure", "flag_tokens", "token_decisions", "grid_cells", "grid_rules", "TOKEN_GATE_RULE",
    "REGRESSION_RULE", "WARN_SHARE", "interval_level", "point_level", "effect_status", "token_status",
    "GATE_STATUSES", "judge_inconclusive", "inconclusive_reasons", "gate_status",
]


def validation_failure(validation: Mapping[str, Any]) -> dict[str, Any] | None:
    """A whole-run failure when the result tables failed Great Expectations validation."""
    if validation["success"]:
        return None
    return {"class": None, "rule": "validation", "value": validation["n_failed"], "threshold": 0}


def decide(
    per_class: dict[str, dict], gate: GateConfig, regions: list[str], cf_regions: list[str],
    tokens: list[dict[str, Any]], validation: Mapping[str, Any], baseline: dict[str, Any] | None = None,
    level: float = 0.95,
) -> dict[str, Any]:
    """The whole gate: class rules (flags ``per_class`` in place), regression against ``baseline``
    (the ``history.baseline`` comparison, when ``gate.baseline`` is set), then tokens, then validation.
    ``level``: the intervals' coverage (``stats.ci``) the class rules' p-values come from."""
    result = apply_gate(per_class, gate, regions, cf_regions, level)
    result = apply_regression_rule(result, per_class, baseline, gate)
    failures = token_failures(tokens)
    invalid = validation_failure(validation)
    if invalid is not None:
        failures.append(invalid)
    if failures:
        result["passed"] = False
        result["failures"] += failures
    return result
