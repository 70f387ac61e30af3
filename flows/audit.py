"""The audit as a Prefect flow: small tasks, the chunk as the unit of caching and retry.

    prepare  ->  audit-chunk x N (cached by chunk content + config + model weights, retried)
             ->  finalize (merge tables, aggregate, Great Expectations, gate, summary, report)

Chunks stream: at most ``run.workers + 1`` chunk results are alive at once, and each is
written to a part file as soon as it finishes.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import platformdirs
from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.context import TaskRunContext
from prefect.task_runners import ThreadPoolTaskRunner

import auditors
from auditors.config import AuditConfig, config_from_dict
from auditors.data.discovery import Entry, chunked
from auditors.measure.gallery import GalleryItem, top_k
from auditors.audit.plan import Plan, make_plan
from auditors.audit.chunk import ChunkResult, audit_chunk
from auditors.audit.exports import write_chunk_exports
from auditors.measure.failures import FailureItem, top_per_class
from auditors.audit.finalize import finalize_run, merge_run_tables, run_tokens
from auditors.audit.run_folder import RunFolder, new_run_id
from auditors.audit.summary import Summary
from auditors.audit.sanity_stage import sanity_check
from auditors.tokens.stage import TokenResult
from auditors.audit.progress import Progress
from auditors.regions.build import region_inputs_fingerprint
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
    def report(self) -> Path:
        return self.run_dir / "report.html"


def cache_dir_for(cfg: AuditConfig) -> Path:
    return Path(cfg.output.cache_dir) if cfg.output.cache_dir else Path(platformdirs.user_cache_dir("camaudit"))


@task(name="prepare")
def prepare(cfg: AuditConfig) -> Plan:
    """List the dataset, load the model once, check classes, target and target layer."""
    return make_plan(cfg)


#: Bump whenever ChunkResult (or anything pickled inside it) changes shape: old cache entries
#: then miss instead of unpickling into objects that lack new fields.
CHUNK_FORMAT = 6


def _chunk_cache_key(_ctx: TaskRunContext, params: dict[str, Any]) -> str:
    """Key = chunk files (path, size, mtime) + everything in the config that changes rows."""
    cfg: AuditConfig = params["cfg"]
    relevant = cfg.model_dump(mode="json", include={"dataset", "model", "cam", "regions", "counterfactual"})
    relevant["dataset"].pop("limit", None)
    h = hashlib.sha256(json.dumps(relevant, sort_keys=True).encode())
    h.update(f"{auditors.__version__}|{CHUNK_FORMAT}|{params['target_layer']}|{params['fingerprint']}|{cfg.output.gallery_size}|{cfg.output.save_cams}|{cfg.output.failures_per_class}".encode())
    h.update(json.dumps(params["classes"]).encode())
    h.update(region_inputs_fingerprint(cfg, [e.path for e in params["entries"]]).encode())
    root = Path(cfg.dataset.root)
    for e in params["entries"]:
        try:
            st = (root / e.path).stat()
            stamp = f"{st.st_size}:{st.st_mtime_ns}"
        except OSError:
            stamp = "missing"
        h.update(f"{e.path}|{e.label}|{stamp}\n".encode())
    return "camaudit-chunk-" + h.hexdigest()


@task(name="audit-chunk", persist_result=True, cache_key_fn=_chunk_cache_key, retry_delay_seconds=2)
def audit_chunk_task(
    entries: list[Entry], cfg: AuditConfig, classes: list[str], target_layer: str, fingerprint: str, cache_path: str | None
) -> ChunkResult:
    """One chunk; ``fingerprint`` (the model weights' hash) is here for the cache key only."""
    return audit_chunk(entries, cfg, classes, target_layer, Path(cache_path) if cache_path else None)


@task(name="sanity-check", retries=1)
def sanity_task(entries: list[Entry], cfg: AuditConfig, target_layer: str) -> dict[str, Any]:
    """Adebayo-style randomisation check on a small sample (once per audit)."""
    return sanity_check(entries, cfg, target_layer)


@task(name="merge-tables")
def merge_tables(cfg: AuditConfig, folder: RunFolder, errors: list[dict]) -> int:
    """Merge streamed part files into images.parquet (and text_instances.parquet); write errors.csv."""
    return merge_run_tables(cfg, folder, errors)


@task(name="tokens")
def tokens_task(cfg: AuditConfig, plan: Plan, folder: RunFolder, by: str) -> TokenResult | None:
    """Group text instances into recurring tokens, test the riskiest, flag; rewrite text_instances.parquet."""
    return run_tokens(cfg, plan, folder, by)


@task(name="finalize")
def finalize(
    cfg: AuditConfig, plan: Plan, folder: RunFolder, run_id: str, gallery: list[GalleryItem],
    stats: dict[str, int], sanity: dict[str, Any] | None, tokens: TokenResult | None, by: str, started: float,
    failure_items: list[FailureItem] | None = None,
) -> Summary:
    """Validate, aggregate, gate; write summary.json, validation.json and report.html."""
    done = finalize_run(cfg, plan, folder, run_id, stats, sanity, tokens, by, started)
    write_report(
        folder.dir, done.summary, done.images, gallery, done.validation, done.errors,
        token_examples=tokens.examples if tokens is not None else None,
        token_crops=tokens.crops if tokens is not None else None,
        failures=failure_items,
    )
    return done.summary


def _publish_artifact(summary: Summary, report: Path) -> None:
    rows = ["| class | n | text lift | border lift | flagged |", "|---|---|---|---|---|"]
    for name, s in summary.classes.items():
        fmt = lambda v: "—" if v is None else f"{v:.2f}"  # noqa: E731
        rows.append(f"| {name} | {s.n} | {fmt(s.get('text_lift'))} | {fmt(s.get('border_lift'))} | {'yes' if s.flagged else ''} |")
    verdict = "PASSED" if summary.passed else "FAILED"
    md = f"# camaudit {summary.name}: gate {verdict}\n\nReport: `{report}`\n\n" + "\n".join(rows)
    try:
        create_markdown_artifact(md, key="camaudit-" + "".join(ch if ch.isalnum() else "-" for ch in summary.name.lower()))
    except Exception:  # artifacts are a convenience; the files on disk are the contract
        pass


@flow(name="camaudit-audit", task_runner=ThreadPoolTaskRunner(max_workers=1))
def audit_flow(config: dict[str, Any], run_id: str | None = None, progress: bool = False) -> dict[str, Any]:
    """Audit a dataset and a model as described by ``config`` (an AuditConfig dict)."""
    started = time.perf_counter()
    cfg = config_from_dict(config)
    run_id = run_id or new_run_id()
    plan = prepare(cfg)
    cfg = plan.config
    folder = RunFolder(cfg.output.dir, cfg.name, run_id)
    cache_dir = cache_dir_for(cfg)
    cache_path = str(cache_dir / "text_regions.sqlite")  # text and GrabCut regions; opened only when needed
    chunk_task = audit_chunk_task.with_options(
        retries=cfg.run.retries,
        refresh_cache=not cfg.run.cache,
        result_storage=cache_dir / "prefect-results",
    )
    errors: list[dict] = list(plan.index.errors)
    gallery: list[GalleryItem] = []
    failure_items: list[FailureItem] = []
    stats: dict[str, int] = {}
    meter = Progress(len(plan.index.entries), enabled=progress)
    window: deque = deque()

    def collect(index: int, entries: list[Entry], future) -> None:
        nonlocal gallery, failure_items
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
        errors.extend(result.errors)
        gallery = top_k(gallery + result.gallery, cfg.output.gallery_size)
        if result.failures is not None and len(result.failures):  # failure analysis: every mistake's numbers,
            folder.write_part(index, result.failures, kind="failures")  # the top-k per class with pictures
            failure_items = top_per_class(failure_items + result.failure_items, cfg.output.failures_per_class)
        for k, v in result.stats.items():
            stats[k] = stats.get(k, 0) + v
        meter.advance(len(result.rows) + result.stats["n_failed"])

    for i, entries in enumerate(chunked(plan.index.entries, cfg.run.chunk_size)):
        window.append((i, entries, chunk_task.submit(entries, cfg, plan.classes, plan.target_layer, plan.model_fingerprint, cache_path)))
        if len(window) > cfg.run.workers:
            collect(*window.popleft())
    while window:
        collect(*window.popleft())
    meter.close()
    sanity = sanity_task(plan.index.entries, cfg, plan.target_layer) if cfg.sanity.enabled else None
    merge_tables(cfg, folder, errors)
    by = "label" if plan.index.labelled else "pred"
    tokens = tokens_task(cfg, plan, folder, by)
    summary = finalize(cfg, plan, folder, run_id, gallery, stats, sanity, tokens, by, started, failure_items)
    _publish_artifact(summary, folder.report)
    return summary.to_dict()


def run_audit(cfg: AuditConfig, run_id: str | None = None, progress: bool = False) -> AuditResult:
    """Run :func:`audit_flow` and return where its outputs are."""
    run_id = run_id or new_run_id()
    runner = ThreadPoolTaskRunner(max_workers=cfg.run.workers)
    summary = audit_flow.with_options(task_runner=runner)(cfg.public_dict(), run_id=run_id, progress=progress)
    return AuditResult(run_dir=Path(cfg.output.dir) / cfg.name / run_id, summary=summary)
