"""The end of a run: validate the tables, aggregate, gate, build the summary, write the files.

Library functions, callable without Prefect: :func:`merge_run_tables` and :func:`run_tokens`
prepare the tables, :func:`summarise` turns them into the typed :class:`Summary` (tests build
summaries with it from small real tables), :func:`finalize_run` does the whole step for a run
folder.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from auditors.analysis.aggregate import aggregate
from auditors.analysis.failures import failure_summary
from auditors.analysis.gate import decide, gate_status, inconclusive_reasons
from auditors.analysis.pointing import pointing_stats
from auditors.analysis.validation import images_expectations, manifest_expectations, validate_tables
from auditors.analysis.validation_reuse import reuse_or_validate, validation_key
from auditors.analysis.depth import variant_summary
from auditors.audit.exports import merge_exports
from auditors.audit.plan import Plan
from auditors.audit.run_folder import RunFolder, cache_dir_for, write_json
from auditors.audit.summary import CamInfo, Gate, Summary, build_summary
from auditors.config.schema import AuditConfig
from auditors.history import compare_with_history
from auditors.regions.build import region_names, region_sources
from auditors.audit.tables import empty_rows, wants_instances
from auditors.audit.failure_reuse import failures_for
from auditors.audit.result_cache import ResultSpec
from auditors.measure.failures import FailureItem, empty_failures
from auditors.measure.instances import INSTANCE_COLUMNS
from auditors.tokens.pair_store import open_pair_store
from auditors.tokens.stage import TokenResult, analyse_tokens

__all__ = ["Finalized", "merge_run_tables", "run_tokens", "validate_run", "summarise", "finalize_run"]


@dataclass
class Finalized:
    """The run's summary and the tables the report shows next to it."""

    summary: Summary
    images: pd.DataFrame
    errors: pd.DataFrame
    validation: dict[str, Any]
    failures: pd.DataFrame | None = None


def merge_run_tables(cfg: AuditConfig, folder: RunFolder, errors: list[dict]) -> int:
    """Merge streamed part files into images.parquet (and text_instances.parquet); write errors.csv."""
    merge_exports(cfg, folder)  # regions.parquet, targets.parquet (top-k), cams.npz (opt-in)
    n_rows = folder.merge_parts(empty_rows(cfg))
    if wants_instances(cfg):
        empty = pd.DataFrame({c: pd.Series(dtype=t) for c, t in INSTANCE_COLUMNS.items()})
        folder.merge_parts(empty, kind="instances", dest=folder.instances)
    if cfg.output.failures_per_class:
        folder.merge_parts(empty_failures(region_names(cfg)), kind="failures", dest=folder.failures)
    folder.write_errors(errors)
    return n_rows


def run_failures(cfg: AuditConfig, plan: Plan, folder: RunFolder, cache_path: Path | None,
                 errors: list[dict], spec: ResultSpec | None = None, stats: dict[str, int] | None = None) -> list[FailureItem]:
    """Failure analysis on the merged images.parquet (so reused rows count too): writes
    failures.parquet, appends its errors to errors.csv, returns the report's pictures.

    The merged failures.parquet holds the rows the chunk pass computed (this run's images);
    the other mistakes come from the store (``spec``) or are computed here. ``stats``: the run's
    counters, given the failure rows reused and computed here.
    """
    if not cfg.output.failures_per_class or not folder.images.is_file():
        return []
    images = pd.read_parquet(folder.images)
    fresh = pd.read_parquet(folder.failures) if folder.failures.is_file() else None
    tried = {e["path"] for e in errors if e.get("stage") == "failures"}
    rows, items, f_errors, counts = failures_for(cfg, plan.index.entries, images, plan.classes, plan.target_layer,
                                                 cache_path, spec, fresh=fresh, skip=tried)
    if stats is not None:
        for key, value in counts.items():
            stats[key] = stats.get(key, 0) + value
    if rows is not None:
        folder.write_table(rows, folder.failures)
    if f_errors:
        errors.extend(f_errors)
        folder.write_errors(errors)
    return items


def run_tokens(cfg: AuditConfig, plan: Plan, folder: RunFolder, group_by: str, cache_dir: Path | None = None) -> TokenResult | None:
    """The token stage on a run folder; rewrites text_instances.parquet with each instance's token.

    ``cache_dir``: where crop similarities are remembered across runs (``run.cache`` false: not read).
    """
    if not wants_instances(cfg):
        return None
    instances = pd.read_parquet(folder.instances)
    images = pd.read_parquet(folder.images, columns=["path", "label", "pred", "cam_status"])
    pairs = open_pair_store(cache_dir / "token_pairs.sqlite") if cache_dir is not None and cfg.run.cache else None
    result = analyse_tokens(cfg, instances, images, group_by, plan.classes, plan.target_layer, pairs)
    folder.write_table(instances, folder.instances)
    return result


def validate_run(
    plan: Plan, images: pd.DataFrame, regions: list[str], cf_regions: list[str] | None = None,
    placebo_max_overlap: float = 0.0, reuse_dir: Path | None = None,
) -> dict[str, Any]:
    """Great Expectations on what was asked (the manifest) and what was produced (images).

    ``reuse_dir``: where results of earlier validations are kept; identical tables under the
    same expectations reuse the stored result (see :mod:`auditors.analysis.validation_reuse`).
    """
    entries = plan.index.entries
    manifest = pd.DataFrame({"path": [e.path for e in entries], "label": [e.label for e in entries]})
    inputs = {"classes": list(plan.classes), "labelled": plan.index.labelled, "regions": list(regions),
              "cf_regions": list(cf_regions or []), "placebo_max_overlap": placebo_max_overlap}
    key = validation_key({"manifest": manifest, "images": images}, inputs)
    return reuse_or_validate(reuse_dir, key, lambda: validate_tables({
        "manifest": (manifest, manifest_expectations(plan.classes, plan.index.labelled)),
        "images": (images, images_expectations(plan.classes, regions, cf_regions, placebo_max_overlap)),
    }))


def summarise(
    cfg: AuditConfig,
    images: pd.DataFrame,
    errors: pd.DataFrame,
    classes: list[str],
    group_by: str,
    validation: dict[str, Any],
    *,
    run_id: str,
    target_layer: str,
    device: str,
    sanity: dict[str, Any] | None = None,
    tokens: list[dict[str, Any]] | None = None,
    run_stats: dict[str, int] | None = None,
    started: float | None = None,
    failures: pd.DataFrame | None = None,
    variants: dict[str, Any] | None = None,
    compare_history: bool = False,
) -> Summary:
    """Aggregate ``images`` per class, decide the gate and build the summary (writes nothing).

    ``started``: the run's ``time.perf_counter()`` at its start, for the timing section.
    ``compare_history``: compare with the earlier runs of this audit under ``output.dir`` (reads
    their summaries; the ``history`` section and the ``gate.baseline`` regression rule).
    """
    regions = region_names(cfg)
    cf_regions = cfg.counterfactual_regions()
    per_class, overall = aggregate(images, cfg, classes, regions, group_by)
    history = compare_with_history(cfg, run_id, per_class, images, group_by) if compare_history else None
    gate = decide(per_class, cfg.gate, regions, cf_regions, tokens or [], validation,
                  baseline=history["baseline"] if history else None, level=cfg.stats.ci)
    elapsed = time.perf_counter() - started if started is not None else 0.0
    return build_summary(
        cfg, run_id=run_id, target_layer=target_layer, device=device, images=images, errors=errors,
        group_by=group_by, regions=regions, region_sources=region_sources(cfg), per_class=per_class,
        overall=overall, gate=gate, validation=validation, sanity=sanity, tokens=tokens,
        run_stats=run_stats, elapsed=elapsed, variants=variants, history=history,
        pointing=pointing_stats(images, cfg, classes, group_by),
        failures=failure_summary(images, failures, regions, cfg.stats),
    )


def finalize_run(
    cfg: AuditConfig, plan: Plan, folder: RunFolder, run_id: str, run_stats: dict[str, int],
    sanity: dict[str, Any] | None, tokens: TokenResult | None, group_by: str, started: float,
) -> Finalized:
    """Validate and summarise the run in ``folder``; write validation.json and summary.json.

    The report is written from the result by :func:`auditors.report.write_report` (the report
    sits above this package).
    """
    images = pd.read_parquet(folder.images)
    errors = pd.read_csv(folder.errors, dtype=str, keep_default_na=False)
    failures = pd.read_parquet(folder.failures) if folder.failures.exists() else None
    validation = validate_run(plan, images, region_names(cfg), cfg.counterfactual_regions(),
                              cfg.counterfactual.placebo_max_overlap, reuse_dir=cache_dir_for(cfg) / "validations")
    write_json(folder.validation, validation)
    summary = summarise(
        cfg, images, errors, plan.classes, group_by, validation, run_id=run_id, target_layer=plan.target_layer,
        device=plan.device, sanity=sanity, tokens=tokens.summary if tokens is not None else None,
        run_stats=run_stats, started=started, failures=failures,
        variants=variant_summary(cfg, images, folder.dir, plan.classes, region_names(cfg), group_by),
        compare_history=True,
    )
    judge_run(summary, images, plan, cfg)
    write_json(folder.summary, summary.to_dict())
    return Finalized(summary, images, errors, validation, failures)


# --- hardening (issue 12): "the audit could not judge" ------------------------------------------
def judge_run(summary: Summary, images: pd.DataFrame, plan: Plan, cfg: AuditConfig) -> Summary:
    """Set gate.status (passed | failed | inconclusive), its reasons, the plan's warnings and the map size.

    Additive keys only; ``gate.passed`` becomes False when the gate could not judge.
    """
    gate = summary.gate.to_dict() if summary.gate is not None else {"passed": None, "failures": []}
    per_class = {name: {"n": stats.n} for name, stats in summary.classes.items()}
    reasons = inconclusive_reasons(images, len(plan.index.entries), per_class, cfg.gate)
    decided = {**gate_status({**gate, "passed": bool(gate.get("passed"))}, reasons), "warnings": list(plan.warnings)}
    summary.gate = Gate.model_validate(decided)
    if summary.cam is not None:
        summary.cam = CamInfo.model_validate({**summary.cam.to_dict(), "map_size": list(plan.map_size) if plan.map_size else None})
    return summary
# --- end hardening ------------------------------------------------------------------------------
