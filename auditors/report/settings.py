"""The report's header facts: model, CAM and gate settings, and the methods section."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from auditors.audit.summary import Summary
from auditors.report.facts import ci_level, counterfactual_on, gate_limits_text
from auditors.report.formatting import DASH, as_dict, fmt_int, fmt_text, num, region_label

__all__ = ["build_settings", "build_methods"]


def _model_name(model: dict) -> str:
    for key in ("arch", "torchscript", "factory"):
        if model.get(key):
            return Path(str(model[key])).name if key == "torchscript" else str(model[key])
    return DASH


def _gate_setting(limits: str) -> str:
    """"text lift 2.0, text effect 0.05" -> "text lift ≤ 2.0 · effect ≤ 0.05"."""
    if not limits:
        return DASH
    return limits.replace("lift ", "lift \u2264 ").replace(", text effect ", " \u00b7 effect \u2264 ")


def build_settings(summary: Summary) -> list[dict[str, str]]:
    """Model, CAM and gate settings a reviewer needs to interpret the numbers."""
    cfg = summary.config
    model = as_dict(cfg.get("model"))
    cam = summary.cam if summary.cam is not None else as_dict(cfg.get("cam"))
    size = model.get("input_size")
    size_text = f"{size[0]}\u00d7{size[1]}" if isinstance(size, (list, tuple)) and len(size) == 2 else DASH
    resize = f" ({model['resize']})" if model.get("resize") else ""
    ckpt = model.get("checkpoint")
    amp = cam.get("amp")
    limits = gate_limits_text(summary)
    if limits and summary.gate is not None and summary.gate.rule:
        limits += " (lower bound)"
    group_by = summary.group_by
    items = [
        ("Model", _model_name(model) + (f" \u00b7 {Path(str(ckpt)).name}" if ckpt else "")),
        ("Input", size_text + resize),
        ("CAM method", fmt_text(cam.get("method"))),
        ("CAM target", fmt_text(cam.get("target"))),
        ("Target layer", fmt_text(cam.get("target_layer") or model.get("target_layer"))),
        ("Device", fmt_text(cam.get("device")) + (f" \u00b7 AMP {amp}" if amp not in (None, "off") else "")),
        ("Grouped by", {"label": "true label", "pred": "predicted class"}.get(group_by, fmt_text(group_by))),
        ("Gate", _gate_setting(limits)),
    ]
    if counterfactual_on(summary):
        regions = ", ".join(summary.counterfactual.regions) or DASH
        items.append(("Counterfactual", f"remove {regions} vs placebo"))
    stats = summary.stats
    if ci_level(summary) and num(stats.bootstrap) is not None:
        items.append(("Intervals", f"{ci_level(summary)} bootstrap \u00d7 {fmt_int(stats.bootstrap)}"))
    return [{"label": k, "value": v} for k, v in items]


def build_methods(summary: Summary) -> dict[str, Any]:
    """What the methods section needs beyond the fixed definitions."""
    stats = summary.stats
    level = ci_level(summary)
    interval = ""
    if level:
        interval = f"{level} intervals by {stats.interval or 'bootstrap'}"
        extra = []
        if num(stats.bootstrap) is not None:
            extra.append(f"{fmt_int(stats.bootstrap)} resamples")
        if num(stats.seed) is not None:
            extra.append(f"seed {fmt_int(stats.seed)}")
        if extra:
            interval += f" ({', '.join(extra)})"
    rule = summary.gate.rule if summary.gate is not None else ""
    return {
        "interval": interval,
        "ci_level": level,
        "rule": rule if rule.strip() else "",
        "sources": [
            {"label": region_label(r), "source": v.source or DASH, "heuristic": v.heuristic, "from": v.from_}
            for r, v in summary.region_sources.items()
        ],
    }
