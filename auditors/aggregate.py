"""Per-class and overall aggregates of the per-image table, and the bias gate.

Aggregates: ``<r>_mass`` and ``<r>_area`` are means over the class's images with a defined
value; ``<r>_lift`` is the ratio of those means (not the mean of per-image lifts, which
explodes on images with tiny regions); ``<r>_hit_rate`` is the share of pointing hits.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from auditors.config import GateConfig

__all__ = ["aggregate", "apply_gate", "group_column"]

# Keys later stages fill in; present (as None) from the start so the contract is stable.
COUNTERFACTUAL_KEYS = ("flip_rate_text_removed", "flip_rate_placebo")


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _stats(df: pd.DataFrame, regions: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"n": int(len(df))}
    for r in regions:
        mass = df[f"{r}_mass"].mean() if len(df) else float("nan")
        area = df[f"{r}_area"].mean() if len(df) else float("nan")
        both = df[[f"{r}_mass", f"{r}_area"]].dropna()
        lift = both[f"{r}_mass"].mean() / both[f"{r}_area"].mean() if len(both) and both[f"{r}_area"].mean() > 0 else float("nan")
        hit = df[f"{r}_hit"].mean() if len(df) else float("nan")
        out.update({f"{r}_mass": _clean(float(mass)), f"{r}_area": _clean(float(area)),
                    f"{r}_lift": _clean(float(lift)), f"{r}_hit_rate": _clean(float(hit))})
    for key in COUNTERFACTUAL_KEYS:
        out[key] = None
    return out


def group_column(images: pd.DataFrame, labelled: bool) -> str:
    """Aggregate by true label when the dataset has labels, else by prediction."""
    return "label" if labelled and images["label"].notna().any() else "pred"


def aggregate(images: pd.DataFrame, classes: list[str], regions: list[str], by: str) -> tuple[dict, dict]:
    """Per-class stats (every model class appears, with n=0 when absent) and overall stats."""
    ok = images[images["cam_status"] == "ok"] if "cam_status" in images else images
    per_class = {c: _stats(ok[ok[by] == c], regions) for c in classes}
    return per_class, _stats(ok, regions)


def apply_gate(per_class: dict[str, dict], gate: GateConfig) -> dict[str, Any]:
    """Flag classes whose mean text lift exceeds ``gate.max_text_lift``; mutates ``per_class``."""
    failures = []
    for name, stats in per_class.items():
        reasons = []
        lift = stats.get("text_lift")
        if lift is not None and stats["n"] >= gate.min_images_per_class and lift > gate.max_text_lift:
            reasons.append(f"text_lift {lift:.2f} > {gate.max_text_lift}")
            failures.append({"class": name, "rule": "max_text_lift", "value": lift, "threshold": gate.max_text_lift})
        stats["flagged"] = bool(reasons)
        stats["flag_reasons"] = reasons
    return {"passed": not failures, "failures": failures, "max_text_lift": gate.max_text_lift}
