"""Failure rows reused per image, like the audit's rows.

Every mispredicted labelled image gets a second map (its true class) and a row in
failures.parquet. Recomputing those every night made the cost of an unchanged night grow with
the number of mistakes (a model at 90 % accuracy on 1M images: 100k maps a night). A failure
row is stored under the image's result key (content, label, model, settings: the same key as
its audit row) plus the failure settings, in ``failures.sqlite`` next to the row store (the
same verified JSON-in-SQLite format, never pickle).

Images computed in this run get their failure row in the chunk pass, from the forward pass the
audit row already made (:class:`FailureStore` is written per batch there, and the rows come
back as ``fresh``); :func:`failures_for`, after the merge, only reads stored rows and computes
what neither gave (a run killed between a batch's audit row and its failure row). The few
pictures the report shows (the most confident mistakes per class) are recomputed from pixels,
as the gallery's are: their number is bounded by the config, not by the dataset.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from auditors.audit.chunk import audit_chunk
from auditors.audit.result_cache import ResultSpec, row_ok, image_key, to_json_value
from auditors.config.schema import AuditConfig
from auditors.data.discovery import Entry
from auditors.measure.failures import FailureItem, failure_columns, top_per_class
from auditors.regions.build import region_names
from auditors.regions.cache import RegionCache

__all__ = ["failures_for", "FailureStore", "FAILURE_FORMAT"]

FAILURE_FORMAT = 1  # bump when failures.parquet's columns or their meaning change


def _setting(spec: ResultSpec, cfg: AuditConfig) -> str:
    """The audit row's setting plus what only the failure rows depend on."""
    return f"{spec.setting}|failures:{FAILURE_FORMAT}:tol={cfg.cam.pointing_tolerance}:regions={','.join(region_names(cfg))}"


def _lean(cfg: AuditConfig) -> AuditConfig:
    """Only the maps are needed: no counterfactual re-runs, no gallery, no saved maps."""
    return cfg.model_copy(update={
        "counterfactual": cfg.counterfactual.model_copy(update={"enabled": False}),
        "output": cfg.output.model_copy(update={"gallery_size": 0, "save_cams": False}),
    })


def _stored_form(record: dict[str, Any], columns: dict[str, str]) -> dict[str, Any]:
    """A failures.parquet record as stored and compared: JSON values of ``columns`` (no path or label)."""
    return {c: to_json_value(record.get(c)) for c in columns}


class FailureStore:
    """``failures.sqlite``: image key -> verified failure row (format, key, setting, columns and
    value types all match, or the entry is ignored and the row recomputed)."""

    def __init__(self, spec: ResultSpec, cfg: AuditConfig):
        self.setting = _setting(spec, cfg)
        self.read = spec.read
        self.columns = {c: t for c, t in failure_columns(region_names(cfg)).items() if c not in ("path", "label")}
        self._db = RegionCache(Path(spec.store).with_name("failures.sqlite"))

    def row_of(self, record: dict[str, Any]) -> dict[str, Any]:
        """A failures.parquet record as its stored form (JSON values, no path or label)."""
        return _stored_form(record, self.columns)

    def get_many(self, keys: dict[str, str]) -> dict[str, dict]:
        """path -> verified stored row, for ``keys`` (path -> image key)."""
        if not self.read or not keys:
            return {}
        found = self._db.get_many(list(keys.values()), self.setting)
        out = {}
        for path, key in keys.items():
            payload = found.get(key)
            if (isinstance(payload, dict) and payload.get("format") == FAILURE_FORMAT and payload.get("key") == key
                    and payload.get("setting") == self.setting and row_ok(payload.get("row"), self.columns)):
                out[path] = payload["row"]
        return out

    def put_many(self, rows: dict[str, dict]) -> None:
        """Store ``rows`` (image key -> stored-form row); rows that do not verify are not stored."""
        batch = {key: {"format": FAILURE_FORMAT, "key": key, "setting": self.setting, "row": row}
                 for key, row in rows.items() if row_ok(row, self.columns)}
        if batch:
            self._db.put_many(batch, self.setting)

    def close(self) -> None:
        self._db.close()


def failures_for(
    cfg: AuditConfig, entries: list[Entry], images: pd.DataFrame, classes: list[str], target_layer: str,
    cache_path: Path | None, spec: ResultSpec | None = None, fresh: pd.DataFrame | None = None,
    skip: set[str] | frozenset[str] = frozenset(),
) -> tuple[pd.DataFrame | None, list[FailureItem], list[dict], dict[str, int]]:
    """failures.parquet rows for the mispredicted labelled rows of ``images``, the report's top
    ``output.failures_per_class`` mistakes per class with pictures, errors (stage ``failures``:
    the image stays audited) and counts (reused/computed here, and ``oom_splits*``: CUDA
    out-of-memory batch splits of this step).

    ``fresh``: failure rows the chunk pass computed in this run (used as they are, counted by the
    chunks); ``spec``: the result store's key, so stored rows are reused; ``skip``: paths whose
    failure analysis already failed in this run (their error is recorded; not tried twice).
    """
    k = cfg.output.failures_per_class
    counts = {"failure_rows_reused": 0, "failure_rows_computed": 0}
    if not k or images.empty or "label" not in images:
        return None, [], [], counts
    labelled = images["label"].notna() & images["label"].isin(classes)
    wrong = images.loc[labelled & (images["label"] != images["pred"])]
    by_path = {e.path: e for e in entries}
    chosen = [by_path[p] for p in wrong["path"] if p in by_path]
    if not chosen:
        return None, [], [], counts
    regions = region_names(cfg)
    columns = {c: t for c, t in failure_columns(regions).items() if c not in ("path", "label")}
    made = {rec["path"]: _stored_form(rec, columns) for rec in (fresh.to_dict("records") if fresh is not None else [])}
    hashes = dict(zip(wrong["path"], wrong["content_hash"])) if "content_hash" in wrong else {}
    keys = {e.path: image_key(cfg, hashes[e.path], e.label, e.path)
            for e in chosen if isinstance(hashes.get(e.path), str) and e.path not in made}
    store = FailureStore(spec, cfg) if spec is not None else None
    try:
        stored = store.get_many(keys) if store is not None else {}
        missing = [e for e in chosen if e.path not in made and e.path not in stored and e.path not in skip]
        errors: list[dict] = []
        items: list[FailureItem] = []
        computed: dict[str, dict[str, Any]] = {}
        oom: dict[str, int] = {}  # CUDA out-of-memory splits of this step (summary oom)
        if missing:
            result = audit_chunk(missing, _lean(cfg), classes, target_layer, cache_path, instances=False, failures_wanted=True)
            _add_oom(oom, result.stats)
            errors += [{**e, "stage": "failures"} for e in result.errors if e["stage"] != "regions"]
            items = list(result.failure_items)
            for rec in (result.failures.to_dict("records") if result.failures is not None else []):
                computed[rec["path"]] = _stored_form(rec, columns)
            if store is not None:
                store.put_many({keys[p]: row for p, row in computed.items() if p in keys})
    finally:
        if store is not None:
            store.close()
    counts = {"failure_rows_reused": len(stored), "failure_rows_computed": len(computed)}
    records = [{"path": e.path, "label": e.label, **(computed.get(e.path) or made.get(e.path) or stored[e.path])}
               for e in chosen if e.path in computed or e.path in made or e.path in stored]
    if not records:
        return None, items, errors, {**counts, **oom}
    cols = failure_columns(regions)
    rows = pd.DataFrame.from_records(records, columns=list(cols)).astype(cols)
    pictures = _pictures(cfg, rows, items, by_path, classes, target_layer, cache_path, k, oom)
    return rows, pictures, errors, {**counts, **oom}


def _add_oom(oom: dict[str, int], stats: dict[str, int]) -> None:
    for key, n in stats.items():
        if key.startswith("oom_splits"):
            oom[key] = oom.get(key, 0) + n


def _pictures(
    cfg: AuditConfig, rows: pd.DataFrame, computed: list[FailureItem], by_path: dict[str, Entry], classes: list[str],
    target_layer: str, cache_path: Path | None, k: int, oom: dict[str, int],
) -> list[FailureItem]:
    """The report's mistakes (most confident ``k`` per true class, ties by path, chosen from every
    row, reused ones too); pictures not made in this run's computation are recomputed."""
    ranked = rows.assign(neg=-rows["confidence"]).sort_values(["label", "neg", "path"])
    wanted = set(ranked.groupby("label", sort=True).head(k)["path"])
    have = {it.path for it in computed if it.path in wanted}
    redo = [by_path[p] for p in sorted(wanted - have) if p in by_path]
    items = [it for it in computed if it.path in wanted]
    if redo:
        again = audit_chunk(redo, _lean(cfg), classes, target_layer, cache_path, instances=False, failures_wanted=True)
        _add_oom(oom, again.stats)
        items += again.failure_items
    return top_per_class(items, k)
