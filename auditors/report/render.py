"""The HTML bias report: one self-contained file a launch reviewer can open anywhere.

CSS, JS and every image are inlined (images as base64 PNG) so the report survives being
attached to a ticket or mailed around; nothing is fetched from the network, and a
Content-Security-Policy with a hash of our one script makes that hold even for a string we
failed to escape. Links to the run's data files are relative, so they resolve whenever the
run folder is kept together.

All user-controlled text (paths, class names, rule names) goes through Jinja2 autoescape.
Numbers are formatted here, not in the template, so a missing, None or NaN value always
shows as an em dash instead of "nan" or a crash. The effect plots are inline SVG whose
coordinates are computed here; the template only lays them out.

Every section of summary.json beyond the first release (intervals, counterfactuals, the
sanity check, region sources, text tokens) is optional: an older summary renders without
those parts.
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

from auditors.measure.gallery import GalleryItem

__all__ = ["write_report", "render_report", "build_tokens", "REPORT_NAME", "MAX_ERROR_ROWS"]

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
#: What "removing <noun>" reads as in sentences about counterfactual edits.
EFFECT_NOUNS = {"text": "the text", "border": "the image border", "background": "the background"}


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


def fmt_dec(value: Any, digits: int = 3) -> str:
    """Small signed quantities (confidence drops, effects): never shows "-0.000"."""
    v = _num(value)
    if v is None:
        return DASH
    if round(v, digits) == 0:
        v = 0.0
    return f"{v:.{digits}f}".replace("-", "\u2212")


def _ci(value: Any) -> tuple[float, float] | None:
    """An interval [lo, hi] as two finite floats, or None when missing or malformed."""
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        return None
    lo, hi = _num(value[0]), _num(value[1])
    if lo is None or hi is None:
        return None
    return (lo, hi) if lo <= hi else (hi, lo)


def fmt_ci(value: Any, fmt: Any = fmt_float) -> str:
    """Interval as "[2.90, 3.95]"; empty string when there is none (nothing to show)."""
    ci = _ci(value)
    return "" if ci is None else f"[{fmt(ci[0])}, {fmt(ci[1])}]"


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

    status: str  # pass | flagged | fail | nodata | inconclusive
    title: str
    headline: str
    findings: list[dict[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: Reasons not to trust the numbers at all (shown as a prominent box below the banner).
    warnings: list[str] = field(default_factory=list)
    #: The gate's decision rule in words, when the summary records one.
    rule: str = ""
    #: Why the audit could not judge (gate.status "inconclusive"), one sentence each.
    reasons: list[str] = field(default_factory=list)


def _gate_limit(summary: dict, region: str, kind: str) -> float | None:
    """The gate's ``kind`` ("lift" or "effect") limit for ``region``.

    Looked up as ``gate.max_<r>_<kind>`` first, then the config's ``gate.max_<r>_<kind>``,
    then the config's per-region dict ``gate.max_<kind>[r]``.
    """
    key = f"max_{region}_{kind}"
    gate_cfg = _dict(_dict(summary.get("config")).get("gate"))
    for source in (_dict(summary.get("gate")), gate_cfg):
        v = _num(source.get(key))
        if v is not None:
            return v
    return _num(_dict(gate_cfg.get(f"max_{kind}")).get(region))


def _lift_threshold(summary: dict, region: str) -> float | None:
    """The gate's lift limit for ``region`` (gate section first, then the config)."""
    return _gate_limit(summary, region, "lift")


def _effect_threshold(summary: dict, region: str) -> float | None:
    """The gate's counterfactual-effect limit for ``region``."""
    return _gate_limit(summary, region, "effect")


def _ci_level(summary: dict) -> str:
    """"95%" from ``stats.ci``, or "" when the run recorded no coverage."""
    level = _num(_dict(summary.get("stats")).get("ci"))
    if level is None or not 0 < level < 1:
        return ""
    return f"{level * 100:g}%"


def _sentence_digits(*values: Any) -> int:
    """Two decimals when every number is at least 0.1 in size, else three (0.05 vs 0.053)."""
    nums = [abs(v) for v in map(_num, values) if v is not None]
    return 2 if nums and min(nums) >= 0.1 else 3


def _lift_sentence(who: str, region: str, value: Any, lower: Any, threshold: Any, stats: dict, level: str) -> str:
    mass, area = stats.get(f"{region}_mass"), stats.get(f"{region}_area")
    noun = REGION_NOUNS.get(region, region.replace("_", " "))
    ci = _ci(stats.get(f"{region}_lift_ci"))
    lo = _num(lower) if _num(lower) is not None else (ci[0] if ci else None)
    if lo is not None and ci is not None:
        name = f"{level} interval" if level else "interval"
        limit = (f"lift {fmt_float(value)}, {name} {fmt_float(lo)}\u2013{fmt_float(ci[1])}; "
                 f"limit {_fmt_threshold(threshold)}")
    elif _num(lower) is not None:
        limit = f"lift {fmt_float(value)}, lower bound {fmt_float(lower)} > {_fmt_threshold(threshold)}"
    else:
        limit = f"lift {fmt_float(value)} > {_fmt_threshold(threshold)}"
    if _num(mass) is not None and _num(area) is not None:
        return (
            f"{who}: {_pct_words(mass)} of the heatmap falls on {noun} covering "
            f"{_pct_words(area)} of the image ({limit})."
        )
    return f"{who}: attention on {noun} is too concentrated ({limit})."


def _effect_sentence(who: str, region: str, value: Any, lower: Any, threshold: Any, stats: dict, level: str) -> str:
    """E.g. "Class 'horror': removing the text lowers confidence by 0.31 more than ..."."""
    noun = EFFECT_NOUNS.get(region, f"the {region.replace('_', ' ')} region")
    ci = _ci(stats.get(f"{region}_effect_ci"))
    lo = _num(lower) if _num(lower) is not None else (ci[0] if ci else None)
    hi = ci[1] if ci else None
    d = _sentence_digits(value, lo, hi)
    v = _num(value)
    if v is not None and v < 0:
        change = f"raises confidence by {fmt_dec(-v, d)} more"
    else:
        change = f"lowers confidence by {fmt_dec(value, d)} more"
    if lo is not None and hi is not None:
        name = f"{level} interval" if level else "interval"
        detail = f"{name} {fmt_dec(lo, d)}\u2013{fmt_dec(hi, d)}; threshold {_fmt_threshold(threshold)}"
    elif lo is not None:
        detail = f"interval lower bound {fmt_dec(lo, d)}; threshold {_fmt_threshold(threshold)}"
    else:
        detail = f"threshold {_fmt_threshold(threshold)}"
    return f"{who}: removing {noun} {change} than removing an equal-area placebo region ({detail})."


def _validation_sentence(summary: dict, value: Any) -> str:
    total = _num(_dict(summary.get("validation")).get("n_expectations"))
    failed = fmt_int(value) + (f" of {fmt_int(total)}" if total is not None else "")
    if _num(value) is None:
        return "Data validation failed, so the numbers below may be unreliable (see Data quality)."
    return (
        f"Data validation: {failed} expectations on the result tables did not hold, so the numbers "
        "below may be unreliable (see Data quality)."
    )


def _finding_sentence(cls: Any, rule: str, value: Any, threshold: Any, stats: dict,
                      lower: Any = None, summary: dict | None = None) -> str:
    """One failed rule in plain words, e.g. "Class 'horror': 34% of the heatmap falls on text ..."."""
    summary = summary or {}
    who = f"Class '{cls}'" if cls is not None else "Whole run"
    level = _ci_level(summary)
    m = re.fullmatch(r"max_(\w+)_(lift|effect)", rule or "")
    if m and m.group(2) == "lift":
        return _lift_sentence(who, m.group(1), value, lower, threshold, stats, level)
    if m:
        return _effect_sentence(who, m.group(1), value, lower, threshold, stats, level)
    if rule == "validation" and cls is None:
        return _validation_sentence(summary, value)
    pretty = (rule or "rule").replace("_", " ")
    return f"{who}: {pretty} is {fmt_float(value)} (limit {_fmt_threshold(threshold)})."


def _findings(summary: dict) -> list[dict[str, str]]:
    """Gate failures first; flagged classes and tokens the gate did not list keep their own reasons."""
    classes = _dict(summary.get("classes"))
    failures = _dict(summary.get("gate")).get("failures") or []
    tokens = _token_entries(summary)
    out: list[dict[str, str]] = []
    covered: set[str] = set()
    covered_tokens: set[str] = set()
    for f in failures:
        if not isinstance(f, dict):
            continue
        cls = f.get("class")
        rule = str(f.get("rule") or "")
        if rule == "token":
            key = str(f.get("token") or "")
            out.append({"sentence": token_sentence(tokens.get(key, {"token": key}), f, _ci_level(summary)),
                        "rule": rule, "token": key})
            covered_tokens.add(key)
            continue
        stats = _dict(classes.get(cls)) if cls is not None else _dict(summary.get("overall"))
        sentence = _finding_sentence(cls, rule, f.get("value"), f.get("threshold"), stats,
                                     lower=f.get("lower"), summary=summary)
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
    for key in _flagged_tokens(summary, tokens):
        if key not in covered_tokens:
            out.append({"sentence": token_sentence(tokens.get(key, {"token": key}), {}, _ci_level(summary)),
                        "rule": "", "token": key})
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


def _sanity_warnings(summary: dict) -> list[str]:
    """The randomisation check failed: the heatmaps say little about what the model learned."""
    sanity = _dict(summary.get("sanity"))
    if sanity.get("model_sensitive") is not False:
        return []
    text = "Explanations not model-sensitive: heatmaps barely change when the top layers are re-initialised"
    mean, limit = _num(sanity.get("rank_correlation_mean")), _num(sanity.get("max_rank_correlation"))
    if mean is not None:
        bound = f", limit {_fmt_threshold(limit)}" if limit is not None else ""
        text += f" (mean rank correlation with the randomised model {fmt_float(mean)}{bound})"
    return [text + " \u2014 do not trust the mass metrics."]


def _counterfactual_on(summary: dict) -> bool:
    return _dict(summary.get("counterfactual")).get("enabled") is True


def _gate_limits_text(summary: dict) -> str:
    """E.g. "text lift 2.0, text effect 0.05" (only the limits that apply to this run)."""
    parts = []
    lift = _lift_threshold(summary, "text")
    if lift is not None:
        parts.append(f"text lift {_fmt_threshold(lift)}")
    effect = _effect_threshold(summary, "text")
    if effect is not None and _counterfactual_on(summary):
        parts.append(f"text effect {_fmt_threshold(effect)}")
    return ", ".join(parts)


def build_verdict(summary: dict, validation: dict | None = None) -> Verdict:
    """PASS only when the gate passed; FAIL when it failed; FLAGGED/NO DATA otherwise."""
    gate = _dict(summary.get("gate"))
    passed = gate.get("passed")
    findings = _findings(summary)
    n_images = _num(summary.get("n_images"))
    has_validation_finding = any(f["rule"] == "validation" for f in findings)
    notes = [] if has_validation_finding else [n for n in [_validation_note(summary, validation or {})] if n]
    flagged = len(findings)
    reasons = [str(r) for r in gate.get("inconclusive_reasons") or [] if isinstance(r, str)]
    notes += [f"Warning: {w}" for w in gate.get("warnings") or [] if isinstance(w, str)]
    if gate.get("status") == "inconclusive":  # hardening: never PASS what could not be judged
        verdict = Verdict("inconclusive", "CANNOT JUDGE",
                          "The audit could not judge this model: do not read the numbers below as a pass.")
        verdict.reasons = reasons
    elif n_images is not None and n_images == 0:
        verdict = Verdict("nodata", "NO DATA", "No images were audited, so the gate decided nothing.")
    elif passed is False:
        verdict = Verdict("fail", "FAIL", _plural(flagged, "finding") + " blocked the release gate.")
    elif findings:
        noun = "finding" if any("token" in f for f in findings) else "class"
        verdict = Verdict("flagged", "FLAGGED", _plural(flagged, noun) + " flagged for review.")
        if passed is None:
            notes.append("No release gate result was recorded for this run.")
    elif passed is True:
        limits = _gate_limits_text(summary)
        if limits and gate.get("rule"):
            extra = f" (limits: {limits})"
        elif _lift_threshold(summary, "text") is not None:
            extra = f" (text lift \u2264 {_fmt_threshold(_lift_threshold(summary, 'text'))})"
        else:
            extra = ""
        verdict = Verdict("pass", "PASS", f"Every class passed the release gate{extra}.")
    else:
        verdict = Verdict("flagged", "NO GATE", "No release gate result was recorded for this run.")
    verdict.findings = findings
    verdict.notes = notes
    verdict.warnings = _sanity_warnings(summary)
    rule = gate.get("rule")
    verdict.rule = str(rule) if isinstance(rule, str) and rule.strip() else ""
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


def _interval_level(value: Any, ci: Any, threshold: float | None) -> str:
    """Colour by the interval, as the gate decides: red when even its lower bound is above the
    limit, amber when only part of it is, green when all of it is below. Summaries without
    intervals fall back to the point estimate (:func:`_lift_level`)."""
    if _num(value) is None or threshold is None:
        return ""
    interval = _ci(ci)
    if interval is None:
        return _lift_level(value, threshold)
    lo, hi = interval
    if lo > threshold:
        return "lift-bad"
    if hi > threshold:
        return "lift-warn"
    return "lift-ok"


def _flip_keys(summary: dict) -> list[str]:
    """Counterfactual columns (flip_rate_*), shown only when some class has a value.

    With the counterfactual section present the flip rates live there instead.
    """
    if _counterfactual_on(summary):
        return []
    groups = list(_dict(summary.get("classes")).values()) + [_dict(summary.get("overall"))]
    keys: list[str] = []
    for stats in groups:
        for k, v in _dict(stats).items():
            if k.startswith("flip_rate_") and k not in keys and _num(v) is not None:
                keys.append(k)
    if "flip_rate_placebo" in keys and "flip_rate_text_placebo" in keys:  # the 0.1 contract alias
        keys.remove("flip_rate_placebo")
    return keys


def _col(key: str, label: str, kind: str = "num", group: str | None = None, fmt: str = "int",
         title: str = "", region: str | None = None, first: bool = False) -> dict[str, Any]:
    """One column spec (every key present: the template is rendered with StrictUndefined)."""
    return {"key": key, "label": label, "kind": kind, "group": group, "fmt": fmt, "title": title,
            "region": region, "first": first}


def region_sources(summary: dict) -> dict[str, dict[str, Any]]:
    """``summary["region_sources"]`` as {region: {"source", "heuristic", "from"}}.

    ``source`` is a short provider name ("grabcut"), ``from`` a sentence on how the region
    was obtained; other keys (ranks, flags) are for machines and not shown.
    """
    out = {}
    for name, info in _dict(summary.get("region_sources")).items():
        info = _dict(info)
        out[str(name)] = {
            "source": str(info["source"]) if info.get("source") not in (None, "") else "",
            "heuristic": info.get("heuristic") is True,
            "from": str(info["from"]) if isinstance(info.get("from"), str) else "",
        }
    return out


def _class_columns(regions: list[str], flip_keys: list[str]) -> list[dict[str, Any]]:
    """Column specs in table order: class, n, four per region, flip rates, status."""
    cols = [_col("name", "Class", kind="text"), _col("n", "Images", title="Audited images in this class")]
    for r in regions:
        grp = _region_label(r)
        cols += [
            _col(f"{r}_mass", "Mass", group=grp, fmt="pct", region=r, first=True, title=f"Share of heatmap on {r}"),
            _col(f"{r}_area", "Area", group=grp, fmt="pct", region=r, title=f"Share of image covered by {r}"),
            _col(f"{r}_lift", "Lift", group=grp, fmt="lift", region=r,
                 title="Mass / area with its interval; 1.0 = uniform attention"),
            _col(f"{r}_hit_rate", "Hit rate", group=grp, fmt="hit", region=r,
                 title=f"Share of images whose heatmap peak lies on {r}, and the share expected by area"),
        ]
    for i, k in enumerate(flip_keys):
        label = k.removeprefix("flip_rate_").replace("_", " ")
        cols.append(_col(k, label.capitalize(), group="Flip rate", fmt="pct", first=i == 0,
                         title=f"Share of predictions that change ({label})"))
    cols.append(_col("flagged", "Status", kind="text"))
    return cols


def _cell(col: dict[str, Any], stats: dict, thresholds: dict[str, float | None]) -> dict[str, str]:
    """A formatted cell: ``sub`` is a second line always shown, ``extra`` one shown on request."""
    value = stats.get(col["key"])
    fmt = col["fmt"]
    cell = {"text": fmt_int(value), "sort": _sort_key(value), "cls": "num", "sub": "", "extra": "", "title": ""}
    if fmt == "pct":
        cell["text"] = fmt_pct(value)
        cell["extra"] = fmt_ci(stats.get(f"{col['key']}_ci"), fmt_pct)
    elif fmt == "hit":
        cell["text"] = fmt_pct(value)
        expected = stats.get(f"{col['region']}_hit_expected")
        if _num(expected) is not None:
            cell["sub"] = f"exp. {fmt_pct(expected)}"
            cell["title"] = f"{fmt_pct(value)} of peaks on {col['region']}; {fmt_pct(expected)} expected by its area"
    elif fmt == "lift":
        ci = stats.get(f"{col['key']}_ci")
        level = _interval_level(value, ci, thresholds.get(col["region"]))
        cell.update(text=fmt_float(value), cls=f"num lift {level}".strip())
        cell["sub"] = fmt_ci(ci) if _num(value) is not None else ""
    return cell


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


def _groups(cols: list[dict[str, Any]], sources: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The header's top row: one cell per run of columns with the same group."""
    groups: list[dict[str, Any]] = []
    for c in cols:
        if groups and c["group"] is not None and groups[-1]["label"] == c["group"]:
            groups[-1]["span"] += 1
            continue
        src = sources.get(c["region"] or "", {})
        title = ""
        if src.get("heuristic"):
            title = f"Estimated by a heuristic ({src['source'] or 'unspecified'}): treat these numbers as approximate"
        groups.append({"label": c["group"], "span": 1, "heuristic": bool(src.get("heuristic")), "title": title})
    return groups


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
    groups = _groups(cols, region_sources(summary))
    every = rows + ([overall_row] if overall_row else [])
    cells = [c for r in every for c in r["cells"]]
    return {
        "columns": cols,
        "groups": groups if any(g["label"] for g in groups) else [],
        "rows": rows,
        "overall": overall_row,
        "thresholds": {r: _fmt_threshold(t) for r, t in thresholds.items() if t is not None},
        "min_images": fmt_int(min_n) if min_n is not None and min_n > 1 else None,
        "has_extra": any(c["extra"] for c in cells),
        "has_intervals": any(c["sub"].startswith("[") for c in cells),
        "ci_level": _ci_level(summary),
        "heuristic": [
            {"label": _region_label(r), "source": s["source"], "from": s["from"]}
            for r, s in region_sources(summary).items() if s["heuristic"] and r in regions
        ],
    }


# --------------------------------------------------------------------------- counterfactuals

PLOT_W, PLOT_H, PLOT_PAD = 220, 22, 12


def _nice_step(span: float, target: int = 4) -> float:
    raw = span / max(1, target)
    mag = 10 ** math.floor(math.log10(raw))
    return next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)


def _plot_domain(values: list[float]) -> tuple[float, float]:
    lo, hi = min(values), max(values)
    span = hi - lo
    if span < 1e-9:
        lo, hi, span = lo - 0.05, hi + 0.05, 0.1
    return lo - 0.06 * span, hi + 0.06 * span


def _x(value: float, domain: tuple[float, float], w: int = PLOT_W) -> float:
    lo, hi = domain
    return round(PLOT_PAD + (value - lo) / (hi - lo) * (w - 2 * PLOT_PAD), 1)


def _effect_plot(value: Any, ci: Any, threshold: float | None, domain: tuple[float, float],
                 level: str, label: str, w: int = PLOT_W) -> dict[str, Any] | None:
    """Coordinates of one row's interval plot: zero line, limit line, interval and estimate."""
    v = _num(value)
    if v is None:
        return None
    interval = _ci(ci)
    title = f"{label}: effect {fmt_dec(v)}"
    if interval:
        title += f", interval {fmt_dec(interval[0])} to {fmt_dec(interval[1])}"
    if threshold is not None:
        title += f", threshold {_fmt_threshold(threshold)}"
    return {
        "w": w, "h": PLOT_H, "mid": PLOT_H / 2,
        "x0": _x(0.0, domain, w),
        "xt": _x(threshold, domain, w) if threshold is not None else None,
        "xlo": _x(interval[0], domain, w) if interval else None,
        "xhi": _x(interval[1], domain, w) if interval else None,
        "xv": _x(v, domain, w),
        "level": level.replace("lift-", "") or "none",
        "title": title,
    }


def _label_span(x: float, text: str, anchor: str) -> tuple[float, float]:
    width = 6.0 * len(text) + 2  # 10 px system-ui digits are about 6 px wide
    start = {"start": x, "middle": x - width / 2, "end": x - width}[anchor]
    return start, start + width


def _plot_axis(domain: tuple[float, float], threshold: float | None, w: int = PLOT_W) -> dict[str, Any]:
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
        place(threshold, _fmt_threshold(threshold), "limit-label",
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


def _cf_status(level: str, n: float | None, min_n: float | None) -> str:
    if not level:
        return "none"
    if level == "lift-bad" and min_n is not None and n is not None and n < min_n:
        return "small"
    return {"lift-bad": "bad", "lift-warn": "warn", "lift-ok": "ok"}[level]


CF_STATUS = {
    "bad": ("tag-bad", "above limit", "The whole interval is above the threshold: the gate flags this class"),
    "warn": ("tag-warn", "inconclusive", "The interval reaches above the threshold but its lower bound does not"),
    "ok": ("tag-ok", "below limit", "The whole interval is below the threshold"),
    "small": ("tag-muted", "too few", "Above the threshold, but too few images to be flagged"),
    "none": ("", "\u2014", ""),
}


def _cf_row(name: str, stats: dict, r: str, threshold: float | None, domain: tuple[float, float],
            min_n: float | None, overall: bool = False) -> dict[str, Any]:
    n_edit, n = stats.get(f"n_{r}_edited"), stats.get("n")
    effect, ci = stats.get(f"{r}_effect"), stats.get(f"{r}_effect_ci")
    level = _interval_level(effect, ci, threshold)
    status = "none" if overall else _cf_status(level, _num(n), min_n)

    def cell(value: Any, text: str, cls: str = "num", sub: str = "", title: str = "") -> dict[str, str]:
        return {"text": text, "sort": _sort_key(value), "cls": cls, "sub": sub, "title": title}

    def get(key: str) -> Any:
        return stats.get(key.format(r=r))

    edited_sub = f"of {fmt_int(n)}" if _num(n) is not None and _num(n_edit) is not None else ""
    tag_cls, tag_text, tag_title = CF_STATUS[status]
    return {
        "name": name,
        "cells": [
            cell(n_edit, fmt_int(n_edit), sub=edited_sub,
                 title=f"Images with {r} that were edited (images without it are left out)"),
            cell(get("flip_rate_{r}_removed"), fmt_pct(get("flip_rate_{r}_removed")), cls="num group-start"),
            cell(get("flip_rate_{r}_placebo"), fmt_pct(get("flip_rate_{r}_placebo"))),
            cell(get("conf_drop_{r}_removed"), fmt_dec(get("conf_drop_{r}_removed")), cls="num group-start"),
            cell(get("conf_drop_{r}_placebo"), fmt_dec(get("conf_drop_{r}_placebo"))),
            cell(effect, fmt_dec(effect), cls=f"num group-start lift {level}".strip(),
                 sub=fmt_ci(ci, fmt_dec) if _num(effect) is not None else ""),
        ],
        "plot": _effect_plot(effect, ci, threshold, domain, level, name),
        "effect_sort": _sort_key(effect),
        "status": status,
        "status_sort": {"bad": "0", "warn": "1", "small": "2", "ok": "3", "none": "4"}[status],
        "tag": {"cls": tag_cls, "text": tag_text, "title": tag_title},
    }


def _cf_block(summary: dict, r: str, min_n: float | None) -> dict[str, Any]:
    classes = {str(k): _dict(v) for k, v in _dict(summary.get("classes")).items()}
    overall = _dict(summary.get("overall"))
    threshold = _effect_threshold(summary, r)
    points: list[float] = [0.0] + ([threshold] if threshold is not None else [])
    for stats in [*classes.values(), overall]:
        if _num(stats.get(f"{r}_effect")) is None:
            continue
        points.append(_num(stats.get(f"{r}_effect")))
        points += list(_ci(stats.get(f"{r}_effect_ci")) or ())
    domain = _plot_domain(points)
    rows = [_cf_row(name, st, r, threshold, domain, min_n) for name, st in classes.items()]
    src = region_sources(summary).get(r, {})
    return {
        "region": r,
        "label": _region_label(r),
        "noun": EFFECT_NOUNS.get(r, f"the {r.replace('_', ' ')} region"),
        "heuristic": bool(src.get("heuristic")),
        "source": src.get("source", ""),
        "threshold": _fmt_threshold(threshold) if threshold is not None else "",
        "rows": rows,
        "overall": _cf_row("All images", overall, r, threshold, domain, None, overall=True) if overall else None,
        "axis": _plot_axis(domain, threshold),
        "has_data": any(row["plot"] for row in rows),
    }


def _accuracy_table(summary: dict, regions: list[str]) -> dict[str, Any] | None:
    """Accuracy on originals and on each edited set, per class; None without labels."""
    entries = [(str(k), _dict(_dict(v).get("accuracy"))) for k, v in _dict(summary.get("classes")).items()]
    overall = _dict(_dict(summary.get("overall")).get("accuracy"))
    if not any(_num(a.get("original")) is not None for _, a in entries + [("", overall)]):
        return None
    columns = [{"label": "Original", "title": "Accuracy on the unedited images", "region": None}]
    for r in regions:
        lbl = _region_label(r)
        columns += [
            {"label": f"{lbl} removed", "title": f"Accuracy after removing {r}", "region": r},
            {"label": f"{lbl} placebo", "title": "Accuracy after removing the equal-area placebo", "region": r},
            {"label": f"{lbl} gap", "title": f"Original minus {r}-removed accuracy (positive: accuracy lost)",
             "region": r},
        ]

    def row(name: str, acc: dict) -> dict[str, Any]:
        cells = [{"text": fmt_pct(acc.get("original")), "sort": _sort_key(acc.get("original")), "cls": "num"}]
        for r in regions:
            for key in (f"{r}_removed", f"{r}_placebo"):
                cells.append({"text": fmt_pct(acc.get(key)), "sort": _sort_key(acc.get(key)), "cls": "num"})
            gap = _num(acc.get(f"{r}_gap"))
            text = DASH if gap is None else f"{gap * 100:+.1f} pts".replace("-", "\u2212").replace("+0.0 ", "0.0 ")
            cells.append({"text": text, "sort": _sort_key(gap), "cls": "num"})
        return {"name": name, "cells": cells}

    return {
        "columns": columns,
        "rows": [row(name, acc) for name, acc in entries if acc],
        "overall": row("All images", overall) if overall else None,
    }


def build_counterfactual(summary: dict) -> dict[str, Any] | None:
    """The counterfactual section; None for summaries that predate it (nothing to show)."""
    if "counterfactual" not in summary:
        return None
    cf = _dict(summary.get("counterfactual"))
    enabled = cf.get("enabled") is True
    regions = [str(r) for r in cf.get("regions") or []] if enabled else []
    min_n = _num(_dict(_dict(summary.get("config")).get("gate")).get("min_images_per_class"))
    method = cf.get("method")
    return {
        "enabled": enabled,
        "method": {"telea": "Telea inpainting", "ns": "Navier\u2013Stokes inpainting"}.get(method, _text(method)),
        "margin": fmt_int(cf.get("margin")),
        "blocks": [_cf_block(summary, r, min_n) for r in regions],
        "accuracy": _accuracy_table(summary, regions) if enabled else None,
        "ci_level": _ci_level(summary),
        "min_images": fmt_int(min_n) if min_n is not None and min_n > 1 else None,
    }


# --------------------------------------------------------------------------- sanity check


def build_sanity(summary: dict) -> dict[str, Any] | None:
    """The randomisation-check panel; None for summaries that predate it."""
    if "sanity" not in summary:
        return None
    s = summary.get("sanity")
    if not isinstance(s, dict):
        return {"ran": False, "status": "none", "tag": "not run", "verdict": "", "facts": []}
    sensitive = s.get("model_sensitive")
    status = {True: "ok", False: "bad"}.get(sensitive, "none")
    layers = [str(x) for x in s.get("randomized_layers") or []]
    limit = _num(s.get("max_rank_correlation"))
    facts = [
        ("Images sampled", fmt_int(s.get("n_images"))),
        ("Re-initialised layers", ", ".join(layers) or DASH),
        ("Mean rank correlation", fmt_float(s.get("rank_correlation_mean"))),
        ("Median rank correlation", fmt_float(s.get("rank_correlation_median"))),
        ("Limit (mean)", f"\u2264 {_fmt_threshold(limit)}" if limit is not None else DASH),
    ]
    mean = _num(s.get("rank_correlation_mean"))
    if status == "ok" and mean is not None:
        bound = f" \u2264 {_fmt_threshold(limit)}" if limit is not None else ""
        verdict = (f"Heatmaps change when the top layers are randomised (mean rank correlation {fmt_float(mean)}"
                   f"{bound}), so they reflect what the model learned.")
    elif status == "bad" and mean is not None:
        bound = f" > {_fmt_threshold(limit)}" if limit is not None else ""
        verdict = ("Heatmaps of the randomised model rank pixels almost like the trained model's "
                   f"(mean rank correlation {fmt_float(mean)}{bound}): they describe the image more than the model.")
    else:
        verdict = _text(s.get("verdict")) if s.get("verdict") else ""
    return {
        "ran": True,
        "status": status,
        "tag": {"ok": "model-sensitive", "bad": "not model-sensitive", "none": "not determined"}[status],
        "verdict": verdict,
        "facts": [{"label": k, "value": v} for k, v in facts],
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


def _edit_regions(edits: dict, order: list[str]) -> list[str]:
    """Regions with a counterfactual view ("<r>_removed" / "<r>_placebo"), in ``order`` first."""
    found = []
    for key in edits:
        for suffix in ("_removed", "_placebo"):
            if isinstance(key, str) and key.endswith(suffix) and key[: -len(suffix)] not in found:
                found.append(key[: -len(suffix)])
    return [r for r in order if r in found] + [r for r in found if r not in order]


def _after_text(view: dict, before_pred: str) -> tuple[str, bool]:
    """"horror 95%", or "comedy (horror 12%)" when the prediction changed.

    The edited view's confidence is that of the originally predicted class.
    """
    pred = view.get("pred")
    conf = fmt_pct(view.get("confidence"), 0)
    if pred is None:
        return f"{before_pred} {conf}", False
    if str(pred) == before_pred:
        return f"{pred} {conf}", False
    return f"{pred} ({before_pred} {conf})", True


def _edit_panel(view: dict, caption: str, outline: bool) -> dict[str, str] | None:
    rgb = _as_rgb_uint8(view.get("image"))
    if rgb is None:
        return None
    scale = _display_scale(rgb.shape)
    small = _resize(rgb, scale)
    if outline:
        small = _outline_polygons(small, _mask_polygons(view.get("mask"), rgb.shape[:2]), scale)
    return {"caption": caption, "src": png_data_uri(small)}


def edit_rows(item: GalleryItem, order: list[str] | None = None) -> list[dict[str, Any]]:
    """One row per edited region: the region-removed image, the placebo (outlined) and what the
    model predicted before and after each edit."""
    edits = _dict(getattr(item, "edits", None))
    before = str(item.pred)
    rows = []
    for r in _edit_regions(edits, order or []):
        label = _region_label(r)
        removed, placebo = _dict(edits.get(f"{r}_removed")), _dict(edits.get(f"{r}_placebo"))
        panels, changes = [], []
        for view, caption, outline, what in (
            (removed, f"{label} removed", False, f"{label} removed"),
            (placebo, "Placebo (outlined)", True, "Placebo"),
        ):
            if not view:
                continue
            panel = _edit_panel(view, caption, outline)
            if panel:
                panels.append(panel)
            text, flipped = _after_text(view, before)
            changes.append({"label": what, "after": text, "flipped": flipped})
        if changes:
            rows.append({"region": r, "panels": panels, "changes": changes,
                         "before": f"{before} {fmt_pct(item.confidence, 0)}"})
    return rows


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
    gallery: list[GalleryItem], regions: list[str], thresholds: dict[str, float | None] | None = None,
    edit_order: list[str] | None = None,
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
            "edits": edit_rows(item, edit_order),
        })
    return cards


# --------------------------------------------------------------------------- tokens

#: Flagged tokens that get an example gallery; more would bloat the file (5 panels per example).
MAX_TOKEN_GALLERIES = 8
MAX_TOKEN_EXAMPLES = 3
MAX_TOKEN_CROPS = 4
#: Crops are shown 28 px tall; encoding them up to twice that keeps them sharp on high-DPI screens.
CROP_MAX_H, CROP_MAX_W = 56, 200
TOKEN_PLOT_W = 110
SHARE_W, SHARE_H = 84, 9
MAX_LABEL = 40

TOKEN_STATUS = {
    "flagged": ("tag-bad", "\u2691 flagged", "Tied to one class and either over-attended or needed: the gate flags it"),
    "spread": ("tag-muted", "not class-specific",
               "Attended or needed, but spread across classes alike, so not a class shortcut"),
    "ok": ("tag-ok", "ok", "Not over-attended and not needed beyond the threshold, or not tied to one class"),
}


def _token_entries(summary: dict) -> dict[str, dict]:
    """``summary["tokens"]`` by token key (malformed entries are skipped)."""
    raw = summary.get("tokens")
    entries = raw if isinstance(raw, list) else []
    return {str(t["token"]): t for t in entries if isinstance(t, dict) and t.get("token") not in (None, "")}


def _flagged_tokens(summary: dict, tokens: dict[str, dict]) -> list[str]:
    """Token keys flagged in ``flagged_tokens`` or on their own entry, in rank order."""
    listed = summary.get("flagged_tokens")
    keys = [str(k) for k in listed if k not in (None, "")] if isinstance(listed, list) else []
    keys += [k for k, t in tokens.items() if t.get("flagged") is True and k not in keys]
    order = list(tokens)
    return sorted(dict.fromkeys(keys), key=lambda k: order.index(k) if k in order else len(order))


def _token_kind(t: dict) -> str:
    key = str(t.get("token") or "")
    kind = t.get("kind") if t.get("kind") in ("text", "visual") else key.split(":", 1)[0]
    return kind if kind in ("text", "visual") else "text"


def _clip(text: str, n: int = MAX_LABEL) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "\u2026"


def token_label(t: dict) -> dict[str, str]:
    """How a token reads: {"kind", "label", "hash"}.

    Text tokens show an example of the text as OCR read it (else the normalised string);
    visual tokens read "unreadable mark" with a short hash of their fingerprint.
    """
    key = str(t.get("token") or "")
    body = key.split(":", 1)[1] if ":" in key else key
    kind = _token_kind(t)
    if kind == "visual":
        return {"kind": kind, "label": "unreadable mark", "hash": body[:8]}
    example = t.get("example_text")
    text = example if isinstance(example, str) and example.strip() else body
    return {"kind": kind, "label": _clip(text) or DASH, "hash": ""}


def _token_name(t: dict) -> tuple[str, str]:
    """Sentence subject and the noun for "removing just this ...": ("Token 'NEW'", "text")."""
    lab = token_label(t)
    if lab["kind"] == "visual":
        return (f"An unreadable mark #{lab['hash']}" if lab["hash"] else "An unreadable mark"), "mark"
    return f"Token '{lab['label']}'", "text"


def token_sentence(t: dict, failure: dict, level: str = "") -> str:
    """E.g. "Token 'NEW' (on 38 images, 95% in class 'horror'): removing just this text lowers
    confidence by 0.31 more than a placebo (95% interval 0.22–0.40); the model attends to it
    4.1× its area." ``failure`` (a gate failure of rule "token") fills in what ``t`` lacks;
    ``level`` names the interval's coverage ("95%")."""
    t, failure = _dict(t), _dict(failure)
    who, noun = _token_name(t)
    context = []
    n = _num(t.get("n_images"))
    if n is not None:
        context.append(f"on {fmt_int(n)} image{'' if n == 1 else 's'}")
    cls = t.get("top_class", failure.get("class"))
    share = _num(t.get("class_share"))
    if cls is not None:
        context.append(f"{_pct_words(share)} in class '{cls}'" if share is not None else f"mostly in class '{cls}'")
    head = f"{who} ({', '.join(context)})" if context else who
    parts = []
    effect = _num(t.get("effect")) if _num(t.get("effect")) is not None else _num(failure.get("effect"))
    ci = _ci(t.get("effect_ci"))
    lo = ci[0] if ci else _num(failure.get("lower"))
    if effect is not None:
        d = _sentence_digits(effect, lo, ci[1] if ci else None)
        change = (f"raises confidence by {fmt_dec(-effect, d)} more" if effect < 0
                  else f"lowers confidence by {fmt_dec(effect, d)} more")
        name = f"{level} interval" if level else "interval"
        if ci:
            detail = f" ({name} {fmt_dec(ci[0], d)}\u2013{fmt_dec(ci[1], d)})"
        elif lo is not None:
            detail = f" (interval lower bound {fmt_dec(lo, d)})"
        else:
            detail = ""
        parts.append(f"removing just this {noun} {change} than a placebo{detail}")
    lift = _num(t.get("lift")) if _num(t.get("lift")) is not None else _num(failure.get("value"))
    if lift is not None:
        parts.append(f"the model attends to it {lift:.1f}\u00d7 its area")
    return f"{head}: {'; '.join(parts)}." if parts else f"{head}: flagged."


def token_crop_uri(crop: Any) -> str | None:
    """A token crop as a small inline PNG (shrunk, never enlarged); None when unusable."""
    rgb = _as_rgb_uint8(crop)
    if rgb is None:
        return None
    h, w = rgb.shape[:2]
    return png_data_uri(_resize(rgb, min(1.0, CROP_MAX_H / h, CROP_MAX_W / w)))


def _listed(value: Any) -> list:
    """A list of items from a list, tuple, stacked array or a single item (None: empty)."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, np.ndarray) and value.ndim == 4:
        return list(value)
    return [value]


def _token_crops(crops: Any, label: str) -> list[dict[str, str]]:
    out = []
    for crop in _listed(crops)[:MAX_TOKEN_CROPS]:
        uri = token_crop_uri(crop)
        if uri:
            out.append({"src": uri, "alt": f"Example of {label}"})
    return out


def _base_rates(summary: dict) -> dict[str, float]:
    """Each class's share of all audited images (the Fisher test's baseline)."""
    counts = {str(k): _num(_dict(v).get("n")) for k, v in _dict(summary.get("classes")).items()}
    total = sum(v for v in counts.values() if v)
    return {k: v / total for k, v in counts.items() if v and total > 0}


def _share_bar(t: dict, base: dict[str, float], flagged: bool) -> dict[str, Any] | None:
    """Stacked bar of the token's images by class: top class first (coloured), the rest grey,
    with a tick at the top class's share of all images (what no association would give)."""
    shares = [(str(k), _num(v)) for k, v in _dict(t.get("class_shares")).items() if (_num(v) or 0) > 0]
    if not shares:
        return None
    top = str(t.get("top_class")) if t.get("top_class") is not None else None
    shares.sort(key=lambda kv: (kv[0] != top, -kv[1]))
    total = sum(v for _, v in shares)
    scale = SHARE_W / max(total, 1.0)
    segs, x = [], 0.0
    for i, (name, v) in enumerate(shares):
        width = v * scale
        cls = ("top-bad" if flagged else "top") if name == top else ("rest-a" if i % 2 else "rest-b")
        segs.append({"x": round(x, 1), "w": round(max(width, 0.5), 1), "cls": cls, "title": f"{name}: {fmt_pct(v, 0)}"})
        x += width
    rate = base.get(top) if top is not None else None
    title = ", ".join(f"{k} {_pct_words(v)}" for k, v in shares)
    if rate is not None:
        title += f" (class '{top}' is {_pct_words(rate)} of all images)"
    return {"w": SHARE_W, "h": SHARE_H, "segs": segs, "title": title,
            "tick": round(rate * SHARE_W, 1) if rate is not None else None,
            "base": _pct_words(rate) if rate is not None else ""}


def fmt_p(value: Any) -> str:
    """p-values: two or three decimals, small ones as 3.2×10⁻⁹ (never rounded to 0)."""
    v = _num(value)
    if v is None:
        return DASH
    if v >= 0.01:
        return f"{v:.2f}"
    if v >= 0.001:
        return f"{v:.3f}"
    if v <= 0:
        return "<10\u207b\u00b3\u2070\u2070"
    mantissa, exponent = f"{v:.1e}".split("e")
    sup = str(int(exponent)).translate(str.maketrans("-0123456789", "\u207b\u2070\u00b9\u00b2\u00b3\u2074\u2075\u2076\u2077\u2078\u2079"))
    return f"{mantissa}\u00d710{sup}"


def _token_limits(summary: dict) -> dict[str, float | None]:
    cfg = _dict(_dict(summary.get("config")).get("tokens"))
    return {k: _num(cfg.get(f"max_{k}")) for k in ("lift", "effect", "p_value")}


def _token_status(t: dict, limits: dict[str, float | None], flagged: bool) -> tuple[str, str]:
    """("flagged" | "spread" | "ok", why): why names the criteria a flagged token met."""
    lift, p = _num(t.get("lift")), _num(t.get("p_value"))
    ci = _ci(t.get("effect_ci"))
    attended = lift is not None and limits["lift"] is not None and lift > limits["lift"]
    effective = ci is not None and limits["effect"] is not None and ci[0] > limits["effect"]
    if flagged:
        return "flagged", ", ".join(w for w, on in (("lift", attended), ("effect", effective)) if on)
    associated = p is not None and limits["p_value"] is not None and p < limits["p_value"]
    if (attended or effective) and not associated and p is not None and limits["p_value"] is not None:
        return "spread", ""
    return "ok", ""


def _token_row(rank: int, t: dict, crops: Any, limits: dict, flagged: bool, base: dict[str, float],
               domain: tuple[float, float] | None) -> dict[str, Any]:
    lab = token_label(t)
    key = str(t.get("token"))
    lift, effect, ci = t.get("lift"), t.get("effect"), t.get("effect_ci")
    status, why = _token_status(t, limits, flagged)
    tag_cls, tag_text, tag_title = TOKEN_STATUS[status]
    level = _interval_level(effect, ci, limits["effect"])
    n_inst, removed, placebo = _num(t.get("n_instances")), t.get("flip_rate_removed"), t.get("flip_rate_placebo")
    p = _num(t.get("p_value"))
    share = t.get("class_share")
    return {
        "rank": rank,
        "key": key,
        "kind": lab["kind"],
        "label": lab["label"],
        "hash": lab["hash"],
        "sort_label": (lab["label"] + " " + lab["hash"]).strip(),
        "crops": _token_crops(crops, f"'{lab['label']}'" if lab["kind"] == "text" else f"the unreadable mark #{lab['hash']}"),
        "n_images": {"text": fmt_int(t.get("n_images")), "sort": _sort_key(t.get("n_images")),
                     "sub": f"{fmt_int(n_inst)} instance{'' if n_inst == 1 else 's'}" if n_inst is not None else ""},
        "top_class": _text(t.get("top_class")),
        "share": {"text": fmt_pct(share, 0), "sort": _sort_key(share)},
        "bar": _share_bar(t, base, flagged),
        "p": {"text": fmt_p(p), "sort": _sort_key(p), "title": f"p = {p:.3g}" if p is not None else "",
              "cls": "num assoc" if p is not None and limits["p_value"] is not None and p < limits["p_value"] else "num"},
        "lift": {"text": fmt_float(lift), "sort": _sort_key(lift), "cls": f"num lift {_lift_level(lift, limits['lift'])}".strip(),
                 "sub": (f"{fmt_pct(t.get('mass'))} on {fmt_pct(t.get('area'))}"
                         if _num(t.get("mass")) is not None and _num(t.get("area")) is not None else "")},
        "effect": {"text": fmt_dec(effect), "sort": _sort_key(effect), "cls": f"num lift {level}".strip(),
                   "sub": fmt_ci(ci, fmt_dec) if _num(effect) is not None else "", "tested": _num(effect) is not None},
        "plot": _effect_plot(effect, ci, limits["effect"], domain, level, f"'{lab['label']}'", TOKEN_PLOT_W)
        if domain is not None else None,
        "flips": {"text": fmt_pct(removed, 0), "sort": _sort_key(removed),
                  "sub": f"placebo {fmt_pct(placebo, 0)}" if _num(placebo) is not None else ""},
        "risk": {"text": fmt_float(t.get("risk"), 1 if (_num(t.get("risk")) or 0) >= 10 else 2),
                 "sort": _sort_key(t.get("risk"))},
        "status": status,
        "status_sort": {"flagged": "0", "spread": "1", "ok": "2"}[status],
        "tag": {"cls": tag_cls, "text": tag_text, "title": tag_title},
        "why": why,
    }


def _token_panels(item: GalleryItem) -> list[dict[str, str]]:
    """Original, heatmap, heatmap with the token outlined, token removed, placebo (outlined)."""
    rgb = _as_rgb_uint8(getattr(item, "image", None))
    if rgb is None:
        return []
    cam = _cam_like(getattr(item, "cam", None), rgb.shape[:2])
    polygons = list(getattr(item, "text_polygons", None) or []) or _mask_polygons(
        _dict(getattr(item, "regions", None)).get("token"), rgb.shape[:2]
    )
    scale = _display_scale(rgb.shape)
    small = _resize(rgb, scale)
    overlay = heatmap_overlay(small, _resize(cam, scale))
    panels = [
        {"caption": "Original", "src": png_data_uri(small), "after": "", "flipped": False},
        {"caption": "Grad-CAM", "src": png_data_uri(overlay), "after": "", "flipped": False},
        {"caption": "Token outlined", "src": png_data_uri(_outline_polygons(overlay, polygons, scale)),
         "after": "", "flipped": False},
    ]
    edits = _dict(getattr(item, "edits", None))
    before = _text(item.pred)
    for key, caption, outline in (("token_removed", "Token removed", False), ("token_placebo", "Placebo (outlined)", True)):
        view = _dict(edits.get(key))
        panel = _edit_panel(view, caption, outline) if view else None
        if panel:
            after, flipped = _after_text(view, before)
            panels.append({**panel, "after": "\u2192 " + after, "flipped": flipped})
    return panels


def _token_card(item: GalleryItem) -> dict[str, Any]:
    edits = _dict(getattr(item, "edits", None))
    before = _text(item.pred)
    changes = []
    for key, what in (("token_removed", "Token removed"), ("token_placebo", "Placebo")):
        view = _dict(edits.get(key))
        if view:
            after, flipped = _after_text(view, before)
            changes.append({"label": what, "after": after, "flipped": flipped})
    label = None if item.label is None else str(item.label)
    effect = _dict(item.metrics).get("token_effect")
    return {
        "path": _text(item.path),
        "label": label if label is not None else DASH,
        "pred": before,
        "mismatch": label is not None and label != before,
        "before": f"{before} {fmt_pct(item.confidence, 0)}",
        "changes": changes,
        "effect": fmt_dec(effect) if _num(effect) is not None else "",
        "panels": _token_panels(item),
    }


def build_tokens(summary: dict, examples: dict | None = None, crops: dict | None = None) -> dict[str, Any] | None:
    """The "Text the model uses" section; None for summaries that predate tokens."""
    if "tokens" not in summary:
        return None
    cfg = _dict(_dict(summary.get("config")).get("tokens"))
    regions = summary.get("regions")
    ran = cfg.get("enabled") is not False and (not isinstance(regions, list) or "text" in regions)
    tokens = _token_entries(summary)
    flagged = set(_flagged_tokens(summary, tokens))
    limits = _token_limits(summary)
    examples = {str(k): v for k, v in _dict(examples).items()}
    crops = {str(k): v for k, v in _dict(crops).items()}
    has_effects = any(_num(t.get("effect")) is not None for t in tokens.values())
    domain = None
    if has_effects:
        points = [0.0] + ([limits["effect"]] if limits["effect"] is not None else [])
        for t in tokens.values():
            if _num(t.get("effect")) is not None:
                points += [_num(t.get("effect")), *(_ci(t.get("effect_ci")) or ())]
        domain = _plot_domain(points)
    base = _base_rates(summary)
    rows = [_token_row(i, t, crops.get(k), limits, k in flagged, base, domain)
            for i, (k, t) in enumerate(tokens.items(), start=1)]
    level = _ci_level(summary)
    galleries, skipped = [], 0
    for row in rows:
        if row["status"] != "flagged":
            continue
        if len(galleries) >= MAX_TOKEN_GALLERIES:
            skipped += 1
            continue
        items = [it for it in _listed(examples.get(row["key"])) if isinstance(it, GalleryItem)]
        row["gallery_id"] = f"token-examples-{row['rank']}"
        galleries.append({
            "id": row["gallery_id"], "rank": row["rank"], "label": row["label"], "kind": row["kind"],
            "hash": row["hash"], "key": row["key"], "crops": row["crops"],
            "sentence": token_sentence(tokens[row["key"]], {}, level),
            "cards": [_token_card(it) for it in items[:MAX_TOKEN_EXAMPLES]],
        })
    for row in rows:
        row.setdefault("gallery_id", "")
    n_tested = sum(1 for t in tokens.values() if _num(t.get("effect")) is not None)
    return {
        "ran": ran,
        "rows": rows,
        "has_effects": has_effects,
        "has_crops": any(r["crops"] for r in rows),
        "axis": _plot_axis(domain, limits["effect"], TOKEN_PLOT_W) if domain is not None else None,
        "galleries": galleries,
        "skipped_galleries": skipped,
        "n_flagged": len([r for r in rows if r["status"] == "flagged"]),
        "n_tested": n_tested,
        "ci_level": level,
        "limits": {k: _fmt_threshold(v) if v is not None else "" for k, v in limits.items()},
        "p_limit": f"{limits['p_value']:g}" if limits["p_value"] is not None else "",
        "min_images": fmt_int(cfg.get("min_images")) if _num(cfg.get("min_images")) is not None else "",
        "effect_tokens": fmt_int(cfg.get("effect_tokens")) if _num(cfg.get("effect_tokens")) is not None else "",
        "max_effect_images": fmt_int(cfg.get("max_effect_images")) if _num(cfg.get("max_effect_images")) is not None else "",
        "cf_on": _counterfactual_on(summary),
    }


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


def _gate_setting(limits: str) -> str:
    """"text lift 2.0, text effect 0.05" -> "text lift ≤ 2.0 · effect ≤ 0.05"."""
    if not limits:
        return DASH
    return limits.replace("lift ", "lift \u2264 ").replace(", text effect ", " \u00b7 effect \u2264 ")


def build_settings(summary: dict) -> list[dict[str, str]]:
    """Model, CAM and gate settings a reviewer needs to interpret the numbers."""
    cfg = _dict(summary.get("config"))
    model, cam = _dict(cfg.get("model")), _dict(summary.get("cam")) or _dict(cfg.get("cam"))
    size = model.get("input_size")
    size_text = f"{size[0]}\u00d7{size[1]}" if isinstance(size, (list, tuple)) and len(size) == 2 else DASH
    resize = f" ({model['resize']})" if model.get("resize") else ""
    ckpt = model.get("checkpoint")
    amp = cam.get("amp")
    limits = _gate_limits_text(summary)
    if limits and _dict(summary.get("gate")).get("rule"):
        limits += " (lower bound)"
    group_by = summary.get("group_by")
    items = [
        ("Model", _model_name(model) + (f" \u00b7 {Path(str(ckpt)).name}" if ckpt else "")),
        ("Input", size_text + resize),
        ("CAM method", _text(cam.get("method"))),
        ("CAM target", _text(cam.get("target"))),
        ("Target layer", _text(cam.get("target_layer") or model.get("target_layer"))),
        ("Device", _text(cam.get("device")) + (f" \u00b7 AMP {amp}" if amp not in (None, "off") else "")),
        ("Grouped by", {"label": "true label", "pred": "predicted class"}.get(group_by, _text(group_by))),
        ("Gate", _gate_setting(limits)),
    ]
    cf = _dict(summary.get("counterfactual"))
    if cf.get("enabled") is True:
        regions = ", ".join(str(r) for r in cf.get("regions") or []) or DASH
        items.append(("Counterfactual", f"remove {regions} vs placebo"))
    stats = _dict(summary.get("stats"))
    if _ci_level(summary) and _num(stats.get("bootstrap")) is not None:
        items.append(("Intervals", f"{_ci_level(summary)} bootstrap \u00d7 {fmt_int(stats.get('bootstrap'))}"))
    return [{"label": k, "value": v} for k, v in items]


def build_methods(summary: dict) -> dict[str, Any]:
    """What the methods section needs beyond the fixed definitions."""
    stats = _dict(summary.get("stats"))
    level = _ci_level(summary)
    interval = ""
    if level:
        interval = f"{level} intervals by {stats.get('interval') or 'bootstrap'}"
        extra = []
        if _num(stats.get("bootstrap")) is not None:
            extra.append(f"{fmt_int(stats.get('bootstrap'))} resamples")
        if _num(stats.get("seed")) is not None:
            extra.append(f"seed {fmt_int(stats.get('seed'))}")
        if extra:
            interval += f" ({', '.join(extra)})"
    rule = _dict(summary.get("gate")).get("rule")
    return {
        "interval": interval,
        "ci_level": level,
        "rule": str(rule) if isinstance(rule, str) and rule.strip() else "",
        "sources": [
            {"label": _region_label(r), "source": v["source"] or DASH, "heuristic": v["heuristic"], "from": v["from"]}
            for r, v in region_sources(summary).items()
        ],
    }


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
    token_examples: dict[str, list[GalleryItem]] | None = None,
    token_crops: dict[str, list[np.ndarray]] | None = None,
) -> dict[str, Any]:
    """Everything the template shows, already formatted (the template only lays it out)."""
    summary = _dict(summary)
    regions = [str(r) for r in summary.get("regions") or []]
    errs = build_errors(errors)
    counterfactual = build_counterfactual(summary)
    cf_regions = [b["region"] for b in counterfactual["blocks"]] if counterfactual else []
    return {
        "name": _text(summary.get("name")),
        "run_id": _text(summary.get("run_id")),
        "created_at": _fmt_date(summary.get("created_at")),
        "version": _text(summary.get("camaudit_version")),
        "settings": build_settings(summary),
        "verdict": build_verdict(summary, validation),
        "table": build_class_table(summary),
        "gallery": build_gallery(gallery, regions, {r: _lift_threshold(summary, r) for r in regions or ["text"]},
                                 edit_order=cf_regions),
        "counterfactual": counterfactual,
        "tokens": build_tokens(summary, token_examples, token_crops),
        "sanity": build_sanity(summary),
        "methods": build_methods(summary),
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
    token_examples: dict[str, list[GalleryItem]] | None = None,
    token_crops: dict[str, list[np.ndarray]] | None = None,
) -> str:
    """The report as an HTML string (write_report without touching the disk)."""
    env = _environment()
    script = env.get_template("_sort.js.j2").render()
    context = build_context(summary, images, gallery, validation, errors, token_examples, token_crops)
    return env.get_template("report.html.j2").render(**context, script=Markup(script), csp=_csp(script))


def write_report(
    run_dir: Path,
    summary: dict,
    images: pd.DataFrame,
    gallery: list[GalleryItem],
    validation: dict,
    errors: pd.DataFrame,
    token_examples: dict[str, list[GalleryItem]] | None = None,
    token_crops: dict[str, list[np.ndarray]] | None = None,
) -> Path:
    """Write ``run_dir/report.html`` atomically (a reader never sees half a report); return it.

    ``token_examples`` / ``token_crops`` (keyed by token, as the token stage returns them) feed
    the "Text the model uses" section: before/after examples of flagged tokens and small crops.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    html = render_report(summary, images, gallery, validation, errors, token_examples, token_crops)
    out = run_dir / REPORT_NAME
    tmp = out.with_name(f".{REPORT_NAME}.{os.getpid()}.tmp")
    tmp.write_text(html, encoding="utf-8")
    os.replace(tmp, out)
    return out
