"""Image panels for the report: heatmap overlays, outlines, edited views, all as inline PNG.

Every image is inlined (base64 PNG) so the report survives being attached to a ticket or
mailed around; panels are shrunk to what the page shows.
"""

from __future__ import annotations

import base64
from typing import Any

import cv2
import numpy as np

from auditors.report.formatting import fmt_pct

__all__ = [
    "MAX_PANEL_SIDE", "as_rgb_uint8", "cam_like", "display_scale", "resize", "heatmap_overlay", "outline_polygons",
    "mask_polygons", "png_data_uri", "after_text", "edit_panel",
]

MAX_PANEL_SIDE = 384  # gallery panels are shown ~200 px wide; bigger only bloats the file


def as_rgb_uint8(image: Any) -> np.ndarray | None:
    """Any plausible image array as RGB uint8 HxWx3 (grey, RGBA and 0..1 floats included)."""
    if image is None:
        return None
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    if arr.ndim != 3 or arr.shape[2] < 3 or arr.shape[0] == 0 or arr.shape[1] == 0:
        return None
    arr = arr[..., :3]
    if arr.dtype != np.uint8:
        arr = np.nan_to_num(arr.astype(np.float32))
        if arr.max(initial=0.0) <= 1.0:
            arr = arr * 255.0
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(arr)


def cam_like(cam: Any, shape: tuple[int, int]) -> np.ndarray:
    """The heatmap as float32 in [0, 1] at ``shape``; missing or broken maps become zeros."""
    h, w = shape
    if cam is None:
        return np.zeros((h, w), np.float32)
    arr = np.nan_to_num(np.asarray(cam, dtype=np.float32), nan=0.0, posinf=1.0, neginf=0.0)
    if arr.ndim != 2 or arr.size == 0:
        return np.zeros((h, w), np.float32)
    if arr.shape != (h, w):
        arr = cv2.resize(arr, (w, h), interpolation=cv2.INTER_LINEAR)
    return np.clip(arr, 0.0, 1.0)


def display_scale(shape: tuple[int, ...]) -> float:
    return min(1.0, MAX_PANEL_SIDE / max(shape[0], shape[1]))


def resize(arr: np.ndarray, scale: float) -> np.ndarray:
    if scale >= 1.0:
        return arr
    h, w = arr.shape[:2]
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(arr, size, interpolation=cv2.INTER_AREA)


def heatmap_overlay(rgb: np.ndarray, cam: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Jet-coloured heatmap blended over the image (the usual Grad-CAM picture)."""
    heat = cv2.applyColorMap((cam * 255).astype(np.uint8), cv2.COLORMAP_JET)
    heat = cv2.cvtColor(heat, cv2.COLOR_BGR2RGB)
    return cv2.addWeighted(rgb, 1.0 - alpha, heat, alpha, 0.0)


def outline_polygons(rgb: np.ndarray, polygons: list[np.ndarray], scale: float) -> np.ndarray:
    """Text boxes as a white line on a dark halo, visible on any part of the jet colormap."""
    out = rgb.copy()
    pts = []
    for p in polygons:
        arr = np.asarray(p, dtype=np.float64)
        if arr.ndim == 2 and arr.shape[0] >= 2 and arr.shape[1] == 2 and np.isfinite(arr).all():
            pts.append(np.round(arr * scale).astype(np.int32).reshape(-1, 1, 2))
    if pts:
        cv2.polylines(out, pts, isClosed=True, color=(20, 20, 20), thickness=3, lineType=cv2.LINE_AA)
        cv2.polylines(out, pts, isClosed=True, color=(255, 255, 255), thickness=1, lineType=cv2.LINE_AA)
    return out


def mask_polygons(mask: Any, shape: tuple[int, int]) -> list[np.ndarray]:
    """Outlines of a raster text mask, for items that carry a mask but no polygons."""
    if mask is None:
        return []
    m = np.asarray(mask)
    if m.shape != shape or not m.any():
        return []
    contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return [c.reshape(-1, 2).astype(np.float64) for c in contours]


def png_data_uri(rgb: np.ndarray) -> str:
    """RGB array -> inline ``data:image/png;base64,...`` (OpenCV wants BGR)."""
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError("PNG encoding failed")
    return "data:image/png;base64," + base64.b64encode(buf.tobytes()).decode("ascii")


def after_text(view: dict, before_pred: str) -> tuple[str, bool]:
    """"horror 95%", or "comedy (horror 12%)" when the prediction changed.

    The edited view's confidence is that of the originally predicted class.
    """
    pred = view.get("pred")
    conf = fmt_pct(view.get("confidence"), 0)
    if pred is None:
        return f"{before_pred} {conf}", False
    if str(pred) == before_pred:
        return f"{pred} {conf}", False
    return f"{pred} ({before_pred} {conf})", True


def edit_panel(view: dict, caption: str, outline: bool) -> dict[str, str] | None:
    rgb = as_rgb_uint8(view.get("image"))
    if rgb is None:
        return None
    scale = display_scale(rgb.shape)
    small = resize(rgb, scale)
    if outline:
        small = outline_polygons(small, mask_polygons(view.get("mask"), rgb.shape[:2]), scale)
    return {"caption": caption, "src": png_data_uri(small)}
