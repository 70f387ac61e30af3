"""The bias gate: the one module that decides what is flagged and whether the audit passes.

Every pass/fail decision lives here, so a new rule is added in one place:

- class rules (:func:`apply_gate`): a rule fails when the lower bound of a class's interval
  exceeds its threshold, so a noisy estimate on few images never flags on its point value alone;
- token rules (:func:`flag_tokens`, :func:`token_failures`): a class-associated token that is
  over-attended or needed;
- run rules (:func:`validation_failure`): result tables that fail validation cannot be trusted;
- :func:`decide` combines them into the ``gate`` section of summary.json;
- the levels the report colours cells with (:func:`interval_level`, :func:`point_level`,
  :func:`effect_status`, :func:`token_status`) follow the same rules, so the report never
  re-derives a decision from thresholds on its own.

Adding a rule: write a function returning failure dicts ``{"class", "rule", "value",
"threshold", ...}`` and append its failures in :func:`decide`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from auditors.analysis.stats import finite, interval
from auditors.config.schema import GateConfig, TokensConfig

__all__ = [
    "RULE", "apply_gate", "decide", "limit", "lift_limits", "effect_limits", "token_failures", "validation_failure",
    "flag_tokens", "interval_level", "point_level", "effect_status", "token_status",
]

#: The gate's decision rule in words (summary.json ``gate.rule``).
RULE = "a class is flagged when the lower bound of its interval exceeds the threshold"

#: A point estimate this close to its limit (as a share of it) is shown as a warning.
WARN_SHARE = 0.75


# --------------------------------------------------------------------------- limits


def limit(gate: GateConfig, region: str, kind: str) -> float | None:
    """The gate's ``kind`` ("lift" or "effect") limit for ``region``, or None when none is set."""
    if region == "text":
        return gate.max_text_lift if kind == "lift" else gate.max_text_effect
    return (gate.max_lift if kind == "lift" else gate.max_effect).get(region)


def lift_limits(gate: GateConfig, regions: list[str]) -> dict[str, float]:
    """Lift limits of the measured regions that have one."""
    out = {r: v for r, v in gate.max_lift.items() if r in regions}
    if "text" in regions:
        out["text"] = gate.max_text_lift
    return out


def effect_limits(gate: GateConfig, cf_regions: list[str]) -> dict[str, float]:
    """Effect limits of the intervened regions that have one."""
    out = {r: v for r, v in gate.max_effect.items() if r in cf_regions}
    if "text" in cf_regions:
        out["text"] = gate.max_text_effect
    return out


# --------------------------------------------------------------------------- class rules


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
    lifts, effects = lift_limits(gate, regions), effect_limits(gate, cf_regions)
    failures = []
    for name, stats in per_class.items():
        found = []
        if stats["n"] >= gate.min_images_per_class:
            found += [_rule(stats, name, f"{r}_lift", t) for r, t in lifts.items()]
            found += [_rule(stats, name, f"{r}_effect", t) for r, t in effects.items()]
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
        "rule": RULE,
    }


# --------------------------------------------------------------------------- token and run rules


def flag_tokens(table: pd.DataFrame, tc: TokensConfig) -> pd.Series:
    """A token is flagged when class-associated and either over-attended or effective.

    Over-attended: lift > ``tokens.max_lift``. Effective: the effect interval's lower bound
    exceeds ``tokens.max_effect``. Both need ``p_value`` < ``tokens.max_p_value``.
    """
    assoc = table["p_value"] < tc.max_p_value
    attended = table["lift"] > tc.max_lift
    lower = table["effect_ci"].map(lambda ci: ci[0] if isinstance(ci, (list, tuple)) and ci[0] is not None else np.nan)
    effective = lower > tc.max_effect
    return (assoc & (attended | effective)) & (table["n_images"] >= tc.min_images)


def token_failures(tokens: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One gate failure per flagged token (entries of summary.json ``tokens``)."""
    return [
        {"class": t["top_class"], "rule": "token", "token": t["token"], "value": t["lift"], "effect": t["effect"],
         "lower": (t["effect_ci"] or [None])[0], "threshold": None}
        for t in tokens if t["flagged"]
    ]


def validation_failure(validation: Mapping[str, Any]) -> dict[str, Any] | None:
    """A whole-run failure when the result tables failed Great Expectations validation."""
    if validation["success"]:
        return None
    return {"class": None, "rule": "validation", "value": validation["n_failed"], "threshold": 0}


def decide(
    per_class: dict[str, dict], gate: GateConfig, regions: list[str], cf_regions: list[str],
    tokens: list[dict[str, Any]], validation: Mapping[str, Any],
) -> dict[str, Any]:
    """The whole gate: class rules (flags ``per_class`` in place), then tokens, then validation."""
    result = apply_gate(per_class, gate, regions, cf_regions)
    failures = token_failures(tokens)
    invalid = validation_failure(validation)
    if invalid is not None:
        failures.append(invalid)
    if failures:
        result["passed"] = False
        result["failures"] += failures
    return result


# --------------------------------------------------------------------------- levels shown in the report


def point_level(value: Any, threshold: float | None) -> str:
    """"bad" above the limit, "warn" within 25% of it, "ok" below; "" when either is missing."""
    v = finite(value)
    if v is None or threshold is None:
        return ""
    if v > threshold:
        return "bad"
    if v >= WARN_SHARE * threshold:
        return "warn"
    return "ok"


def interval_level(value: Any, ci: Any, threshold: float | None) -> str:
    """As the gate decides: "bad" when even the interval's lower bound is above the limit,
    "warn" when only part of it is, "ok" when all of it is below. Without an interval the
    point estimate decides (:func:`point_level`)."""
    if finite(value) is None or threshold is None:
        return ""
    ci = interval(ci)
    if ci is None:
        return point_level(value, threshold)
    lo, hi = ci
    if lo > threshold:
        return "bad"
    if hi > threshold:
        return "warn"
    return "ok"


def effect_status(level: str, n: float | None, min_n: float | None) -> str:
    """A class's effect status: its level, but "small" when above the limit on too few images to
    be flagged (``gate.min_images_per_class``), "none" without a level."""
    if not level:
        return "none"
    if level == "bad" and min_n is not None and n is not None and n < min_n:
        return "small"
    return level


def token_status(t: Mapping[str, Any], limits: Mapping[str, float | None], flagged: bool) -> tuple[str, str]:
    """("flagged" | "spread" | "ok", why) of a token entry; ``why`` names the criteria a flagged
    token met. "spread": attended or needed, but not associated with one class.
    ``limits``: {"lift", "effect", "p_value"} as in ``tokens.max_*``."""
    lift, p = finite(t.get("lift")), finite(t.get("p_value"))
    ci = interval(t.get("effect_ci"))
    attended = lift is not None and limits["lift"] is not None and lift > limits["lift"]
    effective = ci is not None and limits["effect"] is not None and ci[0] > limits["effect"]
    if flagged:
        return "flagged", ", ".join(w for w, on in (("lift", attended), ("effect", effective)) if on)
    associated = p is not None and limits["p_value"] is not None and p < limits["p_value"]
    if (attended or effective) and not associated and p is not None and limits["p_value"] is not None:
        return "spread", ""
    return "ok", ""
