"""The "Since the last run" section: per class, the change of text lift and text effect against
the previous run of the same audit and against a pinned baseline, with intervals.

Reads only ``summary.history`` (compared by :mod:`auditors.history`) and ``gate.regression``,
so an older summary without them renders without the section. Whether a change fails is the
gate's decision (:func:`auditors.analysis.gate.apply_regression_rule`); the colours here follow
the same rule: the interval's lower end above the allowed increase.
"""

from __future__ import annotations

from typing import Any

from auditors.audit.summary import Comparison, MetricChange, Record, Summary
from auditors.report.formatting import DASH, fmt_float, num

__all__ = ["METRIC_LABELS", "build_history", "regression_sentence"]

METRIC_LABELS = {"text_lift": "text lift", "text_effect": "text effect"}


def _signed(value: Any, digits: int = 2) -> str:
    v = num(value)
    return DASH if v is None else f"{v:+.{digits}f}"


def _change_cell(change: MetricChange | None, allowed: float | None) -> dict[str, str]:
    if change is None:
        return {"text": DASH, "sub": "", "cls": "muted", "title": ""}
    ci = change.delta_ci or None
    lo, hi = (num(ci[0]), num(ci[1])) if ci and len(ci) == 2 else (None, None)
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
        "text": f"{fmt_float(change.reference)} \u2192 {fmt_float(change.current)}",
        "sub": f"{_signed(change.delta)} [{_signed(lo)}, {_signed(hi)}] · {word}",
        "cls": cls,
        "title": "interval: " + ("bootstrap of the difference" if change.method == "bootstrap"
                                 else "difference of the two runs' intervals (conservative)"),
    }


def _block(comp: Comparison, title: str, limits: dict[str, float | None]) -> dict[str, Any]:
    classes = comp.classes
    metrics = [k for k in METRIC_LABELS if any(c.get(k) is not None for c in classes.values())]
    rows = [{"name": str(name), "cells": [_change_cell(c.get(k), limits.get(k)) for k in metrics]}
            for name, c in classes.items()]
    return {"title": title, "run_id": str(comp.run_id or DASH), "created_at": str(comp.created_at or ""),
            "passed": comp.passed, "metrics": [METRIC_LABELS[k] for k in metrics], "rows": rows}


def build_history(summary: Summary) -> dict[str, Any] | None:
    """Blocks for the previous run and the pinned baseline; None when the run recorded no history."""
    hist = summary.history
    if hist is None:
        return None
    reg = summary.gate.regression if summary.gate is not None else None
    limits = {"text_lift": num(reg.max_lift_increase), "text_effect": num(reg.max_effect_increase)} if reg else {}
    prev, base = hist.previous, hist.baseline
    blocks = []
    if prev is not None:
        same = base is not None and base.run_id == prev.run_id
        blocks.append(_block(prev, "Since the previous run", limits if same else {}))
    if base is not None and (prev is None or base.run_id != prev.run_id):
        blocks.append(_block(base, "Against the pinned baseline", limits))
    if not blocks:
        return {"blocks": [], "first": True, "regression": reg}
    return {"blocks": blocks, "first": False, "regression": reg, "ci": num((prev or base).ci)}


def regression_sentence(failure: Record) -> str:
    """A failed regression rule in plain words (the verdict lists it with the other findings)."""
    label = METRIC_LABELS.get(str(failure.get("metric")), str(failure.get("metric")))
    return (f"Class '{failure.get('class')}': {label} rose from {fmt_float(failure.get('baseline_value'))} to "
            f"{fmt_float(failure.get('current_value'))} since run {failure.get('baseline_run')} "
            f"({_signed(failure.get('value'))}; the interval of the change starts at {_signed(failure.get('lower'))}, "
            f"above the allowed increase of {failure.get('threshold')}).")
