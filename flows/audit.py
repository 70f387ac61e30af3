"""The audit as a Prefect flow: small tasks, the chunk as the unit of scheduling and retry.

    prepare  ->  audit-chunk x N (per-image results reused by content key, retried; local threads
                 or Dask workers)
             ->  merge -> gallery -> tokens -> finalize (aggregate, Great Expectations, gate,
                 summary, report) -> Prefect artifacts

Chunks stream: a bounded number of chunk results are alive at once, and each is written to a
part file as soon as it finishes. Nothing is read back through pickle: per-image results live
in :mod:`auditors.audit.result_cache` (JSON in SQLite, verified on read).
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner

from auditors.config import AuditConfig, config_from_dict
from auditors.history import refresh_index
from auditors.tracking import record_run
from auditors.data.discovery import Entry, chunked
from auditors.measure.gallery import GalleryItem
from auditors.audit.plan import Plan, make_plan
from auditors.audit.chunk import ChunkResult
from auditors.audit.exports import write_chunk_exports
from auditors.measure.failures import FailureItem
from auditors.audit.finalize import finalize_run, merge_run_tables, run_failures, run_tokens
from auditors.audit.incremental import audit_images, gallery_for, pointing_misses_for
from auditors.audit.result_cache import ResultSpec, readable, result_setting, weights_fingerprint
from auditors.audit.run_folder import RunFolder, cache_dir_for, new_run_id
from auditors.audit.summary import Summary
from auditors.models.loading import get_model, select_device
from flows.artifacts import publish_artifacts
from flows.executors import chunk_runner, in_flight
from auditors.audit.sanity_stage import sanity_check
from auditors.audit.stale import ensure_dir, hold_run_lock, sweep_stale_parts
from auditors.tokens.stage import TokenResult
from auditors.audit.progress import Progress
from auditors.report import write_report

__all__ = ["audit_flow", "run_audit", "AuditResult", "cache_dir_for"]


@dataclass
class AuditResult:
    run_dir: Path
    summary: dict[str, Any]

    @property
    def passed(self) -> bool:
        return bool(self.summary["gate"]["passed"])

    @property
    def status(self) -> str:
        """passed | failed | inconclusive (the gate could not judge: see summary gate.inconclusive_reasons)."""
        return str(self.summary["gate"].get("status") or ("passed" if self.passed else "failed"))

    @property
    def report(self) -> Path:
        return self.run_dir / "report.html"


@task(name="prepare")
def prepare(cfg: AuditConfig) -> Plan:
    """List the dataset, load the model once, check classes, target and target layer."""
    return make_plan(cfg)


def result_spec(cfg: AuditConfig, plan: Plan, cache_dir: Path) -> ResultSpec:
    """The per-image result key's run-wide part (weights hashed from the model prepare loaded)."""
    device = select_device(cfg.cam.device)
    weights = weights_fingerprint(get_model(cfg.model, device))
    setting = result_setting(cfg, plan.classes, plan.target_layer, device, weights)
    return ResultSpec(store=str(cache_dir / "results.sqlite"), setting=setting, weights=weights, read=readable(cfg))


@task(name="audit-chunk", persist_result=False, cache_policy=NO_CACHE, retry_delay_seconds=2)
def audit_chunk_task(
    entries: list[Entry], cfg: AuditConfig, classes: list[str], target_layer: str, cache_path: str | None, spec: ResultSpec
) -> ChunkResult:
    """One chunk. Arguments are paths, settings and keys: a Dask worker loads the model itself, once."""
    return audit_images(entries, cfg, classes, target_layer, Path(cache_path) if cache_path else None, spec)


@task(name="pointing-misses")
def misses_task(cfg: AuditConfig, plan: Plan, folder: RunFolder, cache_path: str) -> list[GalleryItem]:
    """The biggest pointing-game misses (regions.expected), recomputed with their maps."""
    if not cfg.regions.expected.gallery_size or not folder.images.is_file():
        return []
    images = pd.read_parquet(folder.images)
    return pointing_misses_for(cfg, plan.index.entries, images, plan.classes, plan.target_layer, Path(cache_path))


@task(name="gallery")
def gallery_task(cfg: AuditConfig, plan: Plan, folder: RunFolder, cache_path: str) -> list[GalleryItem]:
    """Recompute the few images the report shows (pixels are not cached)."""
    if not cfg.output.gallery_size or not folder.images.is_file():
        return []
    images = pd.read_parquet(folder.images)
    return gallery_for(cfg, plan.index.entries, images, plan.classes, plan.target_layer, Path(cache_path))


@task(name="failures")
def failures_task(cfg: AuditConfig, plan: Plan, folder: RunFolder, cache_path: str, errors: list[dict],
                  spec: ResultSpec, stats: dict[str, int]) -> list[FailureItem]:
    """Failure rows of every mistake in the merged table: this run's from the chunk pass, earlier
    ones from the store, the rest (a run killed mid-batch) computed; the report's few pictures redrawn."""
    return run_failures(cfg, plan, folder, Path(cache_path), errors, spec, stats)


@task(name="sanity-check", retries=1)
def sanity_task(entries: list[Entry], cfg: AuditConfig, target_layer: str) -> dict[str, Any]:
    """Adebayo-style randomisation check on a small sample (once per audit)."""
    return sanity_check(entries, cfg, target_layer)


@task(name="merge-tables")
def merge_tables(cfg: AuditConfig, folder: RunFolder, errors: list[dict]) -> int:
    """Merge streamed part files into images.parquet (and text_instances.parquet); write errors.csv."""
    return merge_run_tables(cfg, folder, errors)


@task(name="tokens")
def tokens_task(cfg: AuditConfig, plan: Plan, folder: RunFolder, by: str, cache_dir: Path) -> TokenResult | None:
    """Group text instances into recurring tokens, test the riskiest, flag; rewrite text_instances.parquet."""
    return run_tokens(cfg, plan, folder, by, cache_dir)


@task(name="finalize")
def finalize(
    cfg: AuditConfig, plan: Plan, folder: RunFolder, run_id: str, gallery: list[GalleryItem],
    stats: dict[str, int], sanity: dict[str, Any] | None, tokens: TokenResult | None, by: str, started: float,
    misses: list[GalleryItem] | None = None,
    failure_items: list[FailureItem] | None = None,
) -> Summary:
    """Validate, aggregate, gate; write summary.json, validation.json and report.html."""
    done = finalize_run(cfg, plan, folder, run_id, stats, sanity, tokens, by, started)
    write_report(
        folder.dir, done.summary, done.images, gallery, done.validation, done.errors,
        token_examples=tokens.examples if tokens is not None else None,
        token_crops=tokens.crops if tokens is not None else None,
        pointing_misses=misses,
        failures=failure_items,
    )
    return done.summary


@task(name="history-index")
def history_index_task(cfg: AuditConfig) -> str | None:
    """Regenerate <output.dir>/<name>/index.html; a failure here never fails the audit."""
    return refresh_index(cfg)


@task(name="track")
def track_task(cfg: AuditConfig, run_dir: Path, summary: dict[str, Any], gallery: list[GalleryItem]) -> dict[str, Any]:
    """Log the finished run to the configured experiment trackers (MLflow, W&B); ids go to tracking.json."""
    return record_run(cfg, run_dir, summary, gallery)


def _remove_legacy_cache(cache_dir: Path) -> None:
    """Remove the pickled chunk cache of older versions (once: one log line when it goes)."""
    from prefect import get_run_logger

    from auditors.audit.legacy_cache import remove_legacy_results

    done = remove_legacy_results(cache_dir)
    if done is not None:
        get_run_logger().warning(done.message())


@flow(name="camaudit-audit", task_runner=ThreadPoolTaskRunner(max_workers=1))
def audit_flow(config: dict[str, Any], run_id: str | None = None, progress: bool = False) -> dict[str, Any]:
    """Audit a dataset and a model as described by ``config`` (an AuditConfig dict)."""
    started = time.perf_counter()
    cfg = config_from_dict(config)
    run_id = run_id or new_run_id()
    plan = prepare(cfg)
    cfg = plan.config
    cache_dir = cache_dir_for(cfg)
    ensure_dir(cache_dir, "output.cache_dir")  # hardening: a file in the way is exit 2, not a traceback
    _remove_legacy_cache(cache_dir)  # scale-reuse: the old prefect-results chunk cache
    sweep_stale_parts(Path(cfg.output.dir) / cfg.name)  # hardening: parts/ of killed runs
    run_lock = hold_run_lock(Path(cfg.output.dir) / cfg.name / run_id)
    folder = RunFolder(cfg.output.dir, cfg.name, run_id)
    cache_path = str(cache_dir / "text_regions.sqlite")  # text and GrabCut regions; opened only when needed
    spec = result_spec(cfg, plan, cache_dir)
    chunk_task = audit_chunk_task.with_options(retries=cfg.run.retries)
    errors: list[dict] = list(plan.index.errors)
    stats: dict[str, int] = {}
    meter = Progress(len(plan.index.entries), enabled=progress)
    window: deque = deque()

    def collect(index: int, entries: list[Entry], future) -> None:
        try:
            result: ChunkResult = future.result()
        except Exception as exc:  # retries exhausted: record the chunk's images, keep the rest of the run
            reason = f"chunk {index} failed after {cfg.run.retries} retries: {type(exc).__name__}: {exc}"
            errors.extend({"path": e.path, "stage": "chunk", "reason": reason} for e in entries)
            meter.advance(len(entries))
            return
        folder.write_part(index, result.rows)
        write_chunk_exports(folder.parts, index, result, folder.write_part)
        if result.instances is not None:
            folder.write_part(index, result.instances, kind="instances")
        if result.failures is not None:  # failure rows of the images this chunk computed
            folder.write_part(index, result.failures, kind="failures")
        errors.extend(result.errors)
        for k, v in result.stats.items():
            stats[k] = stats.get(k, 0) + v
        meter.advance(len(result.rows) + result.stats["n_failed"])

    with chunk_runner(cfg) as runner:
        limit = in_flight(cfg, runner)
        for i, entries in enumerate(chunked(plan.index.entries, cfg.run.chunk_size)):
            params = {"entries": entries, "cfg": cfg, "classes": plan.classes, "target_layer": plan.target_layer,
                      "cache_path": cache_path, "spec": spec}
            window.append((i, entries, runner.submit(chunk_task, parameters=params)))
            if len(window) > limit:
                collect(*window.popleft())
        while window:
            collect(*window.popleft())
    meter.close()
    sanity = sanity_task(plan.index.entries, cfg, plan.target_layer) if cfg.sanity.enabled else None
    merge_tables(cfg, folder, errors)
    gallery = gallery_task(cfg, plan, folder, cache_path)
    misses = misses_task(cfg, plan, folder, cache_path) if cfg.regions.expected.enabled else []
    failure_items = failures_task(cfg, plan, folder, cache_path, errors, spec, stats)
    by = "label" if plan.index.labelled else "pred"
    tokens = tokens_task(cfg, plan, folder, by, cache_dir)
    if tokens is not None:
        stats.update(tokens.stats)  # crop similarities reused / computed
    summary = finalize(cfg, plan, folder, run_id, gallery, stats, sanity, tokens, by, started, misses, failure_items)
    publish_artifacts(summary.to_dict(), folder.report)
    history_index_task(cfg)
    out = summary.to_dict()
    if cfg.tracking.mlflow or cfg.tracking.wandb:
        out["tracking"] = track_task(cfg, folder.dir, out, gallery)
    run_lock.release()
    return out


def run_audit(cfg: AuditConfig, run_id: str | None = None, progress: bool = False) -> AuditResult:
    """Run :func:`audit_flow` and return where its outputs are."""
    run_id = run_id or new_run_id()
    summary = audit_flow(cfg.public_dict(), run_id=run_id, progress=progress)
    return AuditResult(run_dir=Path(cfg.output.dir) / cfg.name / run_id, summary=summary)
