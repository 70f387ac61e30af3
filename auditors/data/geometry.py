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

__all__ = [
    "Placement",
    "placement_for",
    "warp_image",
    "warp_mask",
    "warp_points",
    "polygons_to_mask",
    "polygon_masks",
    "image_area_mask",
    "xywh_to_polygon",
    "clip_polygon",
]

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


#: Polygons rasterised at once when only their union is wanted (bounds the (K, H, W) buffer).
_UNION_BATCH = 32


def polygons_to_mask(polygons: list[np.ndarray], hw: tuple[int, int]) -> np.ndarray:
    """Rasterise polygons (each (K, 2) x/y in pixel-edge coordinates) to one boolean HxW mask (their union).

    The pixel rule is :func:`polygon_masks`'; polygons are rasterised a batch at a time, so a
    union of many polygons never holds one full-size mask per polygon.
    """
    mask = np.zeros(hw, dtype=bool)
    for start in range(0, len(polygons), _UNION_BATCH):
        mask |= polygon_masks(polygons[start : start + _UNION_BATCH], hw).any(axis=0)
    return mask



def polygon_masks(polygons: list[np.ndarray], hw: tuple[int, int]) -> np.ndarray:
    """One boolean HxW mask per polygon, (K, H, W), rasterised together (per-instance metrics).

    Pixel (i, j) covers [j, j+1) x [i, i+1); it is in a polygon when its centre is inside by the
    even-odd rule, half-open on the right and bottom edges (a 40 x 20 box covers exactly 800
    pixels). Own scan-line fill rather than ``cv2.fillPoly``, whose boundary rule changed between
    OpenCV 4 and 5 (5 also fills pixels whose centres lie on or just past the edge). Polygons with
    the same number of vertices are filled in one vectorised pass: an image's dozen text boxes
    cost about what one did. Fewer than 3 vertices or a non-finite one: an empty mask.
    """
    h, w = hw
    masks = np.zeros((len(polygons), h, w), dtype=bool)
    by_size: dict[int, list[int]] = {}
    points = [np.asarray(poly, dtype=np.float64).reshape(-1, 2) for poly in polygons]
    for k, p in enumerate(points):
        if len(p) >= 3 and np.isfinite(p).all():
            by_size.setdefault(len(p), []).append(k)
    for ks in by_size.values():
        _fill_same_size(np.stack([points[k] for k in ks]), masks, ks)
    return masks


def _fill_same_size(p: np.ndarray, masks: np.ndarray, ks: list[int]) -> None:
    """Fill (K, V, 2) polygons of V vertices each into ``masks[ks[i]]`` (even-odd rule, pixel centres).

    Crossings of every scan line with every edge are found for all K polygons at once; each
    polygon's spans are then written only inside its own bounding box.
    """
    _, h, w = masks.shape
    r0 = max(int(np.ceil(p[..., 1].min() - 0.5)), 0)
    r1 = min(int(np.ceil(p[..., 1].max() - 0.5)), h)
    if r1 <= r0:
        return
    yc = np.arange(r0, r1, dtype=np.float64)[None, :, None] + 0.5  # (1, R, 1) scan-line centres
    a, b = p[:, None, :, :], np.roll(p, -1, axis=1)[:, None, :, :]  # edges a -> b, (K, 1, V, 2)
    ax, ay, bx, by = a[..., 0], a[..., 1], b[..., 0], b[..., 1]
    crosses = (yc >= np.minimum(ay, by)) & (yc < np.maximum(ay, by))  # half-open: a vertex counts once
    with np.errstate(divide="ignore", invalid="ignore"):
        xs = ax + (yc - ay) / (by - ay) * (bx - ax)
    xs = np.sort(np.where(crosses, xs, np.inf), axis=2)  # (K, R, V): crossings left to right
    # Even-odd: inside between crossings 0-1, 2-3, ...; centre j + 0.5 in [left, right)
    # <=> ceil(left - 0.5) <= j < ceil(right - 0.5). Spans of one row never overlap.
    left, right = xs[..., 0:-1:2], xs[..., 1::2]  # (K, R, P) span ends
    ok = np.isfinite(left) & np.isfinite(right)
    j0 = np.where(ok, np.clip(np.ceil(left - 0.5), 0, w), 0).astype(np.int64)
    j1 = np.where(ok, np.clip(np.ceil(right - 0.5), 0, w), 0).astype(np.int64)
    filled = j1 > j0
    for k in np.flatnonzero(filled.any(axis=(1, 2))):
        rows = np.flatnonzero(filled[k].any(axis=1))
        lo_r, hi_r = rows[0], rows[-1] + 1
        lo_c, hi_c = j0[k][filled[k]].min(), j1[k][filled[k]].max()
        cols = np.arange(lo_c, hi_c)[None, None, :]
        spans = (cols >= j0[k, lo_r:hi_r, :, None]) & (cols < j1[k, lo_r:hi_r, :, None])  # (rows, P, cols)
        masks[ks[k], r0 + lo_r : r0 + hi_r, lo_c:hi_c] = spans.any(axis=1)


def image_area_mask(p: Placement) -> np.ndarray:
    """Model-input pixels that show the image (False on letterbox padding)."""
    out = np.zeros((p.out_h, p.out_w), bool)
    y0, x0 = max(p.ty, 0), max(p.tx, 0)
    out[y0 : max(min(p.ty + p.scaled_h, p.out_h), y0), x0 : max(min(p.tx + p.scaled_w, p.out_w), x0)] = True
    return out


def xywh_to_polygon(box: tuple[float, float, float, float] | list[float]) -> np.ndarray:
    """COCO ``[x, y, width, height]`` (pixel-edge coordinates) -> (4, 2) corner polygon."""
    x, y, w, h = (float(v) for v in box)
    return np.array([[x, y], [x + w, y], [x + w, y + h], [x, y + h]], dtype=np.float64)


def clip_polygon(poly: np.ndarray, width: int, height: int) -> np.ndarray:
    """Clip a convex polygon to the image rectangle [0, width] x [0, height] (Sutherland-Hodgman).

    Clamping vertices instead would move a rotated box's corners along the edges and change
    its shape; clipping keeps exactly the part inside. Returns an empty (0, 2) array when
    nothing is inside.
    """
    pts = [tuple(map(float, p)) for p in np.asarray(poly, dtype=np.float64).reshape(-1, 2)]
    for axis, limit, keep_below in ((0, 0.0, False), (0, float(width), True), (1, 0.0, False), (1, float(height), True)):
        if not pts:
            break
        inside = (lambda q: q[axis] <= limit) if keep_below else (lambda q: q[axis] >= limit)
        out = []
        for i, cur in enumerate(pts):
            prev = pts[i - 1]
            if inside(cur):
                if not inside(prev):
                    out.append(_cross(prev, cur, axis, limit))
                out.append(cur)
            elif inside(prev):
                out.append(_cross(prev, cur, axis, limit))
        pts = out
    return np.array(pts, dtype=np.float64).reshape(-1, 2)


def _cross(a: tuple[float, float], b: tuple[float, float], axis: int, limit: float) -> tuple[float, float]:
    t = (limit - a[axis]) / (b[axis] - a[axis])
    return (a[0] + t * (b[0] - a[0]), a[1] + t * (b[1] - a[1]))
