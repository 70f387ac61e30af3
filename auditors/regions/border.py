"""Border frame: attention on the outermost strip is a classic shortcut (frames, scanner edges)."""

from __future__ import annotations

import numpy as np

from auditors.regions.base import Region

__all__ = ["border_region"]


def _rect(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float64)


def border_region(height: int, width: int, fraction: float) -> Region:
    """A frame ``fraction`` of the width (left/right) and height (top/bottom) wide, as 4 strips."""
    if not 0 < fraction < 0.5:
        raise ValueError(f"border width must be in (0, 0.5), got {fraction}")
    bw, bh = width * fraction, height * fraction
    strips = [
        _rect(0, 0, width, bh),
        _rect(0, height - bh, width, height),
        _rect(0, bh, bw, height - bh),
        _rect(width - bw, bh, width, height - bh),
    ]
    return Region("border", polygons=strips, scores=[1.0] * 4)
