"""Small static SVG trend charts (one per class and metric) for the history page.

Hand-made SVG: no script, no external font or stylesheet, so the page stays offline and
passes a Content-Security-Policy without 'unsafe-inline' scripts. Each run is a dot with
its interval as a vertical bar; the gate limit, when there is one, is a dashed line.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from markupsafe import Markup, escape

__all__ = ["TrendPoint", "trend_svg"]

W, H, PAD_X, PAD_Y = 240, 64, 6, 8


@dataclass
class TrendPoint:
    run_id: str
    value: float | None
    ci: tuple[float, float] | None = None


def _finite(v: object) -> float | None:
    try:
        f = float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def trend_svg(points: list[TrendPoint], label: str, limit: float | None = None) -> Markup:
    """An inline ``<svg>`` of ``points`` in run order; an em dash when no run has a value."""
    values = [p.value for p in points if p.value is not None]
    if not values:
        return Markup('<span class="muted">\u2014</span>')
    span_vals = values + [c for p in points if p.ci for c in p.ci if _finite(c) is not None]
    d_lo, d_hi = min(span_vals), max(span_vals)
    if limit is not None and limit > d_hi + max(d_hi - d_lo, abs(d_hi)):
        limit = None  # far above every value: drawing it would flatten the trend into one line
    if limit is not None:
        span_vals.append(limit)
    lo, hi = min(span_vals), max(span_vals)
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    pad = (hi - lo) * 0.08
    lo, hi = lo - pad, hi + pad
    n = len(points)

    def x(i: int) -> float:
        return PAD_X + (W - 2 * PAD_X) * (0.5 if n == 1 else i / (n - 1))

    def y(v: float) -> float:
        return PAD_Y + (H - 2 * PAD_Y) * (1 - (v - lo) / (hi - lo))

    parts = [f'<svg class="trend" role="img" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
             f'xmlns="http://www.w3.org/2000/svg"><title>{escape(label)}</title>']
    if limit is not None:
        parts.append(f'<line class="limit" x1="0" x2="{W}" y1="{y(limit):.1f}" y2="{y(limit):.1f}" '
                     'stroke="#c0392b" stroke-dasharray="4 3" stroke-width="1"/>')
    line = [(x(i), y(p.value)) for i, p in enumerate(points) if p.value is not None]
    if len(line) > 1:
        pts = " ".join(f"{a:.1f},{b:.1f}" for a, b in line)
        parts.append(f'<polyline points="{pts}" fill="none" stroke="#456" stroke-width="1.2"/>')
    for i, p in enumerate(points):
        if p.value is None:
            continue
        ci = p.ci if p.ci and all(_finite(c) is not None for c in p.ci) else None
        if ci:
            parts.append(f'<line class="ci" x1="{x(i):.1f}" x2="{x(i):.1f}" y1="{y(ci[0]):.1f}" y2="{y(ci[1]):.1f}" '
                         'stroke="#8aa" stroke-width="3" stroke-opacity="0.6"/>')
        last = i == n - 1
        tip = f"{p.run_id}: {p.value:.3g}" + (f" [{ci[0]:.3g}, {ci[1]:.3g}]" if ci else "")
        parts.append(f'<circle class="pt" cx="{x(i):.1f}" cy="{y(p.value):.1f}" r="{3.2 if last else 2.4}" '
                     f'fill="{"#1f4e79" if last else "#567"}"><title>{escape(tip)}</title></circle>')
    parts.append("</svg>")
    return Markup("".join(parts))
