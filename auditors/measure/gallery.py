"""Gallery candidates: the few images the report shows, kept with bounded memory.

Each chunk keeps its own top-k; the flow merges them, so the whole run never holds more
than ``k`` images per chunk in flight plus ``k`` overall.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

__all__ = ["GalleryItem", "top_k"]


@dataclass
class GalleryItem:
    """One image as the model saw it, with its heatmap and regions, ready to draw.

    ``image``: RGB uint8 (H, W, 3) model-input view. ``cam``: float32 (H, W) ReLU'd map
    upsampled to the same size, min-max scaled to [0, 1] for display only. ``regions``: name ->
    bool mask (H, W). ``text_polygons``: text boxes as (K, 2) x/y arrays in the same pixels.
    """

    path: str
    label: str | None
    pred: str
    confidence: float
    score: float
    metrics: dict[str, float]
    image: np.ndarray
    cam: np.ndarray
    regions: dict[str, np.ndarray] = field(default_factory=dict)
    text_polygons: list[np.ndarray] = field(default_factory=list)
    #: counterfactual views, e.g. {"text_removed": {"image": RGB, "pred": str, "confidence": float,
    #: "mask": bool HxW}, "text_placebo": {...}}; confidence is of the originally predicted class.
    edits: dict[str, dict] = field(default_factory=dict)


def top_k(items: Iterable[GalleryItem], k: int) -> list[GalleryItem]:
    """The ``k`` items with the highest score (ties broken by path), best first."""
    if k <= 0:
        return []
    finite = [it for it in items if np.isfinite(it.score)]
    return heapq.nlargest(k, finite, key=lambda it: (it.score, it.path))
