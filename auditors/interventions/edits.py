"""Interventions: remove a region by inpainting, and remove a matched placebo region.

Heatmap mass is correlational. Inpainting a region away and re-running the model measures
whether the prediction *needs* it; inpainting an equal-area, same-shape region elsewhere (the
placebo) measures what any occlusion of that size costs. The effect is the difference.

The placebo is only a control when it removes *none* of the region. A rigid copy of the whole
mask cannot achieve that for a frame (it runs around the image) or for text at the top and the
bottom (any shift lands on one of them), so the placebo is built piece by piece: the whole
region is placed (a flipped or shifted copy) at a random position where it fits entirely inside
free image content (not the region, not ``avoid``, not letterbox padding); when it fits nowhere,
its connected components are placed one by one, and a component that fits nowhere is cut in two
along its longer side and the halves are placed in turn. The placebo therefore has exactly the region's area and its local shape (stroke
thickness, line height), and overlaps the region by construction not at all. When no placement
exists (a region larger than the free content, e.g. a background), there is no placebo and the
image is recorded and left out of effects rather than compared with a broken control.

Edits happen on the model-input view (what the model sees), so no resampling can blur the
boundary between edited and untouched pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

__all__ = [
    "dilate", "placebo_mask", "PlaceboResult", "inpaint", "Intervention", "plan_intervention", "image_seed",
    "NO_PLACEBO_REASONS",
]

_FLAGS = {"telea": cv2.INPAINT_TELEA, "ns": cv2.INPAINT_NS}

#: Why an image has no placebo (``<r>_placebo_status``); "ok" when it has one.
NO_PLACEBO_REASONS = ("too_large", "no_room", "overlap")

#: Pieces smaller than this (pixels) are not cut further: a 1-2 px speck is no longer a shape.
MIN_PIECE = 4


def dilate(mask: np.ndarray, margin: int) -> np.ndarray:
    """Grow a boolean mask by ``margin`` pixels (square structuring element)."""
    if margin <= 0 or not mask.any():
        return mask.copy()
    k = 2 * margin + 1
    return cv2.dilate(mask.astype(np.uint8), np.ones((k, k), np.uint8)).astype(bool)


@dataclass
class PlaceboResult:
    """A placebo mask (None when none exists), its overlap with the region and why it failed."""

    mask: np.ndarray | None
    overlap: float
    status: str  # "ok" or one of NO_PLACEBO_REASONS
    n_pieces: int = 0


def _components(mask: np.ndarray) -> list[tuple[np.ndarray, int, int]]:
    """Connected components (8-connectivity) as (crop, y0, x0), largest first."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    out = []
    for k in range(1, n):
        x, y, w, h, _area = stats[k]
        out.append(((labels[y : y + h, x : x + w] == k), int(y), int(x)))
    out.sort(key=lambda c: -int(c[0].sum()))
    return out


def _split(piece: np.ndarray) -> list[np.ndarray]:
    """Cut a piece in two across its longer side; return the non-empty halves (tight crops)."""
    h, w = piece.shape
    halves = (piece[: h // 2], piece[h // 2 :]) if h >= w else (piece[:, : w // 2], piece[:, w // 2 :])
    out = []
    for half in halves:
        if half.any():
            ys, xs = np.nonzero(half)
            out.append(half[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1])
    return out


#: Random positions tried before the exact search: cheap, and enough when the image is mostly free.
_SAMPLES = 24


def _find_position(
    free: np.ndarray, piece: np.ndarray, rng: np.random.Generator, exact: bool = True
) -> tuple[int, int] | None:
    """A uniformly random top-left (y, x) where ``piece`` covers only free pixels, or None.

    Rejection sampling first (uniform over valid positions when it succeeds); when it does not,
    the exact search: correlating the blocked map with the piece counts, for every position,
    the blocked pixels the piece would cover.
    """
    h, w = piece.shape
    H, W = free.shape
    if h > H or w > W:
        return None
    for _ in range(_SAMPLES):
        y, x = int(rng.integers(H - h + 1)), int(rng.integers(W - w + 1))
        if free[y : y + h, x : x + w][piece].all():
            return y, x
    if not exact:
        return None
    from scipy.signal import fftconvolve  # imported here: scipy.signal costs ~0.6 s on every run's start

    hits = fftconvolve((~free).astype(np.float32), piece[::-1, ::-1].astype(np.float32), mode="valid")
    pos = np.argwhere(hits < 0.5)
    if not len(pos):
        return None
    y, x = pos[int(rng.integers(len(pos)))]
    return int(y), int(x)


def placebo_mask(
    region: np.ndarray,
    rng: np.random.Generator,
    tries: int = 200,
    *,
    avoid: np.ndarray | None = None,
    content: np.ndarray | None = None,
    tolerance: float = 0.0,
) -> PlaceboResult:
    """An equal-area placebo with the region's local shape, outside ``region | avoid``, inside ``content``.

    ``tries`` bounds the placement attempts (one per piece and orientation tried). ``tolerance``
    is the largest share of the placebo allowed on ``region``; placements here never overlap,
    so it is a stated bound that the result is checked against. Returns the placebo, its
    overlap with ``region`` (share of the region's area) and a status.
    """
    area = int(region.sum())
    if area == 0:
        return PlaceboResult(None, float("nan"), "ok")
    free = ~region if content is None else (content & ~region)
    if avoid is not None:
        free &= ~avoid
    if int(free.sum()) < area:
        return PlaceboResult(None, float("nan"), "too_large")
    placed = np.zeros_like(region)
    ys, xs = np.nonzero(region)
    whole = region[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    queue = [whole]  # first the whole shape
    # The exact search for a scattered whole (many words) rarely pays off: its pieces follow.
    whole_exact = len(_components(whole)) == 1
    budget, n_pieces = int(tries), 0
    while queue:
        piece = queue.pop(0)
        orientations = [piece, piece[:, ::-1], piece[::-1, :], piece[::-1, ::-1]]
        order = rng.permutation(4)
        done = False
        for o in order:
            if budget <= 0:
                return PlaceboResult(None, float("nan"), "no_room", n_pieces)
            budget -= 1
            shape = orientations[o]
            pos = _find_position(free, shape, rng, exact=whole_exact or piece is not whole)
            if pos is not None:
                y, x = pos
                h, w = shape.shape
                placed[y : y + h, x : x + w] |= shape
                free[y : y + h, x : x + w] &= ~shape
                n_pieces += 1
                done = True
                break
        if not done:
            parts = [crop for crop, _, _ in _components(piece)]
            if len(parts) < 2:  # one component: cut it (a cut half may fall apart into several)
                halves = _split(piece) if piece.sum() >= 2 * MIN_PIECE else []
                if len(halves) < 2:
                    return PlaceboResult(None, float("nan"), "no_room", n_pieces)
                parts = [crop for half in halves for crop, _, _ in _components(half)]
            queue = sorted(queue + parts, key=lambda c: -int(c.sum()))
    overlap = float((placed & region).sum()) / area
    if overlap > tolerance or int(placed.sum()) != area:
        return PlaceboResult(None, overlap, "overlap", n_pieces)
    return PlaceboResult(placed, overlap, "ok", n_pieces)


def inpaint(view: np.ndarray, mask: np.ndarray, method: str = "telea", radius: int = 3) -> np.ndarray:
    """Fill ``mask`` in an RGB uint8 image from its surroundings (pixels outside the mask only)."""
    if not mask.any():
        return view.copy()
    return cv2.inpaint(np.ascontiguousarray(view), mask.astype(np.uint8), radius, _FLAGS[method])


def image_seed(seed: int, digest: str, region: str) -> int:
    """Per-image, per-region seed: placements are reproducible and independent of chunking."""
    return (int(digest[:12], 16) ^ (seed * 0x9E3779B1) ^ sum(map(ord, region)) * 7919) & 0x7FFFFFFF


@dataclass
class Intervention:
    """The two edited views of one image for one region and the masks that produced them.

    ``placebo``/``placebo_mask`` are None when no valid placebo exists (``placebo_status``
    says why); such an image has no effect and is left out of effect aggregates.
    """

    removed: np.ndarray
    placebo: np.ndarray | None
    removed_mask: np.ndarray
    placebo_mask: np.ndarray | None
    placebo_overlap: float
    placebo_status: str = "ok"

    @property
    def has_placebo(self) -> bool:
        return self.placebo is not None


def plan_intervention(
    view: np.ndarray,
    mask: np.ndarray,
    *,
    method: str,
    radius: int,
    margin: int,
    seed: int,
    tries: int,
    avoid: np.ndarray | None = None,
    content: np.ndarray | None = None,
    tolerance: float = 0.0,
) -> Intervention | None:
    """Both edits of ``view`` for region ``mask``; None when the region is empty.

    The removed area is ``mask`` dilated by ``margin`` (within ``content``, the pixels showing
    the image). The placebo has that area, avoids it and ``avoid`` dilated by ``margin`` (for
    a token: every other text too), and stays inside ``content``.
    """
    if not mask.any():
        return None
    removed_mask = dilate(mask, margin)
    if content is not None:
        removed_mask &= content
        if not removed_mask.any():
            return None
    rng = np.random.default_rng(seed)
    avoid_d = dilate(avoid, margin) if avoid is not None and avoid.any() else None
    res = placebo_mask(removed_mask, rng, tries, avoid=avoid_d, content=content, tolerance=tolerance)
    return Intervention(
        removed=inpaint(view, removed_mask, method, radius),
        placebo=inpaint(view, res.mask, method, radius) if res.mask is not None else None,
        removed_mask=removed_mask,
        placebo_mask=res.mask,
        placebo_overlap=res.overlap,
        placebo_status=res.status,
    )
