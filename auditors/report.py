"""The HTML bias report: one self-contained file a launch reviewer can open anywhere.

CSS, JS and every image are inlined (images as base64 PNG) so the report survives being
attached to a ticket or mailed around; nothing is fetched from the network, and a
Content-Security-Policy with a hash of our one script makes that hold even for a string we
failed to escape. Links to the run's data files are relative, so they resolve whenever the
run folder is kept together.

All user-controlled text (paths, class names, rule names) goes through Jinja2 autoescape.
Numbers are formatted here, not in the template, so a missing, None or NaN value always
shows as an em dash instead of "nan" or a crash.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import math
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup

from auditors.gallery import GalleryItem

__all__ = ["write_report", "render_report", "REPORT_NAME", "MAX_ERROR_ROWS"]

REPORT_NAME = "report.html"
MAX_ERROR_ROWS = 200
MAX_PANEL_SIDE = 384  # gallery panels are shown ~200 px wide; bigger only bloats the file
DASH = "\u2014"
TEMPLATE_DIR = Path(__file__).parent / "templates"

RUN_FILES: tuple[tuple[str, str], ...] = (
    ("summary.json", "settings, per-class metrics and the gate decision"),
    ("images.parquet", "one row per audited image with its region metrics"),
    ("errors.csv", "every image that could not be audited, with the stage and reason"),
    ("validation.json", "full Great Expectations validation results"),
)

REGION_NOUNS = {"text": "text", "border": "the image border", "background": "the background"}


# --------------------------------------------------------------------------- formatting


def _num(value: Any) -> float | None:
    """A finite float, or None for None/NaN/inf/non-numbers (all shown as a dash)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def fmt_pct(value: Any, digits: int = 1) -> str:
    """Fraction in [0, 1] as a percentage; the report's mass/area/hit-rate unit."""
    v = _num(value)
    return DASH if v is None else f"{v * 100:.{digits}f}%"


def _pct_words(value: Any) -> str:
    """Percentage for prose: whole numbers, but never claims a small share is 0%."""
    v = _num(value)
    if v is None:
        return DASH
    if 0 < v < 0.005:
        return "<1%"
    return f"{v * 100:.0f}%"


def fmt_float(value: Any, digits: int = 2) -> str:
    v = _num(value)
    return DASH if v is None else f"{v:.{digits}f}"


def fmt_int(value: Any) -> str:
    v = _num(value)
    return DASH if v is None else f"{int(round(v)):,}"


def _fmt_threshold(value: Any) -> str:
    """Thresholds are set by people (2.0, 0.25): show them as written, at least one decimal."""
    v = _num(value)
    if v is None:
        return DASH
    return f"{v:.1f}" if round(v, 1) == v else f"{v:g}"


def _sort_key(value: Any) -> str:
    """Value for a ``data-sort`` attribute; empty for missing so JS sorts it last."""
    v = _num(value)
    return "" if v is None else repr(v)


def _region_label(region: str) -> str:
    return region.replace("_", " ").capitalize()


def _fmt_date(value: Any) -> str:
    """ISO timestamp as 'YYYY-MM-DD HH:MM UTC'; anything unparsable is shown as given."""
    if not value:
        return DASH
    try:
        dt = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return str(value)
    if dt.tzinfo is None:
        return dt.strftime("%Y-%m-%d %H:%M")
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _dict(value: Any) -> dict:
    """Treat a missing or malformed section of summary.json as empty."""
    return value if isinstance(value, dict) else {}


# --------------------------------------------------------------------------- verdict


@dataclass
class Verdict:
    """What the banner says: a status word, a headline and one sentence per finding."""

    status: str  # pass | flagged | fail | nodata
    title: str
    headline: str
    findings: list[dict[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _lift_threshold(summary: dict, region: str) -> float | None:
    """The gate's lift limit for ``region`` (gate section first, then the config)."""
    key = f"max_{region}_lift"
    gate_cfg = _dict(_dict(summary.get("config")).get("gate"))
    for source in (_dict(summary.get("gate")), gate_cfg):
        v = _num(source.get(key))
        if v is not None:
            return v
    return None


def _finding_sentence(cls: Any, rule: str, value: Any, threshold: Any, stats: dict) -> str:
    """One failed rule in plain words, e.g. "Class 'horror': 34% of the heatmap falls on text ..."."""
    who = f"Class '{cls}'" if cls is not None else "Whole run"
    m = re.fullmatch(r"max_(\w+)_lift", rule or "")
    if m:
        region = m.group(1)
        mass, area = stats.get(f"{region}_mass"), stats.get(f"{region}_area")
        noun = REGION_NOUNS.get(region, region.replace("_", " "))
        limit = f"lift {fmt_float(value)} > {_fmt_threshold(threshold)}"
        if _num(mass) is not None and _num(area) is not None:
            return (
                f"{who}: {_pct_words(mass)} of the heatmap falls on {noun} covering "
                f"{_pct_words(area)} of the image ({limit})."
            )
        return f"{who}: attention on {noun} is too concentrated ({limit})."
    pretty = (rule or "rule").replace("_", " ")
    return f"{who}: {pretty} is {fmt_float(value)} (limit {_fmt_threshold(threshold)})."


def _findings(summary: dict) -> list[dict[str, str]]:
    """Gate failures first; flagged classes the gate did not list keep their own reasons."""
    classes = _dict(summary.get("classes"))
    failures = _dict(summary.get("gate")).get("failures") or []
    out: list[dict[str, str]] = []
    covered: set[str] = set()
    for f in failures:
        if not isinstance(f, dict):
            continue
        cls = f.get("class")
        rule = str(f.get("rule") or "")
        stats = _dict(classes.get(cls)) if cls is not None else _dict(summary.get("overall"))
        sentence = _finding_sentence(cls, rule, f.get("value"), f.get("threshold"), stats)
        out.append({"sentence": sentence, "rule": rule})
        if cls is not None:
            covered.add(str(cls))
    flagged = list(summary.get("flagged_classes") or [])
    flagged += [c for c, st in classes.items() if _dict(st).get("flagged") is True and c not in flagged]
    for cls in flagged:
        if str(cls) in covered:
            continue
        reasons = _dict(classes.get(cls)).get("flag_reasons") or []
        text = "; ".join(str(r) for r in reasons) or "flagged"
        out.append({"sentence": f"Class '{cls}': {text}.", "rule": ""})
    return out


def _validation_note(summary: dict, validation: dict) -> str | None:
    """A one-liner when the result tables themselves failed validation."""
    val = _dict(summary.get("validation"))
    success = val.get("success", _dict(validation).get("success"))
    if success is False:
        n_failed, n_total = val.get("n_failed"), val.get("n_expectations")
        if _num(n_failed) is not None and _num(n_total) is not None:
            return (
                f"Data validation failed: {fmt_int(n_failed)} of {fmt_int(n_total)} expectations "
                "did not hold, so the numbers below may be unreliable."
            )
        return "Data validation failed, so the numbers below may be unreliable."
    return None


def build_verdict(summary: dict, validation: dict | None = None) -> Verdict:
    """PASS only when the gate passed; FAIL when it failed; FLAGGED/NO DATA otherwise."""
    passed = _dict(summary.get("gate")).get("passed")
    findings = _findings(summary)
    n_images = _num(summary.get("n_images"))
    notes = [n for n in [_validation_note(summary, validation or {})] if n]
    flagged = len(findings)
    if n_images is not None and n_images == 0:
        verdict = Verdict("nodata", "NO DATA", "No images were audited, so the gate decided nothing.")
    elif passed is False:
        verdict = Verdict("fail", "FAIL", _plural(flagged, "finding") + " blocked the release gate.")
    elif findings:
        verdict = Verdict("flagged", "FLAGGED", _plural(flagged, "class") + " flagged for review.")
        if passed is None:
            notes.append("No release gate result was recorded for this run.")
    elif passed is True:
        limit = _lift_threshold(summary, "text")
        extra = f" (text lift \u2264 {_fmt_threshold(limit)})" if limit is not None else ""
        verdict = Verdict("pass", "PASS", f"Every class passed the release gate{extra}.")
    else:
        verdict = Verdict("flagged", "NO GATE", "No release gate result was recorded for this run.")
    verdict.findings = findings
    verdict.notes = notes
    return verdict


def _plural(n: int, word: str) -> str:
    plural = word + ("es" if word.endswith("s") else "s")
    return f"{n} {word if n == 1 else plural}"


# --------------------------------------------------------------------------- per-class table


def _lift_level(value: Any, threshold: float | None) -> str:
    """CSS class for a lift cell: how close it is to the gate's limit."""
    v = _num(value)
    if v is None or threshold is None:
        return ""
    if v > threshold:
        return "lift-bad"
    if v >= 0.75 * threshold:
        return "lift-warn"
    return "lift-ok"


def _flip_keys(summary: dict) -> list[str]:
    """Counterfactual columns (flip_rate_*), shown only when some class has a value."""
    groups = list(_dict(summary.get("classes")).values()) + [_dict(summary.get("overall"))]
    keys: list[str] = []
    for stats in groups:
        for k, v in _dict(stats).items():
            if k.startswith("flip_rate_") and k not in keys and _num(v) is not None:
                keys.append(k)
    return keys


def _col(key: str, label: str, kind: str = "num", group: str | None = None, fmt: str = "int",
         title: str = "", region: str | None = None) -> dict[str, Any]:
    """One column spec (every key present: the template is rendered with StrictUndefined)."""
    return {"key": key, "label": label, "kind": kind, "group": group, "fmt": fmt, "title": title, "region": region}


def _class_columns(regions: list[str], flip_keys: list[str]) -> list[dict[str, Any]]:
    """Column specs in table order: class, n, four per region, flip rates, status."""
    cols = [_col("name", "Class", kind="text"), _col("n", "Images", title="Audited images in this class")]
    for r in regions:
        grp = _region_label(r)
        cols += [
            _col(f"{r}_mass", "Mass", group=grp, fmt="pct", title=f"Share of heatmap on {r}"),
            _col(f"{r}_area", "Area", group=grp, fmt="pct", title=f"Share of image covered by {r}"),
            _col(f"{r}_lift", "Lift", group=grp, fmt="lift", region=r, title="Mass / area; 1.0 = uniform attention"),
            _col(f"{r}_hit_rate", "Hit rate", group=grp, fmt="pct",
                 title=f"Share of images whose heatmap peak lies on {r}"),
        ]
    for k in flip_keys:
        label = k.removeprefix("flip_rate_").replace("_", " ")
        cols.append(_col(k, label.capitalize(), group="Flip rate", fmt="pct",
                         title=f"Share of predictions that change ({label})"))
    cols.append(_col("flagged", "Status", kind="text"))
    return cols


def _cell(col: dict[str, Any], stats: dict, thresholds: dict[str, float | None]) -> dict[str, str]:
    value = stats.get(col["key"])
    fmt = col["fmt"]
    if fmt == "pct":
        return {"text": fmt_pct(value), "sort": _sort_key(value), "cls": "num"}
    if fmt == "lift":
        level = _lift_level(value, thresholds.get(col["region"]))
        return {"text": fmt_float(value), "sort": _sort_key(value), "cls": f"num lift {level}".strip()}
    return {"text": fmt_int(value), "sort": _sort_key(value), "cls": "num"}


def _class_row(name: str, stats: dict, cols: list[dict], thresholds: dict, min_n: float | None) -> dict:
    """One table row: formatted metric cells plus the flag state and its reasons."""
    cells = [_cell(c, stats, thresholds) for c in cols if c["kind"] == "num"]
    n = _num(stats.get("n"))
    flagged = bool(stats.get("flagged"))
    small = min_n is not None and n is not None and n < min_n
    status = "flagged" if flagged else ("small" if small else "ok")
    return {
        "name": name,
        "cells": cells,
        "status": status,
        "status_sort": {"flagged": "0", "small": "1", "ok": "2"}[status],
        "reasons": [str(r) for r in stats.get("flag_reasons") or []],
    }


def build_class_table(summary: dict) -> dict[str, Any]:
    """Header rows, body rows and the overall row of the per-class table."""
    regions = [str(r) for r in summary.get("regions") or []]
    cols = _class_columns(regions, _flip_keys(summary))
    thresholds = {r: _lift_threshold(summary, r) for r in regions}
    min_n = _num(_dict(_dict(summary.get("config")).get("gate")).get("min_images_per_class"))
    rows = [
        _class_row(str(name), _dict(stats), cols, thresholds, min_n)
        for name, stats in _dict(summary.get("classes")).items()
    ]
    overall = summary.get("overall")
    overall_row = _class_row("All images", _dict(overall), cols, thresholds, None) if overall else None
    groups: list[dict[str, Any]] = []
    for c in cols:
        if groups and c["group"] is not None and groups[-1]["label"] == c["group"]:
            groups[-1]["span"] += 1
        else:
            groups.append({"label": c["group"], "span": 1})
    return {
        "columns": cols,
        "groups": groups if any(g["label"] for g in groups) else [],
        "rows": rows,
        "overall": overall_row,
        "thresholds": {r: _fmt_threshold(t) for r, t in thresholds.items() if t is not None},
        "min_images": fmt_int(min_n) if min_n is not None and min_n > 1 else None,
    }


# --------------------------------------------------------------------------- gallery images


def _as_rgb_uint8(image: Any) -> np.ndarray | None:
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


def _cam_like(cam: Any, shape: tuple[int, int]) -> np.ndarray:
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


def _display_scale(shape: tuple[int, ...]) -> float:
    return min(1.0, MAX_PANEL_SIDE / max(shape[0], shape[1]))


def _resize(arr: np.ndarray, scale: float) -> np.ndarray:
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


def _outline_polygons(rgb: np.ndarray, polygons: list[np.ndarray], scale: float) -> np.ndarray:
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


def _mask_polygons(mask: Any, shape: tuple[int, int]) -> list[np.ndarray]:
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


def gallery_panels(item: GalleryItem) -> list[dict[str, str]]:
    """Input, heatmap, heatmap with text boxes; empty when the item has no usable image."""
    rgb = _as_rgb_uint8(item.image)
    if rgb is None:
        return []
    cam = _cam_like(item.cam, rgb.shape[:2])
    polygons = list(item.text_polygons or []) or _mask_polygons(
        _dict(item.regions).get("text"), rgb.shape[:2]
    )
    scale = _display_scale(rgb.shape)
    small, small_cam = _resize(rgb, scale), _resize(cam, scale)
    overlay = heatmap_overlay(small, small_cam)
    boxed = _outline_polygons(overlay, polygons, scale)
    n_boxes = len(polygons)
    return [
        {"caption": "Input", "src": png_data_uri(small)},
        {"caption": "Grad-CAM", "src": png_data_uri(overlay)},
        {"caption": f"Text boxes ({n_boxes})", "src": png_data_uri(boxed)},
    ]


def _item_metrics(item: GalleryItem, regions: list[str], thresholds: dict[str, float | None]) -> list[dict[str, str]]:
    """Caption figures per region: mass and lift (the numbers the ranking is about)."""
    metrics = _dict(item.metrics)
    out = []
    for r in regions or ["text"]:
        mass, lift = metrics.get(f"{r}_mass"), metrics.get(f"{r}_lift")
        if mass is None and lift is None:
            continue
        out.append({"label": f"{_region_label(r)} mass", "value": fmt_pct(mass), "cls": ""})
        out.append({"label": f"{_region_label(r)} lift", "value": fmt_float(lift),
                    "cls": _lift_level(lift, thresholds.get(r))})
    return out


def build_gallery(
    gallery: list[GalleryItem], regions: list[str], thresholds: dict[str, float | None] | None = None
) -> list[dict[str, Any]]:
    """Template-ready gallery cards, keeping the caller's ranking."""
    cards = []
    for rank, item in enumerate(gallery or [], start=1):
        label = None if item.label is None else str(item.label)
        cards.append({
            "rank": rank,
            "path": str(item.path),
            "label": label if label is not None else DASH,
            "pred": str(item.pred),
            "mismatch": label is not None and label != str(item.pred),
            "confidence": fmt_pct(item.confidence),
            "score": fmt_float(item.score, 3),
            "metrics": _item_metrics(item, regions, thresholds or {}),
            "panels": gallery_panels(item),
        })
    return cards


# --------------------------------------------------------------------------- data quality


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return DASH
    return str(value)


def build_errors(errors: pd.DataFrame | None, cap: int = MAX_ERROR_ROWS) -> dict[str, Any]:
    """First ``cap`` error rows, counts per stage and how many were left out."""
    if errors is None or len(errors) == 0:
        return {"rows": [], "total": 0, "more": 0, "by_stage": []}
    df = errors.reset_index(drop=True)
    cols = ["path", "stage", "reason"]
    rows = [{c: _text(df.at[i, c]) if c in df.columns else DASH for c in cols} for i in range(min(cap, len(df)))]
    by_stage: list[tuple[str, int]] = []
    if "stage" in df.columns:
        counts = df["stage"].fillna(DASH).astype(str).value_counts()
        by_stage = [(str(k), int(v)) for k, v in counts.items()]
    return {"rows": rows, "total": len(df), "more": max(0, len(df) - cap), "by_stage": by_stage}


def _cam_status_counts(images: pd.DataFrame | None) -> list[tuple[str, int]]:
    if images is None or len(images) == 0 or "cam_status" not in images.columns:
        return []
    counts = images["cam_status"].fillna(DASH).astype(str).value_counts()
    return [(str(k), int(v)) for k, v in counts.items()]


def build_counts(summary: dict, images: pd.DataFrame | None, n_errors: int) -> list[dict[str, str]]:
    """The data-quality tiles: what was audited, what failed, what was degenerate."""
    n_images = summary.get("n_images", len(images) if images is not None else None)
    timing = _dict(summary.get("timing"))
    tiles = [
        {"label": "Images audited", "value": fmt_int(n_images), "tone": ""},
        {"label": "Failed to audit", "value": fmt_int(summary.get("n_failed", n_errors)),
         "tone": "bad" if (_num(summary.get("n_failed", n_errors)) or 0) > 0 else ""},
        {"label": "Degenerate heatmaps", "value": fmt_int(summary.get("n_degenerate")),
         "tone": "warn" if (_num(summary.get("n_degenerate")) or 0) > 0 else ""},
        {"label": "Classes", "value": fmt_int(len(_dict(summary.get("classes")))), "tone": ""},
        {"label": "Throughput", "value": f"{fmt_float(timing.get('images_per_s'), 1)} img/s", "tone": ""},
        {"label": "Total time", "value": f"{fmt_float(timing.get('total_s'), 1)} s", "tone": ""},
    ]
    return tiles


def _compact_kwargs(kwargs: dict) -> str:
    """Expectation arguments minus the column and GE plumbing, e.g. 'min_value=0, max_value=1'."""
    skip = {"column", "batch_id", "result_format", "include_config", "catch_exceptions"}
    parts = [f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}" for k, v in kwargs.items() if k not in skip]
    text = ", ".join(parts)
    return text if len(text) <= 90 else text[:87] + "..."


def _observed(result: dict) -> str:
    """Observed value for table-level expectations (row counts, column sets)."""
    if "observed_value" not in result:
        return DASH
    value = result["observed_value"]
    text = fmt_float(value, 4).rstrip("0").rstrip(".") if _num(value) is not None else _text(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _expectation_row(entry: dict) -> dict[str, Any]:
    cfg = _dict(entry.get("expectation_config"))
    kwargs = _dict(cfg.get("kwargs"))
    result = _dict(entry.get("result"))
    exc = _dict(entry.get("exception_info"))
    column = kwargs.get("column") or ", ".join(map(str, kwargs.get("column_list") or [])) or DASH
    success = entry.get("success")
    return {
        "type": str(cfg.get("type") or cfg.get("expectation_type") or DASH),
        "column": str(column),
        "args": _compact_kwargs(kwargs),
        "success": success,
        "unexpected_count": fmt_int(result.get("unexpected_count")),
        "unexpected_percent": fmt_float(result.get("unexpected_percent"), 2) + (
            "%" if _num(result.get("unexpected_percent")) is not None else ""
        ),
        "observed": _observed(result),
        "error": str(exc.get("exception_message") or "") if exc.get("raised_exception") else "",
    }


def build_validation(validation: dict | None) -> dict[str, Any]:
    """One compact table per Great Expectations suite."""
    val = _dict(validation)
    suites = []
    for name, res in _dict(val.get("suites")).items():
        res = _dict(res)
        stats = _dict(res.get("statistics"))
        rows = [_expectation_row(_dict(e)) for e in res.get("results") or []]
        n_ok = stats.get("successful_expectations", sum(1 for r in rows if r["success"] is True))
        suites.append({
            "name": str(name),
            "success": res.get("success"),
            "evaluated": fmt_int(stats.get("evaluated_expectations", len(rows))),
            "successful": fmt_int(n_ok),
            "rows": rows,
        })
    return {"success": val.get("success"), "suites": suites}


# --------------------------------------------------------------------------- header


def _model_name(model: dict) -> str:
    for key in ("arch", "torchscript", "factory"):
        if model.get(key):
            return Path(str(model[key])).name if key == "torchscript" else str(model[key])
    return DASH


def build_settings(summary: dict) -> list[dict[str, str]]:
    """Model, CAM and gate settings a reviewer needs to interpret the numbers."""
    cfg = _dict(summary.get("config"))
    model, cam = _dict(cfg.get("model")), _dict(summary.get("cam")) or _dict(cfg.get("cam"))
    size = model.get("input_size")
    size_text = f"{size[0]}\u00d7{size[1]}" if isinstance(size, (list, tuple)) and len(size) == 2 else DASH
    resize = f" ({model['resize']})" if model.get("resize") else ""
    ckpt = model.get("checkpoint")
    amp = cam.get("amp")
    gate_limit = _lift_threshold(summary, "text")
    group_by = summary.get("group_by")
    items = [
        ("Model", _model_name(model) + (f" \u00b7 {Path(str(ckpt)).name}" if ckpt else "")),
        ("Input", size_text + resize),
        ("CAM method", _text(cam.get("method"))),
        ("CAM target", _text(cam.get("target"))),
        ("Target layer", _text(cam.get("target_layer") or model.get("target_layer"))),
        ("Device", _text(cam.get("device")) + (f" \u00b7 AMP {amp}" if amp not in (None, "off") else "")),
        ("Grouped by", {"label": "true label", "pred": "predicted class"}.get(group_by, _text(group_by))),
        ("Gate", f"text lift \u2264 {_fmt_threshold(gate_limit)}" if gate_limit is not None else DASH),
    ]
    return [{"label": k, "value": v} for k, v in items]


# --------------------------------------------------------------------------- render


@functools.lru_cache(maxsize=1)
def _environment() -> Environment:
    # autoescape=True, not select_autoescape(): our template is named *.html.j2, which
    # select_autoescape's extension check would treat as "not HTML" and leave unescaped.
    return Environment(
        loader=FileSystemLoader(str(TEMPLATE_DIR)),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _csp(script: str) -> str:
    """Nothing may load from anywhere but inline data; only our own script may run."""
    digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii")
    return (
        "default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
        f"script-src 'sha256-{digest}'; base-uri 'none'; form-action 'none'"
    )


def build_context(
    summary: dict,
    images: pd.DataFrame | None,
    gallery: list[GalleryItem],
    validation: dict | None,
    errors: pd.DataFrame | None,
) -> dict[str, Any]:
    """Everything the template shows, already formatted (the template only lays it out)."""
    summary = _dict(summary)
    regions = [str(r) for r in summary.get("regions") or []]
    errs = build_errors(errors)
    return {
        "name": _text(summary.get("name")),
        "run_id": _text(summary.get("run_id")),
        "created_at": _fmt_date(summary.get("created_at")),
        "version": _text(summary.get("camaudit_version")),
        "settings": build_settings(summary),
        "verdict": build_verdict(summary, validation),
        "table": build_class_table(summary),
        "gallery": build_gallery(gallery, regions, {r: _lift_threshold(summary, r) for r in regions or ["text"]}),
        "counts": build_counts(summary, images, errs["total"]),
        "cam_status": _cam_status_counts(images),
        "errors": errs,
        "validation": build_validation(validation),
        "regions": regions,
        "run_files": [{"name": n, "what": w} for n, w in RUN_FILES],
        "max_error_rows": MAX_ERROR_ROWS,
    }


def render_report(
    summary: dict,
    images: pd.DataFrame | None,
    gallery: list[GalleryItem],
    validation: dict | None,
    errors: pd.DataFrame | None,
) -> str:
    """The report as an HTML string (write_report without touching the disk)."""
    env = _environment()
    script = env.get_template("_sort.js.j2").render()
    context = build_context(summary, images, gallery, validation, errors)
    return env.get_template("report.html.j2").render(**context, script=Markup(script), csp=_csp(script))


def write_report(
    run_dir: Path,
    summary: dict,
    images: pd.DataFrame,
    gallery: list[GalleryItem],
    validation: dict,
    errors: pd.DataFrame,
) -> Path:
    """Write ``run_dir/report.html`` atomically (a reader never sees half a report); return it."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    html = render_report(summary, images, gallery, validation, errors)
    out = run_dir / REPORT_NAME
    tmp = out.with_name(f".{REPORT_NAME}.{os.getpid()}.tmp")
    tmp.write_text(html, encoding="utf-8")
    os.replace(tmp, out)
    return out
