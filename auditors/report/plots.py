"""Inline SVG interval plots: coordinates computed here, the template only lays them out.

One row's plot shows zero, the gate's limit, the interval and the estimate; the axis above a
column of plots places tick labels where they do not overlap.
"""

from __future__ import annotations

import math
from typing import Any

from auditors.report.formatting import fmt_dec, fmt_threshold, interval, num

__all__ = ["PLOT_W", "plot_domain", "effect_plot", "plot_axis"]

PLOT_W, PLOT_H, PLOT_PAD = 220, 22, 12


def _nice_step(span: float, target: int = 4) -> float:
    raw = span / max(1, target)
    mag = 10 ** math.floor(math.log10(raw))
    return next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)


def plot_domain(values: list[float]) -> tuple[float, float]:
    lo, hi = min(values), max(values)
    span = hi - lo
    if span < 1e-9:
        lo, hi, span = lo - 0.05, hi + 0.05, 0.1
    return lo - 0.06 * span, hi + 0.06 * span


def _x(value: float, domain: tuple[float, float], w: int = PLOT_W) -> float:
    lo, hi = domain
    return round(PLOT_PAD + (value - lo) / (hi - lo) * (w - 2 * PLOT_PAD), 1)


def effect_plot(value: Any, ci: Any, threshold: float | None, domain: tuple[float, float],
                 level: str, label: str, w: int = PLOT_W) -> dict[str, Any] | None:
    """Coordinates of one row's interval plot: zero line, limit line, interval and estimate."""
    v = num(value)
    if v is None:
        return None
    span = interval(ci)
    title = f"{label}: effect {fmt_dec(v)}"
    if span:
        title += f", interval {fmt_dec(span[0])} to {fmt_dec(span[1])}"
    if threshold is not None:
        title += f", threshold {fmt_threshold(threshold)}"
    return {
        "w": w, "h": PLOT_H, "mid": PLOT_H / 2,
        "x0": _x(0.0, domain, w),
        "xt": _x(threshold, domain, w) if threshold is not None else None,
        "xlo": _x(span[0], domain, w) if span else None,
        "xhi": _x(span[1], domain, w) if span else None,
        "xv": _x(v, domain, w),
        "level": level.replace("lift-", "") or "none",
        "title": title,
    }


def _label_span(x: float, text: str, anchor: str) -> tuple[float, float]:
    width = 6.0 * len(text) + 2  # 10 px system-ui digits are about 6 px wide
    start = {"start": x, "middle": x - width / 2, "end": x - width}[anchor]
    return start, start + width


def plot_axis(domain: tuple[float, float], threshold: float | None, w: int = PLOT_W) -> dict[str, Any]:
    """Tick labels for the header above the plots: the threshold first, then 0, then round
    ticks, each only where it does not overlap a label already placed."""
    lo, hi = domain
    step = _nice_step(hi - lo)
    digits = next((d for d in range(7) if abs(round(step, d) - step) < 1e-9 * max(1.0, step)), 6)
    labels: list[dict[str, Any]] = []

    def place(value: float, text: str, cls: str, anchors: tuple[str, ...] = ("middle",)) -> None:
        x = _x(value, domain, w)
        for anchor in anchors:
            a, b = _label_span(x, text, anchor)
            if a < 0 or b > w:
                continue
            if all(b + 3 <= other["a"] or a >= other["b"] + 3 for other in labels):
                labels.append({"x": x, "label": text, "anchor": anchor, "cls": cls, "a": a, "b": b})
                return

    xt = None
    if threshold is not None:
        xt = _x(threshold, domain, w)
        right_first = threshold >= 0
        place(threshold, fmt_threshold(threshold), "limit-label",
              ("middle", "start", "end") if right_first else ("middle", "end", "start"))
        # Keep the 0 label readable next to a nearby limit by pushing it away from the limit.
        place(0.0, "0", "", ("middle", "end", "start") if right_first else ("middle", "start", "end"))
    else:
        place(0.0, "0", "")
    k = math.ceil(lo / step - 1e-9)
    while k * step <= hi + 1e-12:
        if k != 0:
            place(k * step, fmt_dec(k * step, digits), "")
        k += 1
    ticks = [{k: v for k, v in lab.items() if k not in ("a", "b")} for lab in labels if lab["cls"] != "limit-label"]
    limit = next((lab for lab in labels if lab["cls"] == "limit-label"), None)
    return {"w": w, "h": 18, "ticks": ticks, "xt": xt, "x0": _x(0.0, domain, w),
            "t_label": limit["label"] if limit else "", "t_anchor": limit["anchor"] if limit else "middle",
            "t_x": limit["x"] if limit else 0}
