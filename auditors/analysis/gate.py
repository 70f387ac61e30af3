"""The bias gate: the one place that decides which classes are flagged and whether the audit passes.

A rule fails when the lower bound of a class's interval exceeds its threshold, so a noisy
estimate on few images never flags on its point value alone.
"""

from __future__ import annotations

from typing import Any

from auditors.config.schema import GateConfig

__all__ = ["apply_gate", "apply_regression_rule"]


def _rule(stats: dict, name: str, key: str, threshold: float) -> dict | None:
    """A failure when the interval's lower bound of ``key`` exceeds ``threshold``."""
    ci = stats.get(f"{key}_ci")
    if ci is None or ci[0] is None or not ci[0] > threshold:
        return None
    return {"class": name, "rule": f"max_{key}", "value": stats[key], "lower": ci[0], "threshold": threshold}


def apply_gate(per_class: dict[str, dict], gate: GateConfig, regions: list[str], cf_regions: list[str]) -> dict[str, Any]:
    """Flag classes whose interval lower bounds exceed the thresholds; mutates ``per_class``.

    Rules: text lift > ``max_text_lift``; text effect > ``max_text_effect`` (with
    counterfactuals); ``max_lift[r]`` / ``max_effect[r]`` for any other region.
    """
    lift_limits = {**{r: v for r, v in gate.max_lift.items() if r in regions}}
    if "text" in regions:
        lift_limits["text"] = gate.max_text_lift
    effect_limits = {r: v for r, v in gate.max_effect.items() if r in cf_regions}
    if "text" in cf_regions:
        effect_limits["text"] = gate.max_text_effect
    failures = []
    for name, stats in per_class.items():
        found = []
        if stats["n"] >= gate.min_images_per_class:
            found += [_rule(stats, name, f"{r}_lift", t) for r, t in lift_limits.items()]
            found += [_rule(stats, name, f"{r}_effect", t) for r, t in effect_limits.items()]
        found = [f for f in found if f is not None]
        stats["flagged"] = bool(found)
        stats["flag_reasons"] = [
            f"{f['rule'][4:]} {f['value']:.3g} (interval lower bound {f['lower']:.3g}) > {f['threshold']}" for f in found
        ]
        failures += found
    return {
        "passed": not failures,
        "failures": failures,
        "max_text_lift": gate.max_text_lift,
        "max_text_effect": gate.max_text_effect,
        "rule": "a class is flagged when the lower bound of its interval exceeds the threshold",
    }


# --- regression against a baseline run (issue 13: history) -------------------------------------

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
