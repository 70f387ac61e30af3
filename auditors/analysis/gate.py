"""The bias gate: the one place that decides which classes are flagged and whether the audit passes.

A rule fails when the lower bound of a class's interval exceeds its threshold, so a noisy
estimate on few images never flags on its point value alone.
"""

from __future__ import annotations

from typing import Any

from auditors.config.schema import GateConfig

__all__ = ["apply_gate"]


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
            found += [_rule(stats, name, f"{r}_norm_lift", t) for r, t in gate.max_norm_lift.items() if r in regions]
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
