"""Prefect artifacts of a finished audit: what a scheduled run shows in the Prefect UI.

A table of per-class numbers, a markdown verdict and a link to the report. Keys are stable per
audit name, so the UI keeps a history of each audit's artifacts across nightly runs.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact

__all__ = ["publish_artifacts", "artifact_key", "class_table"]

_COLUMNS = ("n", "text_mass", "text_lift", "text_effect", "border_lift", "flagged")


def artifact_key(name: str, kind: str) -> str:
    """Prefect keys allow lower-case letters, digits and dashes only."""
    slug = "".join(ch if ch.isalnum() else "-" for ch in name.lower()).strip("-") or "audit"
    return f"camaudit-{slug}-{kind}"[:100]


def _cell(v: Any) -> Any:
    if isinstance(v, float):
        return None if not math.isfinite(v) else round(v, 4)
    return v


def class_table(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per class: the numbers the gate looks at, with the lift interval."""
    rows = []
    for name, s in summary["classes"].items():
        row = {"class": name, **{c: _cell(s.get(c)) for c in _COLUMNS}}
        ci = s.get("text_lift_ci")
        row["text_lift_ci"] = None if not ci else f"[{_cell(ci[0])}, {_cell(ci[1])}]"
        rows.append(row)
    return rows


def _verdict(summary: dict[str, Any], report: Path) -> str:
    passed = summary["gate"]["passed"]
    lines = [f"# camaudit {summary['name']}: gate {'PASSED' if passed else 'FAILED'}", "",
             f"run `{summary['run_id']}`: {summary['n_images']} images audited, {summary['n_failed']} failed.", ""]
    flagged = summary.get("flagged_classes") or []
    tokens = summary.get("flagged_tokens") or []
    lines.append(f"Flagged classes: {', '.join(flagged) if flagged else 'none'}.")
    if tokens:
        lines.append(f"Flagged tokens: {', '.join(map(str, tokens))}.")
    inc = summary.get("incremental") or {}
    if inc:
        lines.append(f"\nPer-image results reused: {inc.get('reused', 0)}, computed: {inc.get('computed', 0)}.")
    lines.append(f"\nReport: `{report}`")
    return "\n".join(lines)


def publish_artifacts(summary: dict[str, Any], report: Path) -> None:
    """Table, verdict and link artifacts. The files on disk are the contract; artifacts are a
    view of them, so a Prefect API hiccup is logged and never fails the audit."""
    name = summary["name"]
    try:
        create_table_artifact(class_table(summary), key=artifact_key(name, "classes"),
                              description=f"camaudit {name}: per-class numbers of run {summary['run_id']}")
        create_markdown_artifact(_verdict(summary, report), key=artifact_key(name, "verdict"),
                                 description=f"camaudit {name}: gate verdict")
        create_link_artifact(Path(report).resolve().as_uri(), link_text=f"{name} report ({summary['run_id']})",
                             key=artifact_key(name, "report"), description=f"camaudit {name}: report.html")
    except Exception as exc:  # noqa: BLE001
        logging.getLogger("camaudit").warning("could not publish Prefect artifacts: %s", exc)
