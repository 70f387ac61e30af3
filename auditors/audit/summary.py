"""The typed run summary: built once by :func:`build_summary`, dumped as summary.json, read by the
report and the Prefect artifact.

The models mirror the summary.json contract in the README. Sections whose keys depend on the
run (per-region statistics of a class, a failure's extra numbers, new sections of a later
release) allow extra keys; :meth:`Record.get` reads declared and extra keys alike, so code
that walks regions by name (``stats.get(f"{r}_lift")``) works on the typed object.

Dumps keep exactly the keys that were set (``exclude_unset``): a validation failure has no
``lower`` and summary.json does not grow one.

Adding a summary field: declare it on the model below (with a default so older summary.json
files still load) and pass its value in :func:`build_summary`.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_serializer, model_validator

import auditors
from auditors.audit.run_folder import json_safe
from auditors.config.schema import AuditConfig, GateConfig, TokensConfig

__all__ = [
    "Record", "Summary", "GroupStats", "ClassStats", "Failure", "Gate", "Validation", "CamInfo", "RegionSource",
    "CounterfactualInfo", "StatsInfo", "Sanity", "TokenEntry", "Timing", "Regression", "MetricChange", "ClassChange",
    "Comparison", "History", "Pointing", "PointingGroup", "build_summary",
]

#: How summary.json says where the intervals come from.
INTERVAL = "percentile bootstrap over images"


class Record(BaseModel):
    """A summary section: typed fields, extra keys kept, dict-style reads by key."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)
    #: Keys in the order they were given, so summary.json keeps the order the stages wrote.
    _order: list[str] = PrivateAttr(default_factory=list)

    @model_validator(mode="wrap")
    @classmethod
    def _remember_order(cls, data: Any, handler: Any) -> Any:
        record = handler(data)
        if isinstance(data, dict):
            record._order = [str(k) for k in data]
        return record

    @model_serializer(mode="wrap")
    def _in_given_order(self, handler: Any) -> dict[str, Any]:
        out = handler(self)
        order = [k for k in self._order if k in out]
        return {**{k: out[k] for k in order}, **{k: v for k, v in out.items() if k not in order}}

    def get(self, key: str, default: Any = None) -> Any:
        """The value of key ``key`` (a field by name or JSON name, or an extra key), or
        ``default`` when the record does not carry it (as summary.json would not)."""
        for name, info in type(self).model_fields.items():
            if key in (name, info.alias):
                return getattr(self, name) if name in self.model_fields_set else default
        return (self.model_extra or {}).get(key, default)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict with exactly the keys that were set (NaN/inf as None)."""
        return json_safe(self.model_dump(mode="python", by_alias=True, exclude_unset=True))


class GroupStats(Record):
    """Statistics of a group of images (the overall row); per-region keys are extras."""

    n: int
    flip_rate_text_removed: float | None = None
    flip_rate_placebo: float | None = None
    accuracy: dict[str, float | None] | None = None


class ClassStats(GroupStats):
    """A class's statistics and the gate's decision on it."""

    flagged: bool = False
    flag_reasons: list[str] = Field(default_factory=list)


class Failure(Record):
    """One failed gate rule; token failures carry ``token`` and ``effect`` too."""

    class_: str | None = Field(default=None, alias="class")
    rule: str
    value: int | float | None = None
    threshold: int | float | None = None
    lower: float | None = None
    token: str | None = None
    effect: float | None = None
    # issue 10: grid cells carry their p/q-values, token failures their finding
    p_value: float | None = None
    q_value: float | None = None
    effect_q_value: float | None = None
    finding: str | None = None
    fails_on: list[str] | None = None  # token failures: ["dependence"] / ["association"] / both (issue 10)


class Regression(Record):
    """The regression rule's settings (``gate.baseline``); ``baseline_run`` None on an audit's first run."""

    baseline: str | None = None
    baseline_run: str | None = None
    max_lift_increase: float | None = None
    max_effect_increase: float | None = None
    rule: str = ""


class Gate(Record):
    """The gate's decision (the analysis/gate package); ``passed`` is None where no decision was recorded."""

    passed: bool | None = None
    failures: list[Failure] = Field(default_factory=list)
    max_text_lift: float | None = None
    max_text_effect: float | None = None
    rule: str = ""
    fdr: float | None = None  # Benjamini-Hochberg level across the class x region x rule grid
    n_tests: int | None = None  # cells tested
    token_rule: str | None = None
    #: hardening (issue 12): passed | failed | inconclusive; why it could not judge; what weakened it.
    status: str | None = None
    inconclusive_reasons: list[str] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)
    regression: Regression | None = None


class Validation(Record):
    success: bool | None = None
    n_expectations: int = 0
    n_failed: int = 0
    reused_from: str | None = None  # identical tables validated at this time (UTC): the result was reused


class CamInfo(Record):
    method: str | None = None
    target: str | None = None
    target_layer: str | None = None
    device: str | None = None
    layers: list[str] | None = None  # cam.layers
    k: int | None = None  # cam.target: topk
    reshape: str | None = None  # model.reshape


class RegionSource(Record):
    """How a region was obtained: ``source`` a provider name, ``from`` a sentence; other keys are for machines."""

    source: str = ""
    from_: str = Field(default="", alias="from")
    heuristic: bool = False


class CounterfactualInfo(Record):
    enabled: bool = False
    regions: list[str] = Field(default_factory=list)
    method: str | None = None
    margin: int | None = None
    #: per intervened region: images left out of effects because no valid placebo exists
    n_no_placebo: dict[str, int] | None = None
    placebo_max_overlap: float | None = None
    #: per intervened region: {reason (too_large | no_room | overlap): images} of the n_no_placebo
    no_placebo_reasons: dict[str, dict[str, int]] | None = None


class StatsInfo(Record):
    bootstrap: int | None = None
    ci: float | None = None
    seed: int | None = None
    interval: str = INTERVAL


class Sanity(Record):
    """The model-randomisation check (measure/sanity.py)."""

    n_images: int | None = None
    verdict: str = ""
    model_sensitive: bool | None = None
    randomized_layers: list[str] | None = None
    rank_correlation_mean: float | None = None
    rank_correlation_median: float | None = None
    max_rank_correlation: float | None = None


class TokenEntry(Record):
    """One recurring token (tokens/stage.py), ranked by risk."""

    token: str
    kind: str = "text"
    example_text: str | None = None
    n_images: int | None = None
    n_instances: int | None = None
    top_class: str | None = None
    class_share: float | None = None
    class_shares: dict[str, float] | None = None
    p_value: float | None = None
    mass: float | None = None
    area: float | None = None
    lift: float | None = None
    effect: float | None = None
    effect_ci: list[float] | None = None
    flip_rate_removed: float | None = None
    flip_rate_placebo: float | None = None
    n_no_placebo: int | None = None
    risk: float | None = None
    flagged: bool = False
    # issue 10: data association and model dependence, kept apart
    q_value: float | None = None
    associated: bool | None = None
    attended: bool | None = None
    effect_p_value: float | None = None
    effect_q_value: float | None = None
    dependent: bool | None = None
    finding: str | None = None
    #: which findings fired (associated | dependent | both | none) and those that fail the gate
    findings: str | None = None
    fails_on: str | None = None


class PointingGroup(Record):
    """Pointing game of a group of images (analysis/pointing.py): hits on the annotated region."""

    n: int = 0
    hits: int = 0
    hit_rate: float | None = None
    hit_rate_ci: list[float] | None = None
    chance: float | None = None
    mass: float | None = None
    lift: float | None = None
    lift_ci: list[float] | None = None


class Pointing(Record):
    """summary.json ``pointing`` (only with regions.expected): per class and overall."""

    tolerance_px: int = 0
    source: str | None = None
    n_judged: int = 0
    n_unannotated: int = 0
    classes: dict[str, PointingGroup] = Field(default_factory=dict)
    overall: PointingGroup | None = None
class MetricChange(Record):
    """One class statistic in this run against an earlier run, with the interval of the change."""

    current: float | None = None
    reference: float | None = None
    delta: float | None = None
    delta_ci: list[float | None] | None = None
    method: str | None = None


class ClassChange(Record):
    """A class against an earlier run (auditors/history/compare.py); metrics missing in either run are left out."""

    n: int | None = None
    n_reference: int | None = None
    text_lift: MetricChange | None = None
    text_effect: MetricChange | None = None


class Comparison(Record):
    """This run against one earlier run of the same audit."""

    run_id: str | None = None
    created_at: str | None = None
    passed: bool | None = None
    pinned: bool = False
    classes: dict[str, ClassChange] = Field(default_factory=dict)
    methods: dict[str, str] = Field(default_factory=dict)
    ci: float | None = None


class History(Record):
    """The change against the previous run and the ``gate.baseline`` run (None where there is none)."""

    previous: Comparison | None = None
    baseline: Comparison | None = None
    n_earlier_runs: int = 0
    problems: list[str] = Field(default_factory=list)


class Timing(Record):
    total_s: float | None = None
    images_per_s: float | None = None


class Summary(Record):
    """Everything summary.json says about one run."""

    name: str
    run_id: str
    created_at: str | None = None
    camaudit_version: str
    config: dict[str, Any]
    n_images: int
    n_failed: int | None = None
    n_region_errors: int | None = None
    n_degenerate: int | None = None
    group_by: str = "label"
    regions: list[str] = Field(default_factory=list)
    region_sources: dict[str, RegionSource] = Field(default_factory=dict)
    cam: CamInfo | None = None
    classes: dict[str, ClassStats] = Field(default_factory=dict)
    overall: GroupStats | None = None
    flagged_classes: list[str] = Field(default_factory=list)
    gate: Gate | None = None
    validation: Validation | None = None
    counterfactual: CounterfactualInfo | None = None
    stats: StatsInfo | None = None
    sanity: Sanity | None = None
    tokens: list[TokenEntry] | None = None
    flagged_tokens: list[str] = Field(default_factory=list)
    timing: Timing | None = None
    text_detection: dict[str, int] = Field(default_factory=dict)
    pointing: Pointing | None = None
    # CAM variants (analysis/depth.py): per-layer lift, per-target-class stats, export files
    layers: dict[str, Any] | None = None
    targets: dict[str, Any] | None = None
    exports: dict[str, str | None] = Field(default_factory=dict)
    history: History | None = None
    #: Failure analysis (analysis/failures.py); absent without labels or with output.failures_per_class 0.
    failures: dict[str, Any] | None = None

    @property
    def passed(self) -> bool:
        return self.gate is not None and self.gate.passed is True

    def gate_config(self) -> GateConfig | None:
        """The gate settings the run used; None when its config recorded no gate section."""
        section = self.config.get("gate")
        return GateConfig.model_validate(section) if isinstance(section, dict) else None

    def tokens_config(self) -> TokensConfig | None:
        """The token settings the run used; None when its config recorded no tokens section."""
        section = self.config.get("tokens")
        return TokensConfig.model_validate(section) if isinstance(section, dict) else None


def placebo_counts(images: pd.DataFrame, cfg: AuditConfig, cf_regions: list[str]) -> dict[str, Any]:
    """Images per intervened region left out of effects for want of a valid placebo, and the tolerance."""
    if not cf_regions:
        return {}
    n_no, reasons = {}, {}
    for r in cf_regions:
        status = images.get(f"{r}_placebo_status")
        missing = status[status.notna() & (status != "ok")].astype(str) if status is not None else pd.Series(dtype=str)
        n_no[r] = int(len(missing))
        reasons[r] = {str(k): int(v) for k, v in missing.value_counts().sort_index().items()}
    return {"n_no_placebo": n_no, "placebo_max_overlap": cfg.counterfactual.placebo_max_overlap,
            "no_placebo_reasons": reasons}


def build_summary(
    cfg: AuditConfig,
    *,
    run_id: str,
    target_layer: str,
    device: str,
    images: pd.DataFrame,
    errors: pd.DataFrame,
    group_by: str,
    regions: list[str],
    region_sources: dict[str, dict[str, Any]],
    per_class: dict[str, dict[str, Any]],
    overall: dict[str, Any],
    gate: dict[str, Any],
    validation: dict[str, Any],
    sanity: dict[str, Any] | None = None,
    tokens: list[dict[str, Any]] | None = None,
    run_stats: dict[str, int] | None = None,
    elapsed: float = 0.0,
    variants: dict[str, Any] | None = None,
    failures: dict[str, Any] | None = None,
    created_at: datetime | None = None,
    pointing: dict[str, Any] | None = None,
    history: dict[str, Any] | None = None,
) -> Summary:
    """Assemble the summary from the stages' results (``per_class`` already flagged by the gate).

    ``errors``: errors.csv rows (path, stage, reason); ``run_stats``: the chunk loop's counters
    (``n_degenerate``, ``text_*``); ``validation``: :func:`validate_tables`' result; ``history``:
    :func:`auditors.history.compare_with_history`'s result (left out of summary.json when None).
    """
    run_stats = run_stats or {}
    cf_regions = cfg.counterfactual_regions()
    tokens = tokens or []
    created = (created_at or datetime.now(timezone.utc)).isoformat(timespec="seconds")
    fields: dict[str, Any] = {
        "name": cfg.name,
        "run_id": run_id,
        "created_at": created,
        "camaudit_version": auditors.__version__,
        "config": cfg.public_dict(),
        "n_images": int(len(images)),
        "n_failed": int(errors.loc[~errors["stage"].isin(["regions", "failures"]), "path"].nunique()),
        "n_region_errors": int((errors["stage"] == "regions").sum()),
        "n_degenerate": int(run_stats.get("n_degenerate", 0)),
        "group_by": group_by,
        "regions": regions,
        "region_sources": region_sources,
        "cam": {"method": cfg.cam.method, "target": cfg.cam.target, "target_layer": target_layer, "device": device,
                "layers": cfg.cam.layers, "k": cfg.cam.k if cfg.cam.target == "topk" else None, "reshape": cfg.model.reshape},
        "classes": per_class,
        "overall": overall,
        "flagged_classes": [c for c, s in per_class.items() if s["flagged"]],
        "gate": gate,
        "validation": {**{k: validation[k] for k in ("success", "n_expectations", "n_failed")},
                       **({"reused_from": validation["reused"].get("validated_at")} if validation.get("reused") else {})},
        "counterfactual": {"enabled": cfg.counterfactual.enabled, "regions": cf_regions,
                           "method": cfg.counterfactual.method, "margin": cfg.counterfactual.margin,
                           **placebo_counts(images, cfg, cf_regions)},
        "stats": {"bootstrap": cfg.stats.bootstrap, "ci": cfg.stats.ci, "seed": cfg.stats.seed, "interval": INTERVAL},
        "sanity": sanity,
        "tokens": tokens,
        "flagged_tokens": [t["token"] for t in tokens if t["flagged"]],
        "timing": {"total_s": round(elapsed, 3), "images_per_s": round(len(images) / elapsed, 3) if elapsed > 0 else None},
        "text_detection": {k: v for k, v in run_stats.items() if k.startswith("text_")},
        "incremental": {"reused": int(run_stats.get("rows_reused", 0)), "computed": int(run_stats.get("rows_computed", 0)),
                        "rejected": int(run_stats.get("rows_rejected", 0)),
                        # save_cams runs: stored rows without saved maps (recomputed)
                        **({"incomplete": int(run_stats.get("rows_incomplete", 0))} if cfg.output.save_cams else {}),
                        **({"failure_rows_reused": int(run_stats.get("failure_rows_reused", 0)),
                            "failure_rows_computed": int(run_stats.get("failure_rows_computed", 0))}
                           if "failure_rows_computed" in run_stats else {}),
                        # files whose bytes were read to hash them vs hashes remembered by stat (audit/file_hashes.py)
                        **({"files_hashed": int(run_stats.get("files_hashed", 0)),
                            "file_hashes_remembered": int(run_stats.get("file_hashes_remembered", 0))}
                           if "files_hashed" in run_stats else {}),
                        # token stage: crop similarities read from token_pairs.sqlite vs compared (tokens/pair_store.py)
                        **({"token_pairs_reused": int(run_stats.get("token_pairs_reused", 0)),
                            "token_pairs_computed": int(run_stats.get("token_pairs_computed", 0))}
                           if "token_pairs_computed" in run_stats else {})},
        "oom": {"batches_split": int(run_stats.get("oom_splits", 0)), "batch_size": cfg.cam.batch_size,
                # splits per stage: cam, topk, interventions, failures (audit/oom.py)
                "stages": {k.removeprefix("oom_splits_"): int(v) for k, v in run_stats.items() if k.startswith("oom_splits_")}},
        "executor": {"kind": cfg.run.executor, "dask_address": cfg.run.dask_address, "dask_workers": cfg.run.dask_workers,
                     "workers": cfg.run.workers},
        **(variants or {}),  # layers, targets, exports
    }
    if history is not None:
        fields["history"] = history
    if pointing is not None:  # only runs with regions.expected
        fields["pointing"] = pointing
    if failures is not None:
        fields["failures"] = failures
    return Summary.model_validate(fields)
