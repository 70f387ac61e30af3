"""Data quality: counts, per-image errors (errors.csv) and Great Expectations results."""

from __future__ import annotations

from typing import Any

import pandas as pd

from auditors.audit.summary import Summary, Timing
from auditors.report.formatting import DASH, as_dict, fmt_float, fmt_int, fmt_text, num

__all__ = ["MAX_ERROR_ROWS", "build_errors", "build_counts", "cam_status_counts", "build_validation"]

MAX_ERROR_ROWS = 200


def build_errors(errors: pd.DataFrame | None, cap: int = MAX_ERROR_ROWS) -> dict[str, Any]:
    """First ``cap`` error rows, counts per stage and how many were left out."""
    if errors is None or len(errors) == 0:
        return {"rows": [], "total": 0, "more": 0, "by_stage": []}
    df = errors.reset_index(drop=True)
    cols = ["path", "stage", "reason"]
    rows = [{c: fmt_text(df.at[i, c]) if c in df.columns else DASH for c in cols} for i in range(min(cap, len(df)))]
    by_stage: list[tuple[str, int]] = []
    if "stage" in df.columns:
        counts = df["stage"].fillna(DASH).astype(str).value_counts()
        by_stage = [(str(k), int(v)) for k, v in counts.items()]
    return {"rows": rows, "total": len(df), "more": max(0, len(df) - cap), "by_stage": by_stage}


def cam_status_counts(images: pd.DataFrame | None) -> list[tuple[str, int]]:
    if images is None or len(images) == 0 or "cam_status" not in images.columns:
        return []
    counts = images["cam_status"].fillna(DASH).astype(str).value_counts()
    return [(str(k), int(v)) for k, v in counts.items()]


def build_counts(summary: Summary, images: pd.DataFrame | None, n_errors: int) -> list[dict[str, str]]:
    """The data-quality tiles: what was audited, what failed, what was degenerate."""
    n_images = summary.n_images
    timing = summary.timing if summary.timing is not None else Timing()
    tiles = [
        {"label": "Images audited", "value": fmt_int(n_images), "tone": ""},
        {"label": "Failed to audit", "value": fmt_int(summary.get("n_failed", n_errors)),
         "tone": "bad" if (num(summary.get("n_failed", n_errors)) or 0) > 0 else ""},
        {"label": "Degenerate heatmaps", "value": fmt_int(summary.n_degenerate),
         "tone": "warn" if (num(summary.n_degenerate) or 0) > 0 else ""},
        {"label": "Classes", "value": fmt_int(len(summary.classes)), "tone": ""},
        {"label": "Throughput", "value": f"{fmt_float(timing.images_per_s, 1)} img/s", "tone": ""},
        {"label": "Total time", "value": f"{fmt_float(timing.total_s, 1)} s", "tone": ""},
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
    text = fmt_float(value, 4).rstrip("0").rstrip(".") if num(value) is not None else fmt_text(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _expectation_row(entry: dict) -> dict[str, Any]:
    cfg = as_dict(entry.get("expectation_config"))
    kwargs = as_dict(cfg.get("kwargs"))
    result = as_dict(entry.get("result"))
    exc = as_dict(entry.get("exception_info"))
    column = kwargs.get("column") or ", ".join(map(str, kwargs.get("column_list") or [])) or DASH
    success = entry.get("success")
    return {
        "type": str(cfg.get("type") or cfg.get("expectation_type") or DASH),
        "column": str(column),
        "args": _compact_kwargs(kwargs),
        "success": success,
        "unexpected_count": fmt_int(result.get("unexpected_count")),
        "unexpected_percent": fmt_float(result.get("unexpected_percent"), 2) + (
            "%" if num(result.get("unexpected_percent")) is not None else ""
        ),
        "observed": _observed(result),
        "error": str(exc.get("exception_message") or "") if exc.get("raised_exception") else "",
    }


def build_validation(validation: dict | None) -> dict[str, Any]:
    """One compact table per Great Expectations suite."""
    val = as_dict(validation)
    suites = []
    for name, res in as_dict(val.get("suites")).items():
        res = as_dict(res)
        stats = as_dict(res.get("statistics"))
        rows = [_expectation_row(as_dict(e)) for e in res.get("results") or []]
        n_ok = stats.get("successful_expectations", sum(1 for r in rows if r["success"] is True))
        suites.append({
            "name": str(name),
            "success": res.get("success"),
            "evaluated": fmt_int(stats.get("evaluated_expectations", len(rows))),
            "successful": fmt_int(n_ok),
            "rows": rows,
        })
    reused = as_dict(val.get("reused"))
    return {"success": val.get("success"), "suites": suites, "reused_from": reused.get("validated_at")}
