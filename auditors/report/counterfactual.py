"""The counterfactual section: does the model need a region? Removal vs an equal-area placebo.

Status words and colours follow the gate's recorded decision on each (class, effect rule)
(:mod:`auditors.report.gate_cells`): "above limit" (red) only where the gate failed it.
"""

from __future__ import annotations

from typing import Any

from auditors.audit.summary import Record, RegionSource, Summary
from auditors.report.facts import ci_level, effect_threshold, min_images
from auditors.report.formatting import (
    DASH, EFFECT_NOUNS, as_dict, fmt_ci, fmt_dec, fmt_int, fmt_pct, fmt_text, fmt_threshold, interval,
    num, region_label, sort_key,
)
from auditors.report.gate_cells import GateCells, decide_cell, gate_cells
from auditors.report.plots import effect_plot, plot_axis, plot_domain

__all__ = ["CF_STATUS", "build_counterfactual"]

CF_STATUS = {
    "bad": ("tag-bad", "above limit", "The gate fails this class on this effect"),
    "over": ("tag-warn", "not significant", "The interval is above the threshold, but not significant after "
             "false-discovery-rate control across the gate's cells: the gate does not fail it"),
    "warn": ("tag-warn", "inconclusive", "The interval reaches above the threshold but its lower bound does not"),
    "ok": ("tag-ok", "below limit", "The whole interval is below the threshold"),
    "small": ("tag-muted", "too few", "Above the threshold, but too few images to be flagged"),
    "none": ("", "\u2014", ""),
}


def _cf_row(name: str, stats: Record, r: str, threshold: float | None, domain: tuple[float, float],
            min_n: float | None, cells: GateCells, overall: bool = False) -> dict[str, Any]:
    n_edit, n = stats.get(f"n_{r}_edited"), stats.get("n")
    effect, ci = stats.get(f"{r}_effect"), stats.get(f"{r}_effect_ci")
    decision = decide_cell(effect, ci, threshold, None if overall else name, f"{r}_effect", n, cells)
    level = decision.css
    small = min_n is not None and num(n) is not None and num(n) < min_n
    status = ("none" if overall or not decision.level else
              {"fail": "bad", "over": "small" if small else "over"}.get(decision.level, decision.level))

    def cell(value: Any, text: str, cls: str = "num", sub: str = "", title: str = "", sub2: str = "") -> dict[str, str]:
        return {"text": text, "sort": sort_key(value), "cls": cls, "sub": sub, "title": title, "sub2": sub2}

    def get(key: str) -> Any:
        return stats.get(key.format(r=r))

    edited_sub = f"of {fmt_int(n)}" if num(n) is not None and num(n_edit) is not None else ""
    n_no = num(stats.get(f"n_{r}_no_placebo"))
    excluded = f"{fmt_int(n_no)} no placebo" if n_no else ""
    edited_title = f"Images with {r} that were edited (images without it are left out)"
    if n_no:
        edited_title += (f"; {fmt_int(n_no)} more with {r} are excluded: no placebo site that does not overlap "
                         f"the region, so no effect could be measured on them")
    tag_cls, tag_text, tag_title = CF_STATUS[status]
    return {
        "name": name,
        "cells": [
            cell(n_edit, fmt_int(n_edit), sub=edited_sub, title=edited_title, sub2=excluded),
            cell(get("flip_rate_{r}_removed"), fmt_pct(get("flip_rate_{r}_removed")), cls="num group-start"),
            cell(get("flip_rate_{r}_placebo"), fmt_pct(get("flip_rate_{r}_placebo"))),
            cell(get("conf_drop_{r}_removed"), fmt_dec(get("conf_drop_{r}_removed")), cls="num group-start"),
            cell(get("conf_drop_{r}_placebo"), fmt_dec(get("conf_drop_{r}_placebo"))),
            cell(effect, fmt_dec(effect), cls=f"num group-start lift {level}".strip(),
                 sub=fmt_ci(ci, fmt_dec) if num(effect) is not None else "", title=decision.note),
        ],
        "plot": effect_plot(effect, ci, threshold, domain, level, name),
        "effect_sort": sort_key(effect),
        "status": status,
        "status_sort": {"bad": "0", "over": "1", "warn": "1", "small": "2", "ok": "3", "none": "4"}[status],
        "tag": {"cls": tag_cls, "text": tag_text, "title": decision.note or tag_title},
    }


def _cf_block(summary: Summary, r: str, min_n: float | None) -> dict[str, Any]:
    classes, overall = summary.classes, summary.overall
    threshold = effect_threshold(summary, r)
    points: list[float] = [0.0] + ([threshold] if threshold is not None else [])
    for stats in [*classes.values(), *([overall] if overall is not None else [])]:
        if num(stats.get(f"{r}_effect")) is None:
            continue
        points.append(num(stats.get(f"{r}_effect")))
        points += list(interval(stats.get(f"{r}_effect_ci")) or ())
    domain = plot_domain(points)
    cells = gate_cells(summary)
    rows = [_cf_row(name, st, r, threshold, domain, min_n, cells) for name, st in classes.items()]
    src = summary.region_sources.get(r, RegionSource())
    return {
        "exclusion": _exclusion(summary, r),
        "region": r,
        "label": region_label(r),
        "noun": EFFECT_NOUNS.get(r, f"the {r.replace('_', ' ')} region"),
        "heuristic": src.heuristic,
        "source": src.source,
        "threshold": fmt_threshold(threshold) if threshold is not None else "",
        "rows": rows,
        "overall": _cf_row("All images", overall, r, threshold, domain, None, cells, overall=True) if overall is not None else None,
        "axis": plot_axis(domain, threshold),
        "has_data": any(row["plot"] for row in rows),
    }


#: Above this share of the images with a region excluded for want of a placebo, the effect rests on few images.
FEW_SHARE = 0.5
REASON_WORDS = {"too_large": "region larger than the free image content", "no_room": "no free spot large enough",
                "overlap": "every candidate overlapped the region"}


def _exclusion(summary: Summary, r: str) -> dict[str, Any] | None:
    """How many images the effect of ``r`` is measured on, and how many were excluded for want of a
    valid placebo (``n_<r>_no_placebo``; reasons from ``counterfactual.no_placebo_reasons``).
    None when the run recorded no placebo exclusions (an older summary)."""
    overall, cf = summary.overall, summary.counterfactual
    n_no = num(overall.get(f"n_{r}_no_placebo")) if overall is not None else None
    if n_no is None and cf is not None and cf.n_no_placebo is not None:
        n_no = num(cf.n_no_placebo.get(r))
    if n_no is None:
        return None
    n_edit = num(overall.get(f"n_{r}_edited")) if overall is not None else None
    n_edit = n_edit or 0
    total = n_edit + n_no
    reasons = (cf.no_placebo_reasons or {}).get(r, {}) if cf is not None and cf.get("no_placebo_reasons") else {}
    overlap = num(cf.placebo_max_overlap) if cf is not None else None
    return {
        "measured": fmt_int(n_edit),
        "total": fmt_int(total),
        "excluded": fmt_int(n_no),
        "n_excluded": int(n_no),
        "few": total > 0 and n_no / total > FEW_SHARE,
        "share": fmt_pct(n_no / total, 0) if total else "",
        "reasons": [{"text": REASON_WORDS.get(k, fmt_text(k)), "n": fmt_int(v), "key": fmt_text(k)}
                    for k, v in reasons.items() if num(v)],
        "tolerance": fmt_pct(overlap, 0) if overlap is not None else "",
    }


def _accuracy_table(summary: Summary, regions: list[str]) -> dict[str, Any] | None:
    """Accuracy on originals and on each edited set, per class; None without labels."""
    entries = [(k, as_dict(v.accuracy)) for k, v in summary.classes.items()]
    overall = as_dict(summary.overall.accuracy) if summary.overall is not None else {}
    if not any(num(a.get("original")) is not None for _, a in entries + [("", overall)]):
        return None
    columns = [{"label": "Original", "title": "Accuracy on the unedited images", "region": None}]
    for r in regions:
        lbl = region_label(r)
        columns += [
            {"label": f"{lbl} removed", "title": f"Accuracy after removing {r}", "region": r},
            {"label": f"{lbl} placebo", "title": "Accuracy after removing the equal-area placebo", "region": r},
            {"label": f"{lbl} gap", "title": f"Original minus {r}-removed accuracy (positive: accuracy lost)",
             "region": r},
        ]

    def row(name: str, acc: dict) -> dict[str, Any]:
        cells = [{"text": fmt_pct(acc.get("original")), "sort": sort_key(acc.get("original")), "cls": "num"}]
        for r in regions:
            for key in (f"{r}_removed", f"{r}_placebo"):
                cells.append({"text": fmt_pct(acc.get(key)), "sort": sort_key(acc.get(key)), "cls": "num"})
            gap = num(acc.get(f"{r}_gap"))
            text = DASH if gap is None else f"{gap * 100:+.1f} pts".replace("-", "\u2212").replace("+0.0 ", "0.0 ")
            cells.append({"text": text, "sort": sort_key(gap), "cls": "num"})
        return {"name": name, "cells": cells}

    return {
        "columns": columns,
        "rows": [row(name, acc) for name, acc in entries if acc],
        "overall": row("All images", overall) if overall else None,
    }


def build_counterfactual(summary: Summary) -> dict[str, Any] | None:
    """The counterfactual section; None for summaries that predate it (nothing to show)."""
    cf = summary.counterfactual
    if cf is None:
        return None
    enabled = cf.enabled
    regions = list(cf.regions) if enabled else []
    min_n = min_images(summary)
    method = cf.method
    return {
        "enabled": enabled,
        "method": {"telea": "Telea inpainting", "ns": "Navier\u2013Stokes inpainting"}.get(method, fmt_text(method)),
        "margin": fmt_int(cf.margin),
        "blocks": [_cf_block(summary, r, min_n) for r in regions],
        "accuracy": _accuracy_table(summary, regions) if enabled else None,
        "ci_level": ci_level(summary),
        "min_images": fmt_int(min_n) if min_n is not None and min_n > 1 else None,
    }
