"""The levels the report colours cells with, by the gate's own rules (the report never
re-derives a decision from thresholds)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from auditors.analysis import token_rules
from auditors.analysis.stats import finite, interval

__all__ = ["WARN_SHARE", "point_level", "interval_level", "effect_status", "token_status"]

#: A point estimate this close to its limit (as a share of it) is shown as a warning.
WARN_SHARE = 0.75


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


def token_status(t: Mapping[str, Any], limits: Mapping[str, Any]) -> tuple[str, str]:
    """("flagged" | "reported" | "ok", why) of a token entry, by the gate's token rule
    (:func:`auditors.analysis.token_rules.entry_verdict`): "flagged" when a finding fails the gate
    (``why`` names it), "reported" when a finding fired that does not fail it (association
    without attention, ``tokens.fail_on_association`` off), "ok" when none fired.
    ``limits``: {"lift", "effect", "p_value", "fail_on_association"} as in ``tokens.*``."""
    v = token_rules.entry_verdict(t, limits)
    if v.fails:
        return "flagged", v.failing()
    if v.findings != "none":
        return "reported", "data association, not attended" if v.associated else "model dependence"
    return "ok", ""
