"""Static inline SVG charts for the report: hand-made SVG, no script, no network, no library.

Three charts, all read from the per-image table (images.parquet) or the typed summary:

- per class, the distribution of each region's lift (a box of the quartiles, whiskers to the
  5th/95th percentiles, and the images as dots), with the lift = 1 line (uniform attention);
- per image, the region's heatmap mass against its area, with the mass = area (lift = 1) line:
  dots above it get more attention than their size explains;
- per class, the flip rate of the region-removed edit next to the placebo edit (counterfactual runs).

Every chart is an ``<svg role="img">`` with a ``<title>`` and a ``<desc>`` that says in words
what it shows, so a screen reader gets the numbers without the picture. Coordinates are rounded
to 0.1 px; each mark carries its value as ``data-*`` so tests can check the mapping. Dots are
capped per class/chart (an even sample over the sorted values keeps the distribution's shape)
so a 100k-image run does not make a 100 MB report.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from markupsafe import Markup, escape

from auditors.audit.summary import Summary
from auditors.report.formatting import REGION_NOUNS, fmt_pct, num, region_label

__all__ = ["CHART_W", "MAX_DOTS_PER_CLASS", "MAX_SCATTER_DOTS", "build_charts", "lift_chart", "scatter_chart",
           "flip_chart"]

CHART_W = 640
LEFT, RIGHT, TOP, BOTTOM = 130, 20, 28, 30
ROW_H = 30
MAX_DOTS_PER_CLASS = 150
MAX_SCATTER_DOTS = 800
PALETTE = ("#4269d0", "#efb118", "#ff725c", "#6cc5b0", "#3ca951", "#ff8ab7", "#a463f2", "#97bbf5")
OTHER = "#9aa0a6"


def _linear(lo: float, hi: float, a: float, b: float) -> Callable[[float], float]:
    span = (hi - lo) or 1.0
    return lambda v: round(a + (min(max(v, lo), hi) - lo) / span * (b - a), 1)


def _ticks(hi: float, n: int = 5) -> list[float]:
    raw = hi / n
    mag = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1.0
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    return [round(k * step, 10) for k in range(int(hi / step + 1e-9) + 1)]


def _even_sample(values: np.ndarray, cap: int) -> np.ndarray:
    """At most ``cap`` of ``values`` (sorted), evenly spaced, always keeping both extremes."""
    values = np.sort(values)
    if len(values) <= cap:
        return values
    return values[np.unique(np.linspace(0, len(values) - 1, cap).round().astype(int))]


def _svg(w: float, h: float, uid: str, title: str, desc: str, body: list[str]) -> Markup:
    head = (f'<svg class="chart" role="img" width="{w}" height="{h}" '
            f'viewBox="0 0 {w} {h}" aria-labelledby="{uid}-t {uid}-d" id="{uid}">'
            f'<title id="{uid}-t">{escape(title)}</title><desc id="{uid}-d">{escape(desc)}</desc>')
    return Markup(head + "".join(body) + "</svg>")


def _axis_x(x: Callable[[float], float], ticks: list[float], y0: float, fmt: Callable[[float], str],
            hi: float | None = None) -> list[str]:
    end = x(hi if hi is not None else ticks[-1])
    out = [f'<line class="axis" x1="{x(ticks[0])}" x2="{end}" y1="{y0}" y2="{y0}" stroke="#888"/>']
    for t in ticks:
        out.append(f'<text class="tick" x="{x(t)}" y="{y0 + 14}" text-anchor="middle" font-size="10" '
                   f'fill="#555">{escape(fmt(t))}</text>')
    return out


def _groups(images: pd.DataFrame, group_by: str, classes: list[str]) -> list[tuple[str, pd.DataFrame]]:
    col = group_by if group_by in images.columns else "label"
    if col not in images.columns:
        return []
    ok = images[images["cam_status"] == "ok"] if "cam_status" in images.columns else images
    order = [c for c in classes if c in set(ok[col].dropna().astype(str))]
    return [(c, ok[ok[col].astype(str) == c]) for c in order]


def lift_chart(images: pd.DataFrame, region: str, group_by: str, classes: list[str]) -> dict[str, Any] | None:
    """Per class, the spread of ``<region>_lift`` over images; None when no image has one."""
    col = f"{region}_lift"
    if col not in images.columns:
        return None
    groups = [(c, pd.to_numeric(g[col], errors="coerce").to_numpy(float)) for c, g in _groups(images, group_by, classes)]
    groups = [(c, v[np.isfinite(v)]) for c, v in groups]
    groups = [(c, v) for c, v in groups if len(v)]
    if not groups:
        return None
    every = np.concatenate([v for _, v in groups])
    # Clip the axis at the 98th percentile (at least 2): one image with lift 40 must not squash the rest.
    hi = max(2.0, float(np.quantile(every, 0.98)) * 1.1)
    x = _linear(0.0, hi, LEFT, CHART_W - RIGHT)
    h = TOP + ROW_H * len(groups) + BOTTOM
    uid = f"chart-lift-{region}"
    body = [f'<line class="ref" x1="{x(1.0)}" x2="{x(1.0)}" y1="{TOP - 8}" y2="{h - BOTTOM}" stroke="#c0392b" '
            f'stroke-dasharray="4 3" data-value="1"/>',
            f'<text x="{x(1.0) + 3}" y="{TOP - 12}" font-size="10" fill="#c0392b">lift = 1</text>']
    lines = []
    n_clipped = 0
    for k, (cls, v) in enumerate(groups):
        cy = TOP + ROW_H * k + ROW_H / 2
        q05, q25, q50, q75, q95 = (float(q) for q in np.quantile(v, [0.05, 0.25, 0.5, 0.75, 0.95]))
        n_clipped += int((v > hi).sum())
        body.append(f'<text x="{LEFT - 8}" y="{cy + 4}" text-anchor="end" font-size="11" fill="#222">'
                    f'{escape(cls)}</text>')
        body.append(f'<g class="box" data-class="{escape(cls)}" data-median="{q50:.6g}" data-q1="{q25:.6g}" '
                    f'data-q3="{q75:.6g}"><title>{escape(cls)}: median lift {q50:.2f}, middle half '
                    f'{q25:.2f}\u2013{q75:.2f}, n={len(v)}</title>'
                    f'<line x1="{x(q05)}" x2="{x(q95)}" y1="{cy}" y2="{cy}" stroke="#555"/>'
                    f'<rect x="{x(q25)}" y="{cy - 8}" width="{round(x(q75) - x(q25), 1)}" height="16" '
                    f'fill="#dfe6f5" stroke="#4269d0" fill-opacity="0.6"/>'
                    f'<line class="median" x1="{x(q50)}" x2="{x(q50)}" y1="{cy - 8}" y2="{cy + 8}" '
                    f'stroke="#1d3a8a" stroke-width="2"/></g>')
        for i, val in enumerate(_even_sample(v, MAX_DOTS_PER_CLASS)):
            jitter = ((i * 0.6180339887) % 1.0 - 0.5) * 12  # deterministic, so reports are reproducible
            body.append(f'<circle class="dot" cx="{x(float(val))}" cy="{round(cy + jitter, 1)}" r="2" '
                        f'fill="#1d3a8a" fill-opacity="0.35" data-value="{float(val):.6g}"/>')
        lines.append(f"{cls}: median {q50:.2f}, middle half {q25:.2f} to {q75:.2f} ({len(v)} images)")
    body += _axis_x(x, _ticks(hi), h - BOTTOM + 2, lambda t: f"{t:g}", hi)
    label, noun = region_label(region), REGION_NOUNS.get(region, region.replace("_", " "))
    title = f"{label} lift per image, by class"
    desc = (f"Each row is a class; the box spans the middle half of its images' {noun} lift, the whiskers the 5th "
            f"to 95th percentile, dots are images. The dashed line is lift 1 (attention equal to area). "
            + "; ".join(lines) + ".")
    if n_clipped:
        desc += f" {n_clipped} images with lift above {hi:.2f} are drawn at the right edge."
    return {"id": uid, "region": region, "title": title, "svg": _svg(CHART_W, h, uid, title, desc, body),
            "n_clipped": n_clipped, "axis_max": hi}


def scatter_chart(images: pd.DataFrame, region: str, group_by: str, classes: list[str]) -> dict[str, Any] | None:
    """Per image, ``<region>_mass`` against ``<region>_area`` with the mass = area line."""
    mc, ac = f"{region}_mass", f"{region}_area"
    if mc not in images.columns or ac not in images.columns:
        return None
    pts = []
    for k, (cls, g) in enumerate(_groups(images, group_by, classes)):
        m = pd.to_numeric(g[mc], errors="coerce").to_numpy(float)
        a = pd.to_numeric(g[ac], errors="coerce").to_numpy(float)
        keep = np.isfinite(m) & np.isfinite(a)
        pts += [(float(aa), float(mm), k, cls) for aa, mm in zip(a[keep], m[keep])]
    if not pts:
        return None
    n_all = len(pts)
    if n_all > MAX_SCATTER_DOTS:
        pts = [pts[i] for i in np.unique(np.linspace(0, n_all - 1, MAX_SCATTER_DOTS).round().astype(int))]
    # Same range on both axes so the lift = 1 line is the diagonal.
    hi = min(1.0, max(max(p[0] for p in pts), max(p[1] for p in pts)) * 1.05) or 1.0
    side = 300
    x = _linear(0.0, hi, LEFT, LEFT + side)
    y = _linear(0.0, hi, TOP + side, TOP)
    w, h = LEFT + side + 170, TOP + side + BOTTOM + 8
    uid = f"chart-scatter-{region}"
    body = [f'<rect x="{LEFT}" y="{TOP}" width="{side}" height="{side}" fill="none" stroke="#ddd"/>',
            f'<line class="ref" x1="{x(0)}" y1="{y(0)}" x2="{x(hi)}" y2="{y(hi)}" stroke="#c0392b" '
            f'stroke-dasharray="4 3" data-value="1"/>',
            f'<text x="{x(hi * 0.6) + 8}" y="{y(hi * 0.6) + 12}" font-size="10" fill="#c0392b">lift = 1</text>']
    for aa, mm, k, cls in pts:
        color = PALETTE[k] if k < len(PALETTE) else OTHER
        body.append(f'<circle class="dot" cx="{x(aa)}" cy="{y(mm)}" r="2.5" fill="{color}" fill-opacity="0.55" '
                    f'data-area="{aa:.6g}" data-mass="{mm:.6g}"/>')
    ticks = _ticks(hi, 4)
    body += _axis_x(x, ticks, TOP + side, lambda t: f"{t * 100:g}%", hi)
    for t in ticks:
        body.append(f'<text class="tick" x="{LEFT - 6}" y="{y(t) + 3}" text-anchor="end" font-size="10" '
                    f'fill="#555">{t * 100:g}%</text>')
    body.append(f'<text x="{LEFT + side / 2}" y="{h - 4}" text-anchor="middle" font-size="11" fill="#222">'
                f'area (share of the image)</text>')
    body.append(f'<text x="{LEFT - 44}" y="{TOP + side / 2}" text-anchor="middle" font-size="11" fill="#222" '
                f'transform="rotate(-90 {LEFT - 44} {TOP + side / 2})">heatmap mass</text>')
    names = [c for c, _ in _groups(images, group_by, classes)]
    for k, cls in enumerate(names[: len(PALETTE)] + (["other classes"] if len(names) > len(PALETTE) else [])):
        color = PALETTE[k] if k < len(PALETTE) else OTHER
        ly = TOP + 14 * k + 6
        body.append(f'<circle cx="{LEFT + side + 16}" cy="{ly}" r="4" fill="{color}"/>'
                    f'<text x="{LEFT + side + 26}" y="{ly + 4}" font-size="11" fill="#222">{escape(cls)}</text>')
    above = sum(1 for aa, mm, _, _ in pts if mm > aa)
    label, noun = region_label(region), REGION_NOUNS.get(region, region.replace("_", " "))
    title = f"{label}: heatmap mass against area, per image"
    desc = (f"{n_all} images (showing {len(pts)}). Dots above the dashed diagonal (mass = area, lift 1) get more "
            f"attention on {noun} than its size explains: {above} of the {len(pts)} shown.")
    return {"id": uid, "region": region, "title": title, "svg": _svg(w, h, uid, title, desc, body),
            "n_points": len(pts), "n_images": n_all, "axis_max": hi}


def flip_chart(summary: Summary, region: str) -> dict[str, Any] | None:
    """Per class, how often removing ``region`` flips the prediction vs how often the placebo does."""
    rows = []
    for cls, st in summary.classes.items():
        rem, pla = num(st.get(f"flip_rate_{region}_removed")), num(st.get(f"flip_rate_{region}_placebo"))
        if rem is not None or pla is not None:
            rows.append((cls, rem, pla))
    if not rows:
        return None
    x = _linear(0.0, 1.0, LEFT, CHART_W - RIGHT)
    bar = 9
    h = TOP + ROW_H * len(rows) + BOTTOM
    uid = f"chart-flip-{region}"
    body = []
    lines = []
    for k, (cls, rem, pla) in enumerate(rows):
        top = TOP + ROW_H * k + (ROW_H - 2 * bar - 2) / 2
        body.append(f'<text x="{LEFT - 8}" y="{top + bar + 4}" text-anchor="end" font-size="11" fill="#222">'
                    f'{escape(cls)}</text>')
        for j, (kind, val, color) in enumerate((("removed", rem, "#c0392b"), ("placebo", pla, "#9aa0a6"))):
            if val is None:
                continue
            by = round(top + j * (bar + 2), 1)
            body.append(f'<rect class="bar bar-{kind}" x="{x(0)}" y="{by}" width="{round(x(val) - x(0), 1)}" '
                        f'height="{bar}" fill="{color}" data-class="{escape(cls)}" data-value="{val:.6g}">'
                        f'<title>{escape(cls)}: {kind} flips {fmt_pct(val)}</title></rect>')
        lines.append(f"{cls}: {region} removed {fmt_pct(rem)}, placebo {fmt_pct(pla)}")
    body += _axis_x(x, [0, 0.25, 0.5, 0.75, 1.0], h - BOTTOM + 2, lambda t: f"{t * 100:g}%")
    body.append(f'<rect x="{CHART_W - 190}" y="4" width="10" height="9" fill="#c0392b"/><text x="{CHART_W - 176}" '
                f'y="12" font-size="10">{escape(region)} removed</text><rect x="{CHART_W - 90}" y="4" width="10" '
                f'height="9" fill="#9aa0a6"/><text x="{CHART_W - 76}" y="12" font-size="10">placebo</text>')
    noun = REGION_NOUNS.get(region, region.replace("_", " "))
    title = f"Prediction flip rate: {noun} removed vs placebo edit, by class"
    desc = ("Share of images whose predicted class changes when the region is inpainted (red) and when a matched "
            "placebo area is (grey). " + "; ".join(lines) + ".")
    return {"id": uid, "region": region, "title": title, "svg": _svg(CHART_W, h, uid, title, desc, body)}


def build_charts(summary: Summary, images: pd.DataFrame | None) -> dict[str, Any] | None:
    """The report's "Charts" section: lift distributions and scatters per region, flip rates per
    counterfactual region; None when there is nothing to draw (no images table, no regions)."""
    classes = list(summary.classes)
    lifts, scatters, flips = [], [], []
    if images is not None and len(images):
        for r in summary.regions:
            lifts.append(lift_chart(images, r, summary.group_by, classes))
            scatters.append(scatter_chart(images, r, summary.group_by, classes))
    if summary.counterfactual is not None and summary.counterfactual.enabled:
        flips = [flip_chart(summary, r) for r in summary.counterfactual.regions]
    out = {"lifts": [c for c in lifts if c], "scatters": [c for c in scatters if c], "flips": [c for c in flips if c]}
    return out if any(out.values()) else None

