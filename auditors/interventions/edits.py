"""Interventions: remove a region by inpainting, and remove a matched placebo region.

Heatmap mass is correlational. Inpainting the text away and re-running the model measures
whether the prediction *needs* the text; inpainting an equal-area, same-shape region elsewhere
(the placebo) measures what any occlusion of that size costs. The text effect is the
difference of the two.

Edits happen on the model-input view (what the model sees), so no resampling can blur the
boundary between edited and untouched pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["dilate", "placebo_mask", "inpaint", "Intervention", "plan_intervention", "image_seed"]

_FLAGS = {"telea": cv2.INPAINT_TELEA, "ns": cv2.INPAINT_NS}


def dilate(mask: np.ndarray, margin: int) -> np.ndarray:
    """Grow a boolean mask by ``margin`` pixels (square structuring element)."""
    if margin <= 0 or not mask.any():
        return mask.copy()
    k = 2 * margin + 1
    return cv2.dilate(mask.astype(np.uint8), np.ones((k, k), np.uint8)).astype(bool)


def _shift(mask: np.ndarray, dy: int, dx: int) -> np.ndarray:
    h, w = mask.shape
    out = np.zeros_like(mask)
    ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    out[yd, xd] = mask[ys, xs]
    return out


def placebo_mask(mask: np.ndarray, rng: np.random.Generator, tries: int = 200) -> tuple[np.ndarray, float]:
    """An equal-area region of the same shape placed away from ``mask``.

    The whole mask is translated (and, when there is no room, also flipped) by random offsets
    that keep it inside the image; the candidate overlapping ``mask`` least wins. Returns the
    placebo and its overlap with ``mask`` (0.0 = fully outside, as intended).
    """
    area = int(mask.sum())
    if area == 0:
        return mask.copy(), float("nan")
    shapes = [mask, mask[::-1, :], mask[:, ::-1], mask[::-1, ::-1]]
    best, best_overlap = None, np.inf
    h, w = mask.shape
    for t in range(tries):
        shape = shapes[t % 4] if t >= tries // 2 else mask
        ys, xs = np.nonzero(shape)
        y0, y1, x0, x1 = ys.min(), ys.max(), xs.min(), xs.max()
        dy = int(rng.integers(-y0, h - y1))
        dx = int(rng.integers(-x0, w - x1))
        cand = _shift(shape, dy, dx)
        overlap = float((cand & mask).sum()) / area
        if overlap < best_overlap:
            best, best_overlap = cand, overlap
            if overlap == 0.0:
                break
    return best, best_overlap


def inpaint(view: np.ndarray, mask: np.ndarray, method: str = "telea", radius: int = 3) -> np.ndarray:
    """Fill ``mask`` in an RGB uint8 image from its surroundings."""
    if not mask.any():
        return view.copy()
    return cv2.inpaint(np.ascontiguousarray(view), mask.astype(np.uint8), radius, _FLAGS[method])


def image_seed(seed: int, digest: str, region: str) -> int:
    """Per-image, per-region seed: placements are reproducible and independent of chunking."""
    return (int(digest[:12], 16) ^ (seed * 0x9E3779B1) ^ sum(map(ord, region)) * 7919) & 0x7FFFFFFF


@dataclass
class Intervention:
    """The two edited views of one image for one region and the masks that produced them."""

    removed: np.ndarray
    placebo: np.ndarray
    removed_mask: np.ndarray
    placebo_mask: np.ndarray
    placebo_overlap: float


def plan_intervention(
    view: np.ndarray, mask: np.ndarray, *, method: str, radius: int, margin: int, seed: int, tries: int
) -> Intervention | None:
    """Both edits of ``view`` for region ``mask``; None when the region is empty."""
    if not mask.any():
        return None
    removed_mask = dilate(mask, margin)
    rng = np.random.default_rng(seed)
    # The placebo must avoid the *dilated* region, and gets the same dilation area.
    placebo, overlap = placebo_mask(removed_mask, rng, tries)
    return Intervention(
        removed=inpaint(view, removed_mask, method, radius),
        placebo=inpaint(view, placebo, method, radius),
        removed_mask=removed_mask,
        placebo_mask=placebo,
        placebo_overlap=overlap,
    )
