"""Where regions overlap, and how ``regions.exclusive`` gives each pixel to one region.

Text on a border, a watermark over the background: overlapping regions share CAM mass, so a
per-region mass can sum to more than 1. Overlap columns make that visible per image;
exclusive mode removes it by a priority order.
"""

from __future__ import annotations

import numpy as np

from auditors.config.schema import REFERENCE_REGIONS

__all__ = ["priority_order", "resolve_exclusive", "overlap_pairs", "overlap_values"]

DEFAULT_TAIL = ("border", "background")


def priority_order(names: list[str], priority: list[str] | None) -> list[str]:
    """Enabled ``names`` in resolution order: the configured priority first (disabled names
    skipped), then the rest in the default order text, custom regions, border, background."""
    names = [n for n in names if n not in REFERENCE_REGIONS]  # measured as drawn, never claims or loses pixels
    default = [n for n in names if n not in DEFAULT_TAIL] + [n for n in DEFAULT_TAIL if n in names]
    head = [n for n in (priority or []) if n in names]
    return head + [n for n in default if n not in head]


def resolve_exclusive(masks: np.ndarray, names: list[str], order: list[str]) -> np.ndarray:
    """(B, R, H, W) masks -> copies where each pixel belongs to its highest-priority region only."""
    out = masks.copy()
    claimed = np.zeros((masks.shape[0],) + masks.shape[2:], bool)
    for name in order:
        j = names.index(name)
        out[:, j] &= ~claimed
        claimed |= out[:, j]
    return out


def overlap_pairs(names: list[str]) -> list[tuple[str, str]]:
    """Every unordered pair, in column order (``a`` before ``b``)."""
    return [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]


def overlap_values(masks: np.ndarray, names: list[str], failed: np.ndarray) -> list[dict[str, float]]:
    """Per image: ``overlap_<a>_<b>`` = share of a's pixels that b also covers (NaN when a is
    empty or either failed) and ``regions_overlap`` = share of all pixels in two or more
    regions (NaN when any region failed)."""
    out = []
    pairs = overlap_pairs(names)
    for i in range(masks.shape[0]):
        m = masks[i]
        row: dict[str, float] = {}
        areas = m.reshape(m.shape[0], -1).sum(axis=1)
        for a, b in pairs:
            ja, jb = names.index(a), names.index(b)
            if failed[i, ja] or failed[i, jb] or areas[ja] == 0:
                row[f"overlap_{a}_{b}"] = float("nan")
            else:
                row[f"overlap_{a}_{b}"] = float((m[ja] & m[jb]).sum() / areas[ja])
        row["regions_overlap"] = float("nan") if failed[i].any() else float((m.sum(axis=0) >= 2).mean())
        out.append(row)
    return out
