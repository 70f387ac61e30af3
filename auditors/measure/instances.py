"""Text instances: every detected text region of an image, measured on its own.

The union text mask hides *which* text a model uses: titles draw attention from every model,
so a small recurring badge disappears in the union. Per-instance mass and lift, plus a visual
fingerprint of each instance's crop, let the token stage group instances across the dataset.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import cv2
import numpy as np
import torch

from auditors.data.geometry import Placement, polygon_masks
from auditors.measure.metrics import region_metrics
from auditors.regions.base import Region

__all__ = ["INSTANCE_COLUMNS", "instance_rows", "crop_fingerprint", "crop_patch", "polygon_crop", "top_instance_columns", "PATCH_H", "PATCH_MIN_W", "PATCH_MAX_W"]

#: Height of the stored grey crop the token stage compares (aligned, multi-scale) across images;
#: its width follows the crop's aspect ratio (PATCH_MIN_W..PATCH_MAX_W), so a long text line
#: keeps its letters instead of becoming a texture.
PATCH_H, PATCH_MIN_W, PATCH_MAX_W = 16, 8, 192

#: text_instances.parquet columns and dtypes.
INSTANCE_COLUMNS: dict[str, str] = {
    "path": "string",
    "label": "string",
    "pred": "string",
    "instance": "int64",
    "polygon": "string",  # JSON [[x, y], ...] in original-image pixels
    "score": "float64",  # detector score
    "is_text": "boolean",  # score >= regions.text.min_score (low-confidence fragments are kept, marked)
    "text": "string",  # recognised string (None without recognition)
    "text_conf": "float64",
    "fingerprint": "string",  # 64-bit difference hash of the crop, hex
    "aspect": "float64",  # crop width / height
    "patch": "string",  # base64 grey crop, PATCH_H high: the token stage's visual descriptor
    "mass": "float64",
    "area": "float64",
    "lift": "float64",
    "hit": "float64",
}


def polygon_crop(image: np.ndarray, polygon: np.ndarray, pad: int = 1) -> np.ndarray:
    """Axis-aligned crop around ``polygon`` (original pixels), at least 1x1."""
    h, w = image.shape[:2]
    x0, y0 = np.floor(polygon.min(axis=0)).astype(int) - pad
    x1, y1 = np.ceil(polygon.max(axis=0)).astype(int) + pad
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(max(x1, x0 + 1), w), min(max(y1, y0 + 1), h)
    return image[y0:y1, x0:x1]


def crop_fingerprint(crop: np.ndarray) -> str:
    """Difference hash (9x8 grey -> 64 bits): robust to scale and mild colour changes.

    Recurring badges and logos are pasted as the same artwork, so their hashes are within a few
    bits of each other even when OCR cannot read them.
    """
    if crop.size == 0:
        return "0" * 16
    grey = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY) if crop.ndim == 3 else crop
    small = cv2.resize(grey, (9, 8), interpolation=cv2.INTER_AREA).astype(np.int16)
    bits = (small[:, 1:] > small[:, :-1]).flatten()
    value = 0
    for b in bits:
        value = (value << 1) | int(b)
    return f"{value:016x}"


def crop_patch(crop: np.ndarray) -> str:
    """The crop as a grey patch ``PATCH_H`` high, base64 (16 x 48 = 768 bytes for a 3:1 word).

    Unlike a 64-bit hash this keeps enough of the mark to *align* two crops whose boxes differ by
    a few pixels (see ``tokens.visual``), which is what splits one badge into several tokens.
    """
    if crop.size == 0:
        return base64.b64encode(bytes(PATCH_H * PATCH_MIN_W)).decode("ascii")
    grey = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY) if crop.ndim == 3 else crop
    width = int(np.clip(round(PATCH_H * crop.shape[1] / max(crop.shape[0], 1)), PATCH_MIN_W, PATCH_MAX_W))
    small = cv2.resize(grey, (width, PATCH_H), interpolation=cv2.INTER_AREA)
    return base64.b64encode(np.ascontiguousarray(small, dtype=np.uint8).tobytes()).decode("ascii")


def instance_rows(
    path: str,
    label: str | None,
    pred: str,
    original: np.ndarray,
    text: Region,
    placement: Placement,
    cam_map: torch.Tensor,
    min_score: float,
) -> list[dict[str, Any]]:
    """One row per text instance of one image, with its own mass/area/lift/hit."""
    if not text.polygons:
        return []
    hw = (placement.out_h, placement.out_w)
    model_polys = text.model_polygons(placement)
    masks = polygon_masks(model_polys, hw)
    met = region_metrics(cam_map[None], torch.from_numpy(masks[None]).to(cam_map.device))
    met = {k: v[0].cpu().numpy() for k, v in met.items()}
    rows = []
    for k, poly in enumerate(text.polygons):
        crop = polygon_crop(original, poly)
        score = float(text.scores[k]) if k < len(text.scores) else float("nan")
        rows.append(
            {
                "path": path,
                "label": label,
                "pred": pred,
                "instance": k,
                "polygon": json.dumps(np.round(poly, 1).tolist()),
                "score": score,
                "is_text": bool(score >= min_score) if np.isfinite(score) else None,
                "text": text.texts[k] if text.texts else None,
                "text_conf": float(text.text_scores[k]) if getattr(text, "text_scores", None) else float("nan"),
                "fingerprint": crop_fingerprint(crop),
                "aspect": crop.shape[1] / max(crop.shape[0], 1),
                "patch": crop_patch(crop),
                "mass": float(met["mass"][k]),
                "area": float(met["area"][k]),
                "lift": float(met["lift"][k]),
                "hit": float(met["hit"][k]),
            }
        )
    return rows


def top_instance_columns(rows: list[dict[str, Any]], text_mass: float) -> dict[str, Any]:
    """Per-image summary: the instance holding the most mass and its share of the text mass."""
    if not rows:
        return {"text_top_instance": None, "text_top_instance_mass": None, "text_top_instance_share": None}
    best = max(rows, key=lambda r: (r["mass"] if np.isfinite(r["mass"]) else -1.0))
    share = best["mass"] / text_mass if np.isfinite(text_mass) and text_mass > 0 else float("nan")
    return {"text_top_instance": int(best["instance"]), "text_top_instance_mass": best["mass"], "text_top_instance_share": share}
