"""Experiment trackers (optional extras): log a finished run to MLflow and/or W&B.

``track_run`` is called once, after report.html and summary.json are on disk. A tracker that
fails (server down, disk full) is reported in the returned dict and on stderr; the audit's
own files and exit status stand.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from auditors.audit.run_folder import write_json
from auditors.config.schema import AuditConfig
from auditors.measure.gallery import GalleryItem
from auditors.tracking.common import RunPayload, Tracker, build_payload

__all__ = ["RunPayload", "Tracker", "build_payload", "trackers_for", "track_run", "record_run"]


def trackers_for(cfg: AuditConfig) -> list[Tracker]:
    out: list[Tracker] = []
    if cfg.tracking.mlflow is not None:
        from auditors.tracking.mlflow_tracker import MlflowTracker

        out.append(MlflowTracker(cfg.tracking.mlflow))
    if cfg.tracking.wandb is not None:
        from auditors.tracking.wandb_tracker import WandbTracker

        out.append(WandbTracker(cfg.tracking.wandb, Path(cfg.output.dir) / cfg.name))
    return out


def track_run(cfg: AuditConfig, run_dir: Path, summary: dict[str, Any], gallery: list[GalleryItem]) -> dict[str, Any]:
    """Log the run to every configured tracker; ``{tracker: {ids...} | {"error": ...}}``."""
    trackers = trackers_for(cfg)
    if not trackers:
        return {}
    payload = build_payload(Path(run_dir), summary, gallery)
    results: dict[str, Any] = {}
    for t in trackers:
        try:
            results[t.name] = t.log(payload)
        except Exception as exc:
            results[t.name] = {"error": f"{type(exc).__name__}: {exc}"}
            print(f"camaudit: warning: {t.name} tracking failed: {type(exc).__name__}: {exc}", file=sys.stderr)
    return results


def record_run(cfg: AuditConfig, run_dir: Path, summary: dict[str, Any], gallery: list[GalleryItem]) -> dict[str, Any]:
    """:func:`track_run`, and its result (tracker ids or errors) written to ``run_dir/tracking.json``."""
    result = track_run(cfg, run_dir, summary, gallery)
    write_json(Path(run_dir) / "tracking.json", result)
    return result
