"""``<output.dir>/<name>/index.html``: every finished run of one audit, newest first, and a trend
chart per class of text lift and text effect. Regenerated after each run.

Static and offline like the report: inline CSS and SVG only, no script at all, and a
Content-Security-Policy that forbids loading anything. Links to each run's report are relative,
so the folder can be copied or served as it is.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from auditors.analysis.stats import finite
from auditors.config.schema import AuditConfig
from auditors.history.runs import RunRecord, audit_dir, load_runs
from auditors.history.trend import TrendPoint, trend_svg

__all__ = ["INDEX_NAME", "CSP", "write_index", "refresh_index", "render_index"]

INDEX_NAME = "index.html"
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'none'; base-uri 'none'; form-action 'none'"
TEMPLATES = Path(__file__).parent / "templates"


def _fmt_date(value: Any) -> str:
    try:
        return datetime.fromisoformat(str(value)).strftime("%Y-%m-%d %H:%M UTC")
    except ValueError:
        return str(value or "\u2014")


def _ci(v: Any) -> tuple[float, float] | None:
    if isinstance(v, (list, tuple)) and len(v) == 2 and all(finite(c) is not None for c in v):
        return float(v[0]), float(v[1])
    return None


def _run_row(r: RunRecord) -> dict[str, Any]:
    s = r.summary
    flagged = [str(c) for c in s.get("flagged_classes") or []]
    regress = sorted({str(f.get("class")) for f in (s.get("gate") or {}).get("failures") or []
                      if isinstance(f, dict) and str(f.get("rule", "")).startswith("regression_")})
    return {
        "run_id": r.run_id,
        "date": _fmt_date(r.created_at),
        "status": {True: "passed", False: "failed"}.get(r.passed, "unknown"),
        "flagged": flagged,
        "regressed": regress,
        "tokens": [str(t) for t in s.get("flagged_tokens") or []],
        "n_images": s.get("n_images"),
        "n_failed": s.get("n_failed"),
        "report": f"{r.run_id}/report.html" if (r.dir / "report.html").is_file() else None,
    }


def _trends(runs: list[RunRecord]) -> tuple[list[dict[str, Any]], bool]:
    classes: list[str] = []
    for r in reversed(runs):  # newest run's class order first, then classes only older runs had
        classes += [c for c in r.classes if c not in classes]
    latest_gate = (runs[-1].summary.get("gate") or {}) if runs else {}
    lift_limit, effect_limit = finite(latest_gate.get("max_text_lift")), finite(latest_gate.get("max_text_effect"))
    has_effect = any(finite((r.classes.get(c) or {}).get("text_effect")) is not None for r in runs for c in classes)
    rows = []
    for c in classes:
        def points(key: str) -> list[TrendPoint]:
            return [TrendPoint(r.run_id, finite((r.classes.get(c) or {}).get(key)), _ci((r.classes.get(c) or {}).get(f"{key}_ci")))
                    for r in runs]
        lift, effect = points("text_lift"), points("text_effect")
        last = next((p for p in reversed(lift) if p.value is not None), None)
        rows.append({
            "name": c,
            "lift_svg": trend_svg(lift, f"text lift of {c} over {len(runs)} runs", lift_limit),
            "effect_svg": trend_svg(effect, f"text effect of {c} over {len(runs)} runs", effect_limit) if has_effect else None,
            "latest_lift": f"{last.value:.2f}" if last else "\u2014",
        })
    return rows, has_effect


def render_index(name: str, runs: list[RunRecord], problems: list[str]) -> str:
    env = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=True, undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True)
    trends, has_effect = _trends(runs)
    return env.get_template("index.html.j2").render(
        name=name, csp=CSP, runs=[_run_row(r) for r in reversed(runs)], trends=trends, has_effect=has_effect,
        problems=problems, n_runs=len(runs),
    )


def write_index(audit_folder: Path, name: str) -> Path:
    """(Re)write ``audit_folder/index.html`` from every finished run below it; return its path."""
    audit_folder = Path(audit_folder)
    runs, problems = load_runs(audit_folder, name)
    html = render_index(name, runs, problems)
    out = audit_folder / INDEX_NAME
    tmp = audit_folder / f".{INDEX_NAME}.{os.getpid()}.tmp"
    tmp.write_text(html, encoding="utf-8")
    os.replace(tmp, out)
    return out


def refresh_index(cfg: AuditConfig) -> str | None:
    """Rewrite the audit's index.html after a run; None (and a warning) when it cannot be written.

    The run's own files are the contract, the index a convenience: its failure never fails the audit.
    """
    try:
        return str(write_index(audit_dir(cfg), cfg.name))
    except Exception as exc:
        print(f"camaudit: warning: could not write the history index: {type(exc).__name__}: {exc}")
        return None
