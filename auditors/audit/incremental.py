"""A chunk of images, computed only where no verified per-image result exists.

The chunk stays the unit of scheduling and retry; what is recomputed is decided per image by
:mod:`auditors.audit.result_cache`. Images whose bytes and setting match a stored row are served
from the store without decoding or loading the model; the rest go through
:func:`auditors.audit.chunk.audit_chunk`, and each finished batch is stored at once, so a killed
run resumes from its last finished batch.

The report gallery is not cached (it holds pixels): :func:`gallery_for` recomputes the few
images the report shows, chosen from the merged table.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from auditors.audit.chunk import ChunkResult, audit_chunk
from auditors.audit.failure_reuse import FailureStore
from auditors.audit.file_hashes import FileHashes
from auditors.audit.result_cache import ResultSpec, ResultStore, image_key, weights_fingerprint
from auditors.audit.stored_maps import decode_maps
from auditors.audit.tables import empty_rows, row_columns, wants_instances
from auditors.audit.variants import target_columns
from auditors.config.schema import AuditConfig
from auditors.data.discovery import Entry
from auditors.errors import ConfigError
from auditors.measure.gallery import GalleryItem, top_k
from auditors.measure.instances import INSTANCE_COLUMNS
from auditors.models.engines import engine_for
from auditors.models.loading import select_device
from auditors.regions.build import region_names

__all__ = ["audit_images", "gallery_for"]

_CHECKED: dict[int, str] = {}  # id(model) -> weights fingerprint, once per worker process
_CHECK_LOCK = threading.Lock()


def _check_worker_model(cfg: AuditConfig, target_layer: str, expected: str) -> None:
    """A worker process must audit the very weights the run was planned with."""
    engine = engine_for(cfg.model, cfg.cam, target_layer, select_device(cfg.cam.device))
    with _CHECK_LOCK:
        got = _CHECKED.get(id(engine.model))
        if got is None:
            got = _CHECKED[id(engine.model)] = weights_fingerprint(engine.model)
    if got != expected:
        raise ConfigError(
            f"model: this worker process (pid {os.getpid()}) loaded different weights ({got[:12]}) than the run "
            f"planned with ({expected[:12]}); a model built without fixed weights (e.g. model.arch without "
            "model.checkpoint, or an unseeded factory) differs in every process: save a checkpoint and set model.checkpoint"
        )


def audit_images(
    entries: list[Entry], cfg: AuditConfig, classes: list[str], target_layer: str, cache_path: Path | None, spec: ResultSpec
) -> ChunkResult:
    """Rows for ``entries``: verified stored rows where the key matches, computed (and stored) otherwise.

    Computed images also get their failure row (mistakes only, ``output.failures_per_class``) from
    the same pass, stored per batch and returned as ``failures``: the flow's failure step then
    decodes nothing for them.
    """
    root = Path(cfg.dataset.root)
    store = ResultStore(spec, cfg)
    failure_store = FailureStore(spec, cfg) if cfg.output.failures_per_class else None
    files = FileHashes(Path(spec.store).with_name("file_hashes.sqlite"), read=spec.read)
    try:
        digests = files.hashes([root / e.path for e in entries])
        keys: dict[str, str] = {}
        for e in entries:
            digest = digests[root / e.path]
            if digest is not None:
                keys[e.path] = image_key(cfg, digest, e.label, e.path)
        found = store.get_many(list(keys.values()))
        missing = [e for e in entries if keys.get(e.path) not in found]
        computed: dict[str, dict[str, Any]] = {}  # path -> payload, as a later run would read it

        def keep(rows: list[dict], instances: list[list[dict]] | None, regions: list[list[dict]], variants: list[dict]) -> None:
            batch = {}
            for i, row in enumerate(rows):
                key = image_key(cfg, row["content_hash"], row["label"], row["path"])
                inst = None if instances is None else instances[i]
                batch[key] = computed[row["path"]] = store.payload(key, row, inst, regions[i], variants[i])
            store.put_many(batch)

        def keep_failures(rows: list[dict]) -> None:
            if failure_store is None:
                return
            failure_store.put_many({
                image_key(cfg, computed[r["path"]]["row"]["content_hash"], r["label"], r["path"]): failure_store.row_of(r)
                for r in rows if r["path"] in computed
            })

        result = ChunkResult(rows=empty_rows(cfg))
        if missing:
            _check_worker_model(cfg, target_layer, spec.weights)
            no_gallery = cfg.model_copy(update={"output": cfg.output.model_copy(update={"gallery_size": 0})})
            result = audit_chunk(missing, no_gallery, classes, target_layer, cache_path,
                                 instances=cfg.regions.text.enabled, on_batch=keep,
                                 failures_wanted=failure_store is not None, on_failures=keep_failures,
                                 failure_pictures=False)
        assembled = _assemble(entries, cfg, keys, found, computed, result, store)
        assembled.stats.update({"files_hashed": files.files_read, "file_hashes_remembered": files.files_remembered})
        return assembled
    finally:
        files.close()
        store.close()
        if failure_store is not None:
            failure_store.close()


def _assemble(
    entries: list[Entry], cfg: AuditConfig, keys: dict[str, str], found: dict[str, dict], computed: dict[str, dict],
    result: ChunkResult, store: ResultStore,
) -> ChunkResult:
    """Rows and exports in entry order, stored and computed alike built from the same stored form
    (JSON values, float16 map bytes), so a warm run's outputs equal a cold run's."""
    records, inst_records, region_records, target_records = [], [], [], []
    cams: dict[str, np.ndarray] = {}
    for e in entries:
        payload = computed.get(e.path) or found.get(keys.get(e.path, ""))
        if payload is None:  # failed: its error is in result.errors
            continue
        records.append({"path": e.path, "label": e.label, **payload["row"]})
        for r in payload["instances"] or []:
            inst_records.append({"path": e.path, "label": e.label, **r})
        region_records.extend({"path": e.path, **r} for r in payload["regions"])
        target_records.extend({"path": e.path, "label": e.label, **r} for r in payload.get("targets") or [])
        if store.map_suffixes is not None:
            maps = decode_maps(payload.get("maps"), store.map_suffixes, store.k)
            if maps is None:  # cannot happen for what this run stored or verified; never write a partial cams.npz silently
                raise RuntimeError(f"{e.path}: saved maps missing from its stored result")
            cams.update({e.path + suffix: m for suffix, m in maps.items()})
    columns = row_columns(cfg)
    rows = pd.DataFrame.from_records(records, columns=list(columns)).astype(columns) if records else empty_rows(cfg)
    instances = None
    if wants_instances(cfg):
        instances = pd.DataFrame.from_records(inst_records, columns=list(INSTANCE_COLUMNS)).astype(INSTANCE_COLUMNS)
    stats = {k: v for k, v in result.stats.items() if k not in ("n_ok", "n_degenerate")}
    fresh = result.failures.loc[result.failures["path"].isin(computed)] if result.failures is not None else None
    if cfg.output.failures_per_class:  # failure rows made in this pass (the failure step adds its own)
        stats["failure_rows_computed"] = 0 if fresh is None else len(fresh)
    stats.update({
        "n_ok": len(rows),
        "n_failed": result.stats.get("n_failed", 0),
        "n_degenerate": int((rows["cam_status"] != "ok").sum()),
        "rows_reused": len(records) - len(computed),
        "rows_computed": len(computed),
        "rows_rejected": store.rejected,
        "rows_incomplete": store.incomplete,
    })
    targets = None
    if cfg.cam.target == "topk":
        tcols = target_columns(cfg, region_names(cfg))
        targets = pd.DataFrame.from_records(target_records, columns=list(tcols)).astype(tcols)
    return ChunkResult(rows=rows, errors=result.errors, instances=instances, gallery=[], stats=stats,
                       targets=targets, regions=region_records, cams=cams,
                       failures=None if fresh is None else fresh.reset_index(drop=True))


def gallery_for(cfg: AuditConfig, entries: list[Entry], images: pd.DataFrame, classes: list[str], target_layer: str,
                cache_path: Path | None) -> list[GalleryItem]:
    """The report's gallery: the ``output.gallery_size`` images with the most mass on the ranking
    region (text, else the first region), recomputed with their pixels, maps and edits."""
    k = cfg.output.gallery_size
    regions = region_names(cfg)
    if not k or not regions or images.empty:
        return []
    rank = "text" if "text" in regions else regions[0]
    mass = images[f"{rank}_mass"].to_numpy(dtype=float)
    finite = np.isfinite(mass)
    ranked = sorted(zip(mass[finite], images["path"][finite]), reverse=True)[:k]
    by_path = {e.path: e for e in entries}
    chosen = [by_path[p] for _, p in ranked if p in by_path]
    if not chosen:
        return []
    return audit_chunk(chosen, cfg, classes, target_layer, cache_path).gallery


def pointing_misses_for(cfg: AuditConfig, entries: list[Entry], images: pd.DataFrame, classes: list[str],
                        target_layer: str, cache_path: Path | None) -> list[GalleryItem]:
    """The pointing game's biggest misses: images whose peak missed ``regions.expected``, least
    mass on it first (``regions.expected.gallery_size``), recomputed with their maps."""
    k = cfg.regions.expected.gallery_size
    if not k or images.empty or "expected_hit" not in images.columns:
        return []
    miss = images[(images["expected_hit"] == 0) & images["expected_mass"].notna() & (images["expected_area"] > 0)]
    ranked = miss.assign(score=1.0 - miss["expected_mass"]).sort_values(["score", "path"], ascending=False).head(k)
    by_path = {e.path: e for e in entries}
    chosen = [by_path[p] for p in ranked["path"] if p in by_path]
    if not chosen:
        return []
    return top_k(audit_chunk(chosen, cfg, classes, target_layer, cache_path).misses, k)
