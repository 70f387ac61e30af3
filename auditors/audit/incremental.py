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
import stat
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from auditors.audit.chunk import ChunkResult, audit_chunk
from auditors.audit.result_cache import ResultSpec, ResultStore, image_key, region_payload, to_json_value, weights_fingerprint
from auditors.audit.tables import empty_rows, row_columns, wants_instances
from auditors.config.schema import AuditConfig
from auditors.data.decoding import content_hash
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


def _hash_file(path: Path) -> str | None:
    """Content hash of a regular file; None (a miss: the audit records why) for anything else."""
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            return None
        return content_hash(path.read_bytes())
    except OSError:
        return None


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
    """Rows for ``entries``: verified stored rows where the key matches, computed (and stored) otherwise."""
    root = Path(cfg.dataset.root)
    store = ResultStore(spec, cfg)
    try:
        keys: dict[str, str] = {}
        for e in entries:
            digest = _hash_file(root / e.path)
            if digest is not None:
                keys[e.path] = image_key(cfg, digest, e.label, e.path)
        found = store.get_many(list(keys.values()))
        missing = [e for e in entries if keys.get(e.path) not in found]
        computed: dict[str, dict[str, Any]] = {}  # path -> payload, as a later run would read it

        def keep(rows: list[dict], instances: list[list[dict]] | None, regions: list[list[dict]]) -> None:
            batch = {}
            for i, row in enumerate(rows):
                key = image_key(cfg, row["content_hash"], row["label"], row["path"])
                inst = None if instances is None else instances[i]
                batch[key] = (row, inst, regions[i])
                computed[row["path"]] = {
                    "row": {c: to_json_value(row.get(c)) for c in store.columns},
                    "instances": None if inst is None else [{c: to_json_value(r.get(c)) for c in store.instance_columns} for r in inst],
                    "regions": region_payload(regions[i]),
                }
            store.put_many(batch)

        result = ChunkResult(rows=empty_rows(cfg))
        if missing:
            _check_worker_model(cfg, target_layer, spec.weights)
            no_gallery = cfg.model_copy(update={"output": cfg.output.model_copy(update={"gallery_size": 0})})
            result = audit_chunk(missing, no_gallery, classes, target_layer, cache_path,
                                 instances=cfg.regions.text.enabled, on_batch=keep)
        return _assemble(entries, cfg, keys, found, computed, result, store.rejected)
    finally:
        store.close()


def _assemble(
    entries: list[Entry], cfg: AuditConfig, keys: dict[str, str], found: dict[str, dict], computed: dict[str, dict],
    result: ChunkResult, rejected: int,
) -> ChunkResult:
    """Rows in entry order, stored and computed alike built from the same JSON values."""
    records, inst_records, region_records = [], [], []
    for e in entries:
        payload = computed.get(e.path) or found.get(keys.get(e.path, ""))
        if payload is None:  # failed: its error is in result.errors
            continue
        records.append({"path": e.path, "label": e.label, **payload["row"]})
        for r in payload["instances"] or []:
            inst_records.append({"path": e.path, "label": e.label, **r})
        region_records.extend({"path": e.path, **r} for r in payload["regions"])
    columns = row_columns(cfg)
    rows = pd.DataFrame.from_records(records, columns=list(columns)).astype(columns) if records else empty_rows(cfg)
    instances = None
    if wants_instances(cfg):
        instances = pd.DataFrame.from_records(inst_records, columns=list(INSTANCE_COLUMNS)).astype(INSTANCE_COLUMNS)
    stats = {k: v for k, v in result.stats.items() if k not in ("n_ok", "n_degenerate")}
    stats.update({
        "n_ok": len(rows),
        "n_failed": result.stats.get("n_failed", 0),
        "n_degenerate": int((rows["cam_status"] != "ok").sum()),
        "rows_reused": len(records) - len(computed),
        "rows_computed": len(computed),
        "rows_rejected": rejected,
    })
    # cam.target: topk and output.save_cams exports come from this run's computation only
    # (the store is not read for them: see result_cache.readable).
    return ChunkResult(rows=rows, errors=result.errors, instances=instances, gallery=[], stats=stats,
                       targets=result.targets, regions=region_records, cams=result.cams)


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
