"""Failure analysis data: one row per misclassified image and the few mistakes the report shows.

A mistake is a labelled image whose predicted class is not its label. For each one the flow's
``failures`` step (after the merge) computes two heatmaps, for the predicted class and for the true class, and measures every
region on both; the row says which region the wrong prediction leaned on (the region with the
highest lift above 1 on the predicted-class map, or "none"). Only the ``k`` most confident
mistakes per true class keep their pictures (:func:`top_per_class`), so memory stays bounded
as with the gallery; the table keeps every mistake (numbers only).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

__all__ = ["FailureItem", "failure_columns", "leaned_on", "top_per_class", "empty_failures"]


@dataclass
class FailureItem:
    """One mistake ready to draw: the model-input view and both display maps (min-max scaled)."""

    path: str
    label: str
    pred: str
    confidence: float
    true_prob: float
    image: np.ndarray
    cam_pred: np.ndarray
    cam_true: np.ndarray
    metrics: dict[str, float | str]
    regions: dict[str, np.ndarray] = field(default_factory=dict)


def failure_columns(regions: list[str]) -> dict[str, str]:
    """failures.parquet columns (additive output; extend, never rename)."""
    cols = {"path": "string", "label": "string", "pred": "string", "confidence": "float64", "true_prob": "float64"}
    for r in regions:
        for which in ("pred", "true"):
            cols[f"{r}_mass_{which}"] = "float64"
            cols[f"{r}_lift_{which}"] = "float64"
    cols["leaned_on"] = "string"
    return cols


def empty_failures(regions: list[str]) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in failure_columns(regions).items()})


def leaned_on(lifts: dict[str, float]) -> str:
    """The region with the highest lift when that lift is above 1 (more attention than its size
    explains); "none" when no region draws more than its share."""
    finite = {r: v for r, v in lifts.items() if v is not None and np.isfinite(v)}
    if not finite:
        return "none"
    region = max(finite, key=lambda r: (finite[r], r))
    return region if finite[region] > 1.0 else "none"


def top_per_class(items: Iterable[FailureItem], k: int) -> list[FailureItem]:
    """The ``k`` most confident mistakes of each true class (ties by path), classes by name."""
    by_class: dict[str, list[FailureItem]] = {}
    for it in items:
        by_class.setdefault(it.label, []).append(it)
    out: list[FailureItem] = []
    for label in sorted(by_class):
        out += sorted(by_class[label], key=lambda it: (-it.confidence, it.path))[: max(0, k)]
    return out
