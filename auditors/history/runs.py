"""Past runs of one audit, read back from their ``summary.json`` files.

A run counts once its summary.json exists (it is written atomically at the end of finalize),
so an interrupted run never becomes anybody's baseline. Run ids sort by time (UTC timestamp
first), so "previous" is the greatest finished run id below the current one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from auditors.config.schema import AuditConfig
from auditors.errors import ConfigError

__all__ = ["RunRecord", "load_runs", "reference_run", "check_baseline", "audit_dir"]


@dataclass
class RunRecord:
    """What the history needs of one finished run."""

    run_id: str
    dir: Path
    summary: dict[str, Any]
    problems: list[str] = field(default_factory=list)

    @property
    def created_at(self) -> str | None:
        return self.summary.get("created_at")

    @property
    def passed(self) -> bool | None:
        gate = self.summary.get("gate") or {}
        return gate.get("passed")

    @property
    def classes(self) -> dict[str, dict[str, Any]]:
        c = self.summary.get("classes")
        return c if isinstance(c, dict) else {}


def audit_dir(cfg: AuditConfig) -> Path:
    """``<output.dir>/<name>``: every run of this audit lives below it."""
    return Path(cfg.output.dir) / cfg.name


def load_runs(folder: Path, name: str | None = None) -> tuple[list[RunRecord], list[str]]:
    """Finished runs under ``folder`` sorted by run id, and a problem line per unreadable summary.

    A summary of another audit name (a folder copied in by hand) is skipped and reported.
    """
    runs: list[RunRecord] = []
    problems: list[str] = []
    if not Path(folder).is_dir():
        return runs, problems
    for path in sorted(Path(folder).glob("*/summary.json")):
        try:
            summary = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            problems.append(f"{path}: unreadable summary ({type(exc).__name__}: {exc})")
            continue
        if not isinstance(summary, dict) or not isinstance(summary.get("classes"), dict):
            problems.append(f"{path}: not a camaudit summary (no 'classes' mapping)")
            continue
        if name is not None and summary.get("name") != name:
            problems.append(f"{path}: belongs to audit {summary.get('name')!r}, not {name!r}; skipped")
            continue
        runs.append(RunRecord(run_id=path.parent.name, dir=path.parent, summary=summary))
    return runs, problems


def reference_run(runs: list[RunRecord], which: str, current_run_id: str) -> RunRecord | None:
    """``previous``: the latest finished run before ``current_run_id``; else the run with that id."""
    if which == "previous":
        earlier = [r for r in runs if r.run_id < current_run_id]
        return earlier[-1] if earlier else None
    return next((r for r in runs if r.run_id == which), None)


def check_baseline(cfg: AuditConfig) -> None:
    """Pre-flight: a pinned ``gate.baseline`` run id must exist and be finished (exit 2 otherwise).

    ``previous`` never fails: the first run of an audit simply has nothing to regress against.
    """
    which = cfg.gate.baseline
    if which is None or which == "previous":
        return
    folder = audit_dir(cfg) / which
    if not (folder / "summary.json").is_file():
        raise ConfigError(
            f"gate.baseline: run {which!r} not found (expected {folder / 'summary.json'}); "
            "use 'previous' or the id of a finished run of this audit"
        )
