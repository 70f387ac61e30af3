"""Report section "Since the last run": per class, the change of text lift and text effect
against the previous run of the same audit and against a pinned baseline, with intervals.

Reads only ``summary["history"]`` (written by the flow from auditors.history), so an older
summary without it renders without the section.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["build_history", "regression_sentence"]

DASH = "\u2014"
METRIC_LABELS = {"text_lift": "text lift", "text_effect": "text effect"}


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _f(v: Any, digits: int = 2) -> str:
    n = _num(v)
    return DASH if n is None else f"{n:.{digits}f}"


def _signed(v: Any, digits: int = 2) -> str:
    n = _num(v)
    return DASH if n is None else f"{n:+.{digits}f}"


def _change_cell(change: dict | None, allowed: float | None) -> dict[str, str]:
    if not isinstance(change, dict):
        return {"text": DASH, "sub": "", "cls": "muted", "title": ""}
    ci = change.get("delta_ci") or None
    lo, hi = (_num(ci[0]), _num(ci[1])) if ci else (None, None)
    if lo is not None and allowed is not None and lo > allowed:
        cls, word = "bad", "worse than allowed"
    elif lo is not None and lo > 0:
        cls, word = "warn", "higher"
    elif hi is not None and hi < 0:
        cls, word = "good", "lower"
    elif lo is None:
        cls, word = "muted", "no interval"
    else:
        cls, word = "", "no clear change"
    return {
        "text": f"{_f(change.get('reference'))} \u2192 {_f(change.get('current'))}",
        "sub": f"{_signed(change.get('delta'))} [{_signed(lo)}, {_signed(hi)}] · {word}",
        "cls": cls,
        "title": "interval: " + ("bootstrap of the difference" if change.get("method") == "bootstrap"
                                 else "difference of the two runs' intervals (conservative)"),
    }


def _block(comp: dict, title: str, limits: dict[str, float | None]) -> dict[str, Any]:
    classes = comp.get("classes") if isinstance(comp.get("classes"), dict) else {}
    metrics = [k for k in METRIC_LABELS if any(isinstance(c, dict) and k in c for c in classes.values())]
    rows = [{"name": str(name), "cells": [_change_cell(c.get(k), limits.get(k)) for k in metrics]}
            for name, c in classes.items() if isinstance(c, dict)]
    return {"title": title, "run_id": str(comp.get("run_id") or DASH), "created_at": str(comp.get("created_at") or ""),
            "passed": comp.get("passed"), "metrics": [METRIC_LABELS[k] for k in metrics], "rows": rows}


def build_history(summary: dict) -> dict[str, Any] | None:
    """Blocks for the previous run and the pinned baseline; None when there is no earlier run."""
    hist = summary.get("history")
    if not isinstance(hist, dict):
        return None
    gate = summary.get("gate") if isinstance(summary.get("gate"), dict) else {}
    reg = gate.get("regression") if isinstance(gate.get("regression"), dict) else {}
    limits = {"text_lift": _num(reg.get("max_lift_increase")), "text_effect": _num(reg.get("max_effect_increase"))}
    blocks = []
    prev, base = hist.get("previous"), hist.get("baseline")
    if isinstance(prev, dict):
        blocks.append(_block(prev, "Since the previous run", limits if isinstance(base, dict) and
                             base.get("run_id") == prev.get("run_id") else {}))
    if isinstance(base, dict) and (not isinstance(prev, dict) or base.get("run_id") != prev.get("run_id")):
        blocks.append(_block(base, "Against the pinned baseline", limits))
    if not blocks:
        return {"blocks": [], "first": True, "regression": reg or None}
    return {"blocks": blocks, "first": False, "regression": reg or None,
            "ci": _num((prev or base or {}).get("ci"))}


def regression_sentence(failure: dict) -> str:
    """A failed regression rule in plain words (the verdict lists it with the other findings)."""
    label = METRIC_LABELS.get(str(failure.get("metric")), str(failure.get("metric")))
    return (f"Class '{failure.get('class')}': {label} rose from {_f(failure.get('baseline_value'))} to "
            f"{_f(failure.get('current_value'))} since run {failure.get('baseline_run')} "
            f"({_signed(failure.get('value'))}; the interval of the change starts at {_signed(failure.get('lower'))}, "
            f"above the allowed increase of {failure.get('threshold')}).")
