"""The per-class attention table: mass, area, lift (with interval) and hit rate per region.

Lift cells are coloured by the gate's recorded decision (:mod:`auditors.report.gate_cells`): red
exactly where the gate failed that (class, rule), amber where the interval is over the limit but
the gate did not fail it (not significant after FDR control, or too few images).
"""

from __future__ import annotations

import re
from typing import Any

from auditors.audit.summary import Record, RegionSource, Summary
from auditors.report.facts import (
    ci_level, counterfactual_on, lift_threshold, min_images, norm_lift_threshold,
)
from auditors.report.formatting import (
    fmt_ci, fmt_float, fmt_int, fmt_pct, fmt_threshold, num, region_label, sort_key,
)
from auditors.report.gate_cells import GateCells, decide_cell, gate_cells

__all__ = ["MAX_EMPTY_CLASS_ROWS", "build_class_table", "listed_classes"]

#: Above this many model classes (ImageNet: 1000), classes without audited images are not listed.
MAX_EMPTY_CLASS_ROWS = 30


def listed_classes(summary: Summary) -> tuple[Summary, int]:
    """The summary with only classes that have images when the model has many classes, and how
    many were left out (summary.json keeps them all)."""
    classes = summary.classes
    if len(classes) <= MAX_EMPTY_CLASS_ROWS:
        return summary, 0
    kept = {k: v for k, v in classes.items() if (num(v.get("n")) or 0) > 0}
    return summary.model_copy(update={"classes": kept}), len(classes) - len(kept)


def _flip_keys(summary: Summary) -> list[str]:
    """Counterfactual columns (flip_rate_*), shown only when some class has a value.

    With the counterfactual section present the flip rates live there instead.
    """
    if counterfactual_on(summary):
        return []
    groups = [*summary.classes.values(), *([summary.overall] if summary.overall is not None else [])]
    keys: list[str] = []
    for stats in groups:
        for k, v in stats.to_dict().items():
            if k.startswith("flip_rate_") and k not in keys and num(v) is not None:
                keys.append(k)
    if "flip_rate_placebo" in keys and "flip_rate_text_placebo" in keys:  # the 0.1 contract alias
        keys.remove("flip_rate_placebo")
    return keys


def _col(key: str, label: str, kind: str = "num", group: str | None = None, fmt: str = "int",
         title: str = "", region: str | None = None, first: bool = False) -> dict[str, Any]:
    """One column spec (every key present: the template is rendered with StrictUndefined)."""
    return {"key": key, "label": label, "kind": kind, "group": group, "fmt": fmt, "title": title,
            "region": region, "first": first}


def _class_columns(regions: list[str], flip_keys: list[str], norm_regions: set[str] = frozenset()) -> list[dict[str, Any]]:
    """Column specs in table order: class, n, four per region (five with a normalised lift), flip rates, status."""
    cols = [_col("name", "Class", kind="text"), _col("n", "Images", title="Audited images in this class")]
    for r in regions:
        grp = region_label(r)
        cols += [
            _col(f"{r}_mass", "Mass", group=grp, fmt="pct", region=r, first=True, title=f"Share of heatmap on {r}"),
            _col(f"{r}_area", "Area", group=grp, fmt="pct", region=r, title=f"Share of image covered by {r}"),
            _col(f"{r}_lift", "Lift", group=grp, fmt="lift", region=r,
                 title="Mass / area with its interval; 1.0 = uniform attention"),
            *([_col(f"{r}_norm_lift", "Norm. lift", group=grp, fmt="norm", region=r,
                    title="Lift / the highest lift a heatmap at the target layer's resolution could reach on this region "
                          "(max lift, below); 1.0 = all the attention that resolution allows")] if r in norm_regions else []),
            _col(f"{r}_hit_rate", "Hit rate", group=grp, fmt="hit", region=r,
                 title=f"Share of images whose heatmap peak lies on {r}, and the share expected by area"),
        ]
    for i, k in enumerate(flip_keys):
        label = k.removeprefix("flip_rate_").replace("_", " ")
        cols.append(_col(k, label.capitalize(), group="Flip rate", fmt="pct", first=i == 0,
                         title=f"Share of predictions that change ({label})"))
    cols.append(_col("flagged", "Status", kind="text"))
    return cols


def _cell(col: dict[str, Any], stats: Record, thresholds: dict[str, float | None],
          norm_thresholds: dict[str, float | None] | None, name: str | None, cells: GateCells) -> dict[str, str]:
    """A formatted cell: ``sub`` is a second line always shown, ``extra`` one shown on request.
    Gated cells (lift, norm. lift) are coloured by the gate's decision on (``name``, the column's
    statistic) (:func:`auditors.report.gate_cells.decide_cell`); ``name`` None is the all-images row."""
    value = stats.get(col["key"])
    fmt = col["fmt"]
    cell = {"text": fmt_int(value), "sort": sort_key(value), "cls": "num", "sub": "", "extra": "", "title": "",
            "fired": "", "level": ""}
    if fmt == "pct":
        cell["text"] = fmt_pct(value)
        cell["extra"] = fmt_ci(stats.get(f"{col['key']}_ci"), fmt_pct)
    elif fmt == "hit":
        cell["text"] = fmt_pct(value)
        expected = stats.get(f"{col['region']}_hit_expected")
        if num(expected) is not None:
            cell["sub"] = f"exp. {fmt_pct(expected)}"
            cell["title"] = f"{fmt_pct(value)} of peaks on {col['region']}; {fmt_pct(expected)} expected by its area"
    elif fmt in ("lift", "norm"):
        ci = stats.get(f"{col['key']}_ci")
        limit = (thresholds if fmt == "lift" else (norm_thresholds or {})).get(col["region"])
        decision = decide_cell(value, ci, limit, name, col["key"], stats.get("n"), cells)
        cell.update(text=fmt_float(value), cls=f"num lift {decision.css}".strip(), level=decision.level)
        if fmt == "lift":
            cell["sub"] = fmt_ci(ci) if num(value) is not None else ""
        else:
            max_lift = num(stats.get(f"{col['region']}_max_lift"))
            cell["sub"] = f"max lift {fmt_float(max_lift, 1)}" if max_lift is not None else ""
            cell["extra"] = fmt_ci(ci) if num(value) is not None else ""
            if num(value) is not None and max_lift is not None:
                cell["title"] = (f"{fmt_float(stats.get(col['region'] + '_lift'))} of the at most {fmt_float(max_lift, 1)} "
                                 f"a map at this resolution could reach on {col['region']}")
        if decision.level == "fail":
            cell["cls"] += " fired"
            cell["fired"] = "\u2691 " + col["key"].replace("_", " ") + " rule"
            cell["title"] = decision.note
        elif decision.level == "over":
            cell["fired"] = "n.s. after FDR" if (name, col["key"]) in cells.tested else "not gated"
            cell["title"] = decision.note
    return cell


def _class_row(name: str, stats: Record, cols: list[dict], thresholds: dict, min_n: float | None,
               norm_thresholds: dict | None, cells: GateCells, gated: bool = True) -> dict:
    """One table row: formatted metric cells (coloured by the gate's decision on each) plus the
    flag state and its reasons. ``gated`` False: the all-images row, which the gate never tests."""
    row_cells = [_cell(c, stats, thresholds, norm_thresholds, name if gated else None, cells)
                 for c in cols if c["kind"] == "num"]
    n = num(stats.get("n"))
    flagged = bool(stats.get("flagged"))
    small = min_n is not None and n is not None and n < min_n
    status = "flagged" if flagged else ("small" if small else "ok")
    return {
        "name": name,
        "cells": row_cells,
        "status": status,
        "status_sort": {"flagged": "0", "small": "1", "ok": "2"}[status],
        "reasons": [str(r) for r in stats.get("flag_reasons") or []],
        "why": _short_reasons(stats.get("flag_reasons")) if flagged else "",
    }


def _short_reasons(reasons: Any) -> str:
    """"text lift, text effect" from reasons like "text_lift 3.41 (interval lower bound 2.9) > 2.0"."""
    out: list[str] = []
    for r in reasons if isinstance(reasons, (list, tuple)) else []:
        m = re.match(r"\s*([A-Za-z][\w]*)", str(r))
        word = m.group(1).replace("_", " ") if m else ""
        if word and word not in out and len(word) <= 24:
            out.append(word)
    return ", ".join(out[:3])


def _groups(cols: list[dict[str, Any]], sources: dict[str, RegionSource]) -> list[dict[str, Any]]:
    """The header's top row: one cell per run of columns with the same group."""
    groups: list[dict[str, Any]] = []
    for c in cols:
        if groups and c["group"] is not None and groups[-1]["label"] == c["group"]:
            groups[-1]["span"] += 1
            continue
        src = sources.get(c["region"] or "", RegionSource())
        title = ""
        if src.heuristic:
            title = f"Estimated by a heuristic ({src.source or 'unspecified'}): treat these numbers as approximate"
        groups.append({"label": c["group"], "span": 1, "heuristic": src.heuristic, "title": title})
    return groups


def build_class_table(summary: Summary) -> dict[str, Any]:
    """Header rows, body rows and the overall row of the per-class table (classes without
    images left out when the model has more than :data:`MAX_EMPTY_CLASS_ROWS`)."""
    summary, hidden_empty = listed_classes(summary)
    regions = list(summary.regions)
    groups_all = [*summary.classes.values(), *([summary.overall] if summary.overall is not None else [])]
    norm_regions = {r for r in regions if any(num(s.get(f"{r}_norm_lift")) is not None for s in groups_all)}
    cols = _class_columns(regions, _flip_keys(summary), norm_regions)
    thresholds = {r: lift_threshold(summary, r) for r in regions}
    norm_thresholds = {r: norm_lift_threshold(summary, r) for r in regions}
    decided = gate_cells(summary)
    min_n = min_images(summary)
    rows = [_class_row(name, stats, cols, thresholds, min_n, norm_thresholds, decided) for name, stats in summary.classes.items()]
    overall = summary.overall
    overall_row = (_class_row("All images", overall, cols, thresholds, None, norm_thresholds, decided, gated=False)
                   if overall is not None else None)
    groups = _groups(cols, summary.region_sources)
    every = rows + ([overall_row] if overall_row else [])
    cells = [c for r in every for c in r["cells"]]
    return {
        "columns": cols,
        "groups": groups if any(g["label"] for g in groups) else [],
        "rows": rows,
        "overall": overall_row,
        "thresholds": {r: fmt_threshold(t) for r, t in thresholds.items() if t is not None},
        "norm": _norm_note(summary, norm_regions, norm_thresholds) if norm_regions else None,
        "min_images": fmt_int(min_n) if min_n is not None and min_n > 1 else None,
        "hidden_empty": hidden_empty,
        "has_extra": any(c["extra"] for c in cells),
        "has_intervals": any(c["sub"].startswith("[") for c in cells),
        "fdr": fmt_threshold(decided.fdr) if decided.fdr is not None else None,
        "n_tests": fmt_int(decided.n_tests) if decided.n_tests else None,
        "ci_level": ci_level(summary),
        "heuristic": [
            {"label": region_label(r), "source": s.source, "from": s.from_}
            for r, s in summary.region_sources.items() if s.heuristic and r in regions
        ],
    }


def _norm_note(summary: Summary, norm_regions: set[str], limits: dict[str, float | None]) -> dict[str, Any]:
    """What the legend says about the normalised lift: the target layer and its map size, and the
    limits that apply (``gate.max_norm_lift``)."""
    cam = summary.cam
    layer = str(cam.target_layer) if cam is not None and cam.target_layer else ""
    size = cam.get("map_size") if cam is not None else None
    grid = f"{size[0]}\u00d7{size[1]}" if isinstance(size, (list, tuple)) and len(size) == 2 else ""
    return {
        "layer": layer,
        "grid": grid,
        "limits": [{"region": region_label(r), "limit": fmt_threshold(limits[r])}
                   for r in sorted(norm_regions) if limits.get(r) is not None],
    }
