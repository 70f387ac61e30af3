"""Report pieces of the CAM variants: the "attention by depth" panel (cam.layers) as a static
inline SVG, the gallery's heatmap name (guided Grad-CAM) and the export files in the run folder.

Why hand-made SVG: a handful of polylines needs no plotting library, no script and no CDN, and
stays a few kilobytes. One line per class plus the overall line (with its interval as error
bars), layers on the x axis in the order the config lists them, the chance level (lift = 1)
dashed. Every text that reaches the markup is escaped here, since the result is inserted as
Markup.
"""

from __future__ import annotations

import math
from html import escape
from typing import Any

from markupsafe import Markup

__all__ = ["depth_panel", "heatmap_name", "label_heatmaps", "export_files"]

W, H = 560, 260
LEFT, RIGHT, TOP, BOTTOM = 76, 140, 16, 44
COLOURS = ("#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#76b7b2", "#edc948", "#ff9da7", "#9c755f", "#bab0ac", "#e15759")
MAX_CLASSES = len(COLOURS)


def _f(v: Any) -> float | None:
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _lift(entry: Any, region: str) -> float | None:
    return _f(entry.get(f"{region}_lift")) if isinstance(entry, dict) else None


def depth_panel(summary: dict, region: str = "text") -> dict[str, Any] | None:
    """SVG + table rows of ``region`` lift per layer, or None when cam.layers was off."""
    layers_info = summary.get("layers") or {}
    names = list(layers_info.get("names") or [])
    if not names or region not in (summary.get("regions") or []):
        return None
    overall = layers_info.get("overall") or {}
    per_class = layers_info.get("classes") or {}
    series: list[tuple[str, list[float | None], bool]] = [("overall", [_lift(overall.get(n), region) for n in names], True)]
    for cls, by_layer in list(per_class.items())[:MAX_CLASSES]:
        series.append((str(cls), [_lift((by_layer or {}).get(n), region) for n in names], False))
    cis = [(overall.get(n) or {}).get(f"{region}_lift_ci") for n in names]
    values = [v for _, vs, _ in series for v in vs if v is not None]
    values += [_f(c[1]) for c in cis if isinstance(c, (list, tuple)) and len(c) == 2 and _f(c[1]) is not None]
    if not values:
        return None
    top = max(max(values), 1.0) * 1.1
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM

    def x(i: int) -> float:
        return LEFT + (pw * i / (len(names) - 1) if len(names) > 1 else pw / 2)

    def y(v: float) -> float:
        return TOP + ph * (1 - v / top)

    parts = [f'<svg class="depth-plot" width="{W}" height="{H}" viewBox="0 0 {W} {H}" role="img" '
             f'aria-label="{escape(region)} lift by layer, per class">']
    parts.append(f'<line x1="{LEFT}" y1="{TOP + ph}" x2="{LEFT + pw}" y2="{TOP + ph}" class="axis-line" stroke="#888"/>')
    parts.append(f'<line x1="{LEFT}" y1="{y(1):.1f}" x2="{LEFT + pw}" y2="{y(1):.1f}" stroke="#888" stroke-dasharray="4 3"/>')
    parts.append(f'<text x="{LEFT - 6}" y="{y(1) + 4:.1f}" text-anchor="end" font-size="11">1 (chance)</text>')
    parts.append(f'<text x="{LEFT - 6}" y="{TOP + 8}" text-anchor="end" font-size="11">{top:.1f}</text>')
    for i, n in enumerate(names):
        parts.append(f'<text x="{x(i):.1f}" y="{H - BOTTOM + 16}" text-anchor="middle" font-size="11">{escape(n[-18:])}</text>')
    parts.append(f'<text x="{LEFT + pw / 2:.1f}" y="{H - 6}" text-anchor="middle" font-size="11">layer (shallow → deep as configured)</text>')
    for k, (label, vs, bold) in enumerate(series):
        colour = "#222" if bold else COLOURS[(k - 1) % len(COLOURS)]
        pts = [(x(i), y(v)) for i, v in enumerate(vs) if v is not None]
        width = 3 if bold else 1.5
        if len(pts) > 1:
            path = " ".join(f"{px:.1f},{py:.1f}" for px, py in pts)
            parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="{width}" data-series="{escape(label)}"/>')
        for px, py in pts:
            parts.append(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="{3 if bold else 2}" fill="{colour}"/>')
        ly = TOP + 14 * k + 6
        parts.append(f'<line x1="{W - RIGHT + 10}" y1="{ly}" x2="{W - RIGHT + 26}" y2="{ly}" stroke="{colour}" stroke-width="{width}"/>')
        parts.append(f'<text x="{W - RIGHT + 30}" y="{ly + 4}" font-size="11">{escape(label[:18])}</text>')
    for i, c in enumerate(cis):
        if isinstance(c, (list, tuple)) and len(c) == 2 and _f(c[0]) is not None and _f(c[1]) is not None:
            parts.append(f'<line x1="{x(i):.1f}" y1="{y(_f(c[0])):.1f}" x2="{x(i):.1f}" y2="{y(_f(c[1])):.1f}" stroke="#222" stroke-width="1"/>')
    parts.append("</svg>")
    rows = [{"name": label, "overall": bold, "values": ["—" if v is None else f"{v:.2f}" for v in vs]} for label, vs, bold in series]
    return {"region": region, "layers": names, "svg": Markup("".join(parts)), "rows": rows,
            "n_classes_hidden": max(0, len(per_class) - MAX_CLASSES)}


def heatmap_name(summary: dict) -> str:
    """What the gallery's heatmaps are: the run's CAM method in words."""
    method = str((summary.get("cam") or {}).get("method") or "gradcam")
    return {"guided_gradcam": "Guided Grad-CAM"}.get(method, "Grad-CAM")


def label_heatmaps(gallery: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    """Caption the gallery's heatmap panels with ``name`` (e.g. Guided Grad-CAM) in place."""
    for card in gallery:
        for panel in card.get("panels") or []:
            if panel.get("caption") == "Grad-CAM":
                panel["caption"] = name
    return gallery


EXPORT_WHAT = {
    "regions": "every region's shapes (polygons, boxes) in original-image pixels, detector scores, read strings",
    "targets": "one row per image and top-k target rank, with its region metrics",
    "cams": "each image's heatmap(s) as float16, keyed by path (np.load, no pickle)",
}


def export_files(summary: dict) -> list[dict[str, str]]:
    """The run folder's export files that this run wrote (summary.exports), for the files list."""
    exports = summary.get("exports") or {}
    return [{"name": str(exports[k]), "what": what} for k, what in EXPORT_WHAT.items() if exports.get(k)]
