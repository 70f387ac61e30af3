"""The "Where the model goes wrong" section: the most confident mistakes per true class, each with the
heatmap for the predicted class and for the true class side by side, and the share of errors vs
correct predictions whose map leans on each region (summary ``failures``, analysis/failures.py)."""

from __future__ import annotations

from typing import Any

from auditors.audit.summary import Summary
from auditors.measure.failures import FailureItem
from auditors.report.formatting import DASH, REGION_NOUNS, fmt_float, fmt_pct, interval, num, pct_words, region_label
from auditors.report.images import as_rgb_uint8, cam_like, display_scale, heatmap_overlay, png_data_uri, resize

__all__ = ["build_failures"]


def _panels(item: FailureItem) -> list[dict[str, str]]:
    rgb = as_rgb_uint8(item.image)
    if rgb is None:
        return []
    scale = display_scale(rgb.shape)
    small = resize(rgb, scale)
    out = [{"caption": "Input", "src": png_data_uri(small)}]
    for cam, caption in ((item.cam_pred, f"Map for predicted '{item.pred}'"), (item.cam_true, f"Map for true '{item.label}'")):
        out.append({"caption": caption, "src": png_data_uri(heatmap_overlay(small, resize(cam_like(cam, rgb.shape[:2]), scale)))})
    return out


def _card(item: FailureItem, regions: list[str]) -> dict[str, Any]:
    m = item.metrics
    rows = [{"region": region_label(r), "mass_pred": fmt_pct(m.get(f"{r}_mass_pred")),
             "lift_pred": fmt_float(m.get(f"{r}_lift_pred")), "mass_true": fmt_pct(m.get(f"{r}_mass_true")),
             "lift_true": fmt_float(m.get(f"{r}_lift_true")), "leaned": m.get("leaned_on") == r} for r in regions]
    leaned = str(m.get("leaned_on") or "none")
    return {"path": item.path, "label": item.label, "pred": item.pred, "confidence": fmt_pct(item.confidence),
            "true_prob": fmt_pct(item.true_prob), "panels": _panels(item), "rows": rows,
            "leaned": "no region (every lift \u2264 1)" if leaned == "none" else REGION_NOUNS.get(leaned, leaned)}


def _sentence(region: str, block: dict[str, Any], level: str) -> str | None:
    err, ok = block.get("errors") or {}, block.get("correct") or {}
    if not err.get("n"):
        return None
    noun = REGION_NOUNS.get(region, region.replace("_", " "))

    def part(d: dict[str, Any], what: str) -> str:
        span = interval(d.get("share_ci"))
        ci = f" ({level}interval {pct_words(span[0])}\u2013{pct_words(span[1])})" if span else ""
        return f"{pct_words(d.get('share_lift_above_1'))} of {d.get('n')} {what}{ci}"

    text = f"The predicted-class map leans on {noun} (lift > 1) in {part(err, 'mistakes')}"
    if ok.get("n"):
        text += f", against {part(ok, 'correct predictions')}"
    return text + "."


def build_failures(summary: Summary, items: list[FailureItem] | None) -> dict[str, Any] | None:
    """The section's content; None when the run recorded no failure analysis (no labels, turned off)."""
    data = summary.failures
    if not data:
        return None
    stats = summary.stats
    level = f"{round(stats.ci * 100)}% " if stats is not None and stats.ci else ""
    sentences = [s for r, b in (data.get("regions") or {}).items() if (s := _sentence(r, b, level))]
    groups: dict[str, list[dict[str, Any]]] = {}
    for it in items or []:
        groups.setdefault(it.label, []).append(_card(it, list(summary.regions)))
    leaned = data.get("leaned_on") or {}
    return {
        "n_errors": int(num(data.get("n_errors")) or 0),
        "n_labelled": int(num(data.get("n_labelled")) or 0),
        "error_rate": fmt_pct(data.get("error_rate")),
        "sentences": sentences,
        "leaned_on": [{"region": "none" if r == "none" else region_label(r), "n": n} for r, n in leaned.items()],
        "groups": [{"label": k, "cards": v} for k, v in sorted(groups.items())],
        "dash": DASH,
    }
