"""Regression rule (issue 13, history): a class got worse than ``gate.baseline`` by more than
allowed, beyond sampling noise."""

from __future__ import annotations

from typing import Any

from auditors.config.schema import GateConfig

__all__ = ["REGRESSION_RULE", "apply_regression_rule"]


REGRESSION_RULE = (
    "regression: a class fails when the lower bound of the interval of (this run - baseline) exceeds "
    "the allowed increase, i.e. it got worse by more than allowed beyond sampling noise"
)


def apply_regression_rule(
    gate_result: dict[str, Any], per_class: dict[str, dict], baseline: dict[str, Any] | None, gate: GateConfig
) -> dict[str, Any]:
    """Add regression failures (``gate.baseline`` with ``max_lift_increase`` / ``max_effect_increase``).

    ``baseline`` is the comparison built by :func:`auditors.history.compare_runs`; without one
    (no baseline configured, or the first run of an audit) the gate is returned unchanged.
    Mutates ``per_class`` (flagged, flag_reasons) and ``gate_result``.
    """
    if gate.baseline is None:
        return gate_result
    gate_result["regression"] = {
        "baseline": gate.baseline,
        "baseline_run": baseline["run_id"] if baseline else None,
        "max_lift_increase": gate.max_lift_increase,
        "max_effect_increase": gate.max_effect_increase,
        "rule": REGRESSION_RULE,
    }
    if baseline is None:
        return gate_result
    limits = {"text_lift": gate.max_lift_increase, "text_effect": gate.max_effect_increase}
    for name, change in baseline.get("classes", {}).items():
        stats = per_class.get(name)
        if stats is None or stats["n"] < gate.min_images_per_class:
            continue
        for key, allowed in limits.items():
            c = change.get(key)
            ci = c.get("delta_ci") if c else None
            if not ci or ci[0] is None or not ci[0] > allowed:
                continue
            failure = {"class": name, "rule": f"regression_{key}", "metric": key,
                       "value": c["delta"], "lower": ci[0], "threshold": allowed,
                       "baseline_run": baseline["run_id"], "baseline_value": c["reference"], "current_value": c["current"]}
            gate_result["failures"].append(failure)
            stats["flagged"] = True
            stats.setdefault("flag_reasons", []).append(
                f"{key} rose by {c['delta']:.3g} since run {baseline['run_id']} "
                f"(interval lower bound {ci[0]:.3g}) > allowed increase {allowed}"
            )
            gate_result["passed"] = False
    return gate_result
