"""One geometric model of preprocessing, shared by pixels, masks and polygons.

Every supported preprocessing (stretch, resize-shorter-side + centre crop, letterbox) is an
axis-aligned scale followed by a translation. Describing it once as ``(sx, sy, tx, ty)`` means
an image, a mask and a polygon can never be mapped differently from each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

__all__ = ["Placement", "placement_for", "warp_image", "warp_mask", "warp_points", "polygons_to_mask"]

ResizeMode = Literal["stretch", "center_crop", "letterbox"]


@dataclass(frozen=True)
class Placement:
    """Map original (x, y) to model-input (x * sx + tx, y * sy + ty) on an out_w x out_h canvas."""

    src_w: int
    src_h: int
    out_w: int
    out_h: int
    scaled_w: int
    scaled_h: int
    tx: int
    ty: int

    @property
    def sx(self) -> float:
        return self.scaled_w / self.src_w

    @property
    def sy(self) -> float:
        return self.scaled_h / self.src_h


def placement_for(src_hw: tuple[int, int], out_hw: tuple[int, int], mode: ResizeMode = "stretch") -> Placement:
    """Compute where an ``src_hw`` image lands on an ``out_hw`` model input."""
    sh, sw = int(src_hw[0]), int(src_hw[1])
    oh, ow = int(out_hw[0]), int(out_hw[1])
    if min(sh, sw, oh, ow) <= 0:
        raise ValueError(f"sizes must be positive, got src={src_hw} out={out_hw}")
    if mode == "stretch":
        return Placement(sw, sh, ow, oh, ow, oh, 0, 0)
    if mode == "center_crop":
        scale = max(ow / sw, oh / sh)
    elif mode == "letterbox":
        scale = min(ow / sw, oh / sh)
    else:
        raise ValueError(f"unknown resize mode {mode!r}")
    scaled_w = max(1, round(sw * scale))
    scaled_h = max(1, round(sh * scale))
    return Placement(sw, sh, ow, oh, scaled_w, scaled_h, (ow - scaled_w) // 2, (oh - scaled_h) // 2)


def _place(scaled: np.ndarray, p: Placement, fill: int | float) -> np.ndarray:
    """Put a scaled array at (tx, ty) on the output canvas, cropping what falls outside."""
    out_shape = (p.out_h, p.out_w) + scaled.shape[2:]
    canvas = np.full(out_shape, fill, dtype=scaled.dtype)
    x0, y0 = max(p.tx, 0), max(p.ty, 0)
    sx0, sy0 = max(-p.tx, 0), max(-p.ty, 0)
    w = min(p.out_w - x0, p.scaled_w - sx0)
    h = min(p.out_h - y0, p.scaled_h - sy0)
    canvas[y0 : y0 + h, x0 : x0 + w] = scaled[sy0 : sy0 + h, sx0 : sx0 + w]
    return canvas


def warp_image(img: np.ndarray, p: Placement, fill: int = 0) -> np.ndarray:
    """Resize (area when shrinking, linear when growing) and place an HxWxC uint8 image."""
    shrinking = p.scaled_w * p.scaled_h < p.src_w * p.src_h
    interp = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    scaled = cv2.resize(img, (p.scaled_w, p.scaled_h), interpolation=interp)
    if scaled.ndim == 2 and img.ndim == 3:
        scaled = scaled[..., None]
    return _place(scaled, p, fill)


def warp_mask(mask: np.ndarray, p: Placement) -> np.ndarray:
    """Map a boolean mask; a model pixel is in the region when >= half of it is covered."""
    frac = cv2.resize(mask.astype(np.float32), (p.scaled_w, p.scaled_h), interpolation=cv2.INTER_AREA)
    return _place(frac >= 0.5, p, False)


def warp_points(points: np.ndarray, p: Placement) -> np.ndarray:
    """Map (..., 2) x/y coordinates from original to model-input pixels."""
    pts = np.asarray(points, dtype=np.float64)
    out = np.empty_like(pts)
    out[..., 0] = pts[..., 0] * p.sx + p.tx
    out[..., 1] = pts[..., 1] * p.sy + p.ty
    return out


def polygons_to_mask(polygons: list[np.ndarray], hw: tuple[int, int]) -> np.ndarray:
    """Rasterise polygons (each (K, 2) x/y in pixel-edge coordinates) to a boolean HxW mask.

    Pixel (i, j) covers [j, j+1) x [i, i+1); it is in the mask when its centre is inside.
    """
    h, w = hw
    mask = np.zeros((h, w), dtype=np.uint8)
    if polygons:
        # cv2 samples at integer coordinates, so shift by half a pixel to test pixel centres;
        # fixed-point (shift=4) keeps sub-pixel precision.
        pts = [np.round((np.asarray(poly, dtype=np.float64) - 0.5) * 16).astype(np.int32) for poly in polygons if len(poly) >= 3]
        if pts:
            cv2.fillPoly(mask, pts, 1, lineType=cv2.LINE_8, shift=4)
    return mask.astype(bool)
