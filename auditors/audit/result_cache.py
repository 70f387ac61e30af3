"""Per-image audit results, reused per image: keyed by content, stored as data, verified on read.

Why per image: a nightly dataset grows by a few thousand images; keying results by chunk (a run
of the sorted file list) made one new file near the start of the list shift every chunk and
recompute everything. Here an image's row is reused whenever *its bytes* and *everything that
changes its row* are unchanged, whatever chunk it lands in.

What a key covers (:func:`result_setting` + :func:`image_key`):
- the image's content hash (blake2b of the file bytes, never path/size/mtime), its label when
  ``cam.target: label``, and the per-image region inputs (mask files, manifest boxes);
- the model's weights (a hash of the loaded state_dict, so factory/arch models count too), the
  resolved device and precision, the config keys that change rows (model, cam, regions,
  counterfactual; not batch sizes or output keys), the class list and target layer;
- camaudit's version plus a hash of the source files that compute rows, and the versions of
  torch, torchvision, numpy, OpenCV, Pillow and EasyOCR.

Why data only: whoever can write to ``output.cache_dir`` must never be able to run code in the
next audit (the old chunk cache was Prefect-pickled). Entries are JSON in SQLite (the same
crash-safe store as the region cache); every entry read back is checked (format version, key,
column set, value types) and anything that does not match is recomputed, never trusted.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import auditors
from auditors.code_version import PACKAGE_ROOT, library_versions, sources_digest
from auditors.audit.stored_maps import decode_maps, encode_maps
from auditors.audit.tables import row_columns
from auditors.audit.variants import target_columns
from auditors.config.schema import AuditConfig
from auditors.measure.instances import INSTANCE_COLUMNS
from auditors.regions.build import region_names
from auditors.regions.cache import RegionCache

__all__ = ["region_payload", "readable", "RESULT_FORMAT", "ResultSpec", "ResultStore", "result_setting", "image_key", "weights_fingerprint",
           "stored_columns", "to_json_value", "row_ok"]

#: Bump when the payload layout changes: older entries then fail verification and are recomputed.
RESULT_FORMAT = 4  # 3: text instances carry a patch (issue 10); 4: top-k target rows and saved maps

#: Packages whose source decides row values (report, analysis and flows do not).
_ROW_SOURCES = ("cam", "data", "measure", "regions", "interventions", "models")
_ROW_FILES = ("audit/chunk.py", "audit/tables.py", "audit/result_cache.py", "audit/oom.py", "audit/variants.py",
              "audit/stored_maps.py")
_LIBRARIES = ("torch", "torchvision", "numpy", "opencv-python-headless", "pillow", "easyocr")


@dataclass(frozen=True)
class ResultSpec:
    """What a chunk task needs to reuse and store rows: small, so it travels in a task graph."""

    store: str  # results.sqlite path
    setting: str  # :func:`result_setting`
    weights: str  # :func:`weights_fingerprint` of the model the driver loaded
    read: bool = True  # run.cache: False recomputes every image (and refreshes the store)


def weights_fingerprint(model: nn.Module) -> str:
    """Hash of the loaded parameters and buffers (names, dtypes, shapes, bytes).

    Keyed on what the model *is*, not where it came from: a factory or a torchvision arch
    without a checkpoint is covered too, and a worker whose model differs is detected.
    """
    h = hashlib.blake2b(digest_size=16)
    for name, t in model.state_dict().items():
        shape = t.shape
        t = t.detach().to("cpu").contiguous().reshape(-1)
        h.update(f"{name}|{t.dtype}|{tuple(shape)}\n".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _source_hash() -> str:
    root = PACKAGE_ROOT
    files = sorted(p for pkg in _ROW_SOURCES for p in (root / pkg).rglob("*.py"))
    files += [root / f for f in _ROW_FILES if (root / f).is_file()]
    return sources_digest(str(f.relative_to(root)) for f in files)


def _library_versions() -> dict[str, str]:
    return library_versions(_LIBRARIES)


def _resolved_precision(cfg: AuditConfig, device: torch.device) -> dict[str, Any]:
    from auditors.cam.engine import _amp_dtype

    amp = _amp_dtype(device, cfg.cam.amp)
    out = {"device": device.type, "amp": str(amp) if amp is not None else "fp32", "channels_last": cfg.cam.channels_last}
    if device.type == "cuda":
        out["gpu"] = torch.cuda.get_device_name(device)
        out["tf32"] = bool(torch.backends.cuda.matmul.allow_tf32 or torch.backends.cudnn.allow_tf32)
    return out


def result_setting(cfg: AuditConfig, classes: list[str], target_layer: str, device: torch.device, weights: str) -> str:
    """Hash of everything besides the image that changes a row."""
    relevant = cfg.model_dump(mode="json", include={"model", "cam", "regions", "counterfactual"})
    for key in ("checkpoint", "torchscript"):  # their bytes are in ``weights``; moving the file is harmless
        relevant["model"][key] = relevant["model"][key] is not None
    relevant["cam"].pop("batch_size")
    relevant["cam"]["device"] = _resolved_precision(cfg, device)
    relevant["regions"]["text"].pop("threads")
    if not cfg.counterfactual.enabled:
        relevant["counterfactual"] = {"enabled": False}
    payload = {
        "format": RESULT_FORMAT,
        "config": relevant,
        "classes": list(classes),
        "target_layer": target_layer,
        "weights": weights,
        "camaudit": auditors.__version__,
        "source": _source_hash(),
        "libraries": _library_versions(),
    }
    return hashlib.blake2b(json.dumps(payload, sort_keys=True).encode(), digest_size=20).hexdigest()


def image_key(cfg: AuditConfig, content_hash: str, label: str | None, path: str) -> str:
    """Per-image part of the key: content, plus the label or path only where the row uses them."""
    from auditors.regions.build import region_inputs_fingerprint

    parts = [content_hash]
    if cfg.cam.target == "label":
        parts.append(f"label={label}")
    regions = region_inputs_fingerprint(cfg, [path])
    if regions:  # mask files / manifest boxes are looked up by path
        parts.append(f"path={path}|{regions}")
    return hashlib.blake2b("\n".join(parts).encode(), digest_size=20).hexdigest()


def stored_columns(cfg: AuditConfig) -> dict[str, str]:
    """Columns a stored row has: the images.parquet columns with per-instance columns always
    included when text is on, so turning ``tokens.enabled`` on later reuses the row."""
    full = cfg.model_copy(update={"tokens": cfg.tokens.model_copy(update={"enabled": True})})
    cols = row_columns(full) if cfg.regions.text.enabled else row_columns(cfg)
    return {c: t for c, t in cols.items() if c not in ("path", "label")}


def to_json_value(v: Any) -> Any:
    """A row value as plain JSON (numpy scalars unwrapped, pandas NA as null)."""
    if v is None:
        return None
    if isinstance(v, (np.generic,)):
        v = v.item()
    if isinstance(v, float):
        return v
    if isinstance(v, (bool, int, str)):
        return v
    try:
        import pandas as pd

        if v is pd.NA or (not isinstance(v, (list, dict)) and pd.isna(v)):
            return None
    except (TypeError, ValueError):
        pass
    raise TypeError(f"row value {v!r} ({type(v).__name__}) is not a plain value")


def region_payload(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """regions.parquet rows of one image as plain JSON, without the path (it is the entry's)."""
    out = []
    for r in rows:
        item = {}
        for k, v in r.items():
            if k == "path":
                continue
            if isinstance(v, (list, tuple, np.ndarray)):
                item[k] = [float(x) for x in v]
            else:
                item[k] = to_json_value(v)
        out.append(item)
    return out


def readable(cfg: AuditConfig) -> bool:
    """Whether stored rows may serve this config (``run.cache``). Every per-image export is
    stored with the row: top-k targets.parquet rows (the setting includes cam.target/k/layers)
    and, for ``output.save_cams`` runs, the saved maps (see :mod:`auditors.audit.stored_maps`)."""
    return cfg.run.cache


def _regions_ok(rows: Any) -> bool:
    if not isinstance(rows, list):
        return False
    for r in rows:
        if not isinstance(r, dict) or not isinstance(r.get("region"), str):
            return False
        for v in r.values():
            if isinstance(v, list):
                if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
                    return False
            elif v is not None and not isinstance(v, (str, int, float, bool)):
                return False
    return True


def _type_ok(value: Any, dtype: str) -> bool:
    if value is None:
        return dtype not in ("int64",)
    if dtype == "string":
        return isinstance(value, str)
    if dtype in ("float64", "float32"):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if dtype in ("int64", "Int64"):
        return isinstance(value, int) and not isinstance(value, bool)
    if dtype == "boolean":
        return isinstance(value, bool)
    return False


def row_ok(row: Any, columns: dict[str, str]) -> bool:
    """A stored row has exactly ``columns``, each value of its dtype (any other store verifies the same way)."""
    return isinstance(row, dict) and row.keys() == columns.keys() and all(_type_ok(row[c], t) for c, t in columns.items())


class ResultStore:
    """(setting, image key) -> verified payload: ``{"row", "instances", "regions"}``, plus
    ``"targets"`` (top-k targets.parquet rows) and ``"maps"`` (saved maps, save_cams runs)."""

    def __init__(self, spec: ResultSpec, cfg: AuditConfig):
        self.spec = spec
        self.columns = stored_columns(cfg)
        self.instance_columns = {c: t for c, t in INSTANCE_COLUMNS.items() if c not in ("path", "label")}
        self.text = cfg.regions.text.enabled
        self.k = cfg.cam.k if cfg.cam.target == "topk" else None
        self.target_columns = None
        if self.k is not None:
            self.target_columns = {c: t for c, t in target_columns(cfg, region_names(cfg)).items() if c not in ("path", "label")}
        #: cams.npz member suffixes of one image ("" the target layer, "@<layer>" each cam.layers)
        self.map_suffixes = {""} | {f"@{name}" for name in cfg.cam.layers or []} if cfg.output.save_cams else None
        self._db = RegionCache(spec.store)
        self.rejected = 0  # entries found but failing verification (recomputed)
        self.incomplete = 0  # valid entries without this run's saved maps (recomputed, then stored with them)

    def get_many(self, keys: list[str]) -> dict[str, dict[str, Any]]:
        if not self.spec.read or not keys:
            return {}
        found = {}
        for key, payload in self._db.get_many(keys, self.spec.setting).items():
            if not self._verify(key, payload):
                self.rejected += 1
            elif self.map_suffixes is not None and payload.get("maps") is None:
                self.incomplete += 1  # stored by a run that did not save maps
            elif self.map_suffixes is not None and decode_maps(payload["maps"], self.map_suffixes, self.k) is None:
                self.rejected += 1
            else:
                found[key] = payload
        return found

    def _targets_ok(self, rows: Any) -> bool:
        if self.target_columns is None:
            return rows is None
        return (isinstance(rows, list) and len(rows) == self.k and all(row_ok(r, self.target_columns) for r in rows)
                and [r["target_rank"] for r in rows] == list(range(len(rows))))

    def _verify(self, key: str, payload: dict[str, Any]) -> bool:
        if payload.get("format") != RESULT_FORMAT or payload.get("key") != key or payload.get("setting") != self.spec.setting:
            return False
        if not row_ok(payload.get("row"), self.columns):
            return False
        if not _regions_ok(payload.get("regions")) or not self._targets_ok(payload.get("targets")):
            return False
        if not (payload.get("maps") is None or isinstance(payload.get("maps"), dict)):  # decoded where used
            return False
        inst = payload.get("instances")
        if not self.text:
            return inst is None
        return isinstance(inst, list) and all(row_ok(r, self.instance_columns) for r in inst)

    def payload(self, key: str, row: dict[str, Any], inst: list[dict[str, Any]] | None, regions: list[dict[str, Any]],
                variant: dict[str, Any] | None = None) -> dict[str, Any]:
        """The stored form of one computed image: exactly what a later run reads back."""
        variant = variant or {}
        targets, maps = variant.get("targets"), variant.get("maps")
        return {
            "format": RESULT_FORMAT, "key": key, "setting": self.spec.setting,
            "row": {c: to_json_value(row.get(c)) for c in self.columns},
            "instances": None if inst is None else [
                {c: to_json_value(r.get(c)) for c in self.instance_columns} for r in inst
            ],
            "regions": region_payload(regions),
            "targets": None if targets is None or self.target_columns is None else [
                {c: to_json_value(r.get(c)) for c in self.target_columns} for r in targets
            ],
            "maps": None if maps is None or self.map_suffixes is None else encode_maps(maps),
        }

    def put_many(self, payloads: dict[str, dict[str, Any]]) -> None:
        """Store payloads (:meth:`payload`) computed this run, in one transaction."""
        ok = {key: p for key, p in payloads.items() if self._verify(key, p)}  # never store what a later run would reject
        self._db.put_many(ok, self.spec.setting)

    def close(self) -> None:
        self._db.close()
