"""What every experiment tracker logs, built once per run from the finished outputs.

Trackers only translate a :class:`RunPayload` into their own API, so MLflow and W&B log the
same params, metrics, tags and files, and a new tracker is one small module.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from auditors.measure.gallery import GalleryItem

__all__ = ["RunPayload", "Tracker", "build_payload", "flatten", "metric_key", "overlay"]

MAX_PARAM_CHARS = 500  # MLflow allows 6000; long lists (class names) are truncated, the full config is an artifact
_KEY_BAD = re.compile(r"[^A-Za-z0-9_.\- ]+")


@dataclass
class RunPayload:
    name: str
    run_id: str
    run_dir: Path
    config: dict[str, Any]
    params: dict[str, str]
    metrics: dict[str, float]
    tags: dict[str, str]
    files: list[Path]
    gallery: list[tuple[str, np.ndarray, str]] = field(default_factory=list)  # (file stem, RGB overlay, caption)


class Tracker(Protocol):
    """One experiment tracker: log one finished run, return where it went (ids, URIs)."""

    name: str

    def log(self, payload: RunPayload) -> dict[str, Any]: ...


def flatten(data: Any, prefix: str = "") -> dict[str, str]:
    """Nested config -> ``{"cam.batch_size": "32", ...}``; lists as JSON text."""
    out: dict[str, str] = {}
    if isinstance(data, dict):
        for k, v in data.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    else:
        text = data if isinstance(data, str) else json.dumps(data)
        out[prefix] = text if len(text) <= MAX_PARAM_CHARS else text[: MAX_PARAM_CHARS - 3] + "..."
    return out


def metric_key(*parts: str) -> str:
    """Tracker-safe metric name: class names may hold any character, keys may not."""
    return "/".join(_KEY_BAD.sub("_", p).strip() or "_" for p in parts)


def _numbers(stats: dict[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in stats.items():
        if isinstance(v, bool):
            out[k] = float(v)
        elif isinstance(v, (int, float)) and math.isfinite(v):
            out[k] = float(v)
        elif k.endswith("_ci") and isinstance(v, (list, tuple)) and len(v) == 2 and None not in v:
            out[k + "_low"], out[k + "_high"] = float(v[0]), float(v[1])
    return out


def overlay(item: GalleryItem, alpha: float = 0.5) -> np.ndarray | None:
    """The usual Grad-CAM picture (jet heatmap over the image) as RGB uint8, or None."""
    rgb = np.asarray(item.image)
    if rgb.ndim != 3 or rgb.shape[2] < 3 or rgb.size == 0:
        return None
    rgb = np.ascontiguousarray(rgb[..., :3].astype(np.uint8))
    cam = np.nan_to_num(np.asarray(item.cam, np.float32))
    if cam.shape != rgb.shape[:2]:
        cam = cv2.resize(cam, (rgb.shape[1], rgb.shape[0]))
    heat = cv2.cvtColor(cv2.applyColorMap((np.clip(cam, 0, 1) * 255).astype(np.uint8), cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    return cv2.addWeighted(rgb, 1 - alpha, heat, alpha, 0.0)


def build_payload(run_dir: Path, summary: dict[str, Any], gallery: list[GalleryItem]) -> RunPayload:
    """Params = the run's config; metrics = per-class and overall numbers; tags = the gate."""
    metrics: dict[str, float] = {"n_images": float(summary.get("n_images") or 0),
                                 "n_failed": float(summary.get("n_failed") or 0),
                                 "gate_passed": float(bool(summary["gate"]["passed"])),
                                 "n_flagged_classes": float(len(summary.get("flagged_classes") or []))}
    for cls, stats in (summary.get("classes") or {}).items():
        if not stats.get("n"):
            continue  # a 1000-class model: only classes with audited images carry numbers
        metrics.update({metric_key("class", str(cls), k): v for k, v in _numbers(stats).items()})
    metrics.update({metric_key("overall", k): v for k, v in _numbers(summary.get("overall") or {}).items()})
    gate = summary["gate"]
    tags = {
        "camaudit.name": str(summary["name"]),
        "camaudit.run_id": str(summary["run_id"]),
        "camaudit.version": str(summary.get("camaudit_version")),
        "camaudit.gate": "passed" if gate["passed"] else "failed",
        "camaudit.flagged_classes": ",".join(map(str, summary.get("flagged_classes") or [])) or "-",
        "camaudit.flagged_tokens": ",".join(map(str, summary.get("flagged_tokens") or [])) or "-",
    }
    files = [p for p in (run_dir / "summary.json", run_dir / "report.html", run_dir / "validation.json") if p.is_file()]
    pictures = []
    for i, item in enumerate(gallery):
        pic = overlay(item)
        if pic is not None:
            caption = f"{item.path}: pred {item.pred} ({item.confidence:.2f}), label {item.label}, text lift {item.metrics.get('text_lift', float('nan')):.2f}"
            pictures.append((f"{i:02d}-{_KEY_BAD.sub('_', Path(item.path).stem)[:60]}", pic, caption))
    config = summary.get("config") or {}
    return RunPayload(name=str(summary["name"]), run_id=str(summary["run_id"]), run_dir=run_dir, config=config,
                      params=flatten(config), metrics=metrics, tags=tags, files=files, gallery=pictures)
