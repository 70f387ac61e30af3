"""Reuse a Great Expectations result when the same tables meet the same expectations again.

A nightly audit over a dataset that did not change produces byte-for-byte the same tables, and
validating them again gives the same answer: GX is deterministic in (data, suite). Importing GX
alone costs about two seconds per run, the largest fixed cost of an unchanged night. So the
result is stored under a key made of

- each table's content (pandas' row hashes of every column, column names and dtypes),
- the inputs of the expectation builders (classes, regions, tolerances),
- the source of :mod:`auditors.analysis.validation` (a changed expectation is a new key),
- the Great Expectations version,

and read back only when every part matches. Any changed row, column, expectation or library
recomputes. Entries are plain JSON written atomically (no pickle); a file that does not parse
or whose stored key differs is ignored and replaced.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = ["table_fingerprint", "validation_key", "reuse_or_validate", "KEEP_ENTRIES"]

KEEP_ENTRIES = 64  # newest results kept per cache folder; older ones are pruned
_FORMAT = 1


def table_fingerprint(df: pd.DataFrame) -> str:
    """Content hash of a table: column names, dtypes and every value (row order included)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(json.dumps([[str(c), str(t)] for c, t in df.dtypes.items()]).encode())
    h.update(str(len(df)).encode())
    for name in df.columns:
        col = df[name]
        try:
            h.update(pd.util.hash_pandas_object(col, index=False).to_numpy().tobytes())
        except TypeError:  # unhashable cells (lists, dicts): their JSON text
            h.update(json.dumps(col.tolist(), default=str, sort_keys=True).encode())
    return h.hexdigest()


def _validation_source() -> bytes:
    from auditors.analysis import validation

    return Path(validation.__file__).read_bytes()


def _gx_version() -> str:
    try:
        return importlib.metadata.version("great_expectations")
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def validation_key(tables: dict[str, pd.DataFrame], builder_inputs: dict[str, Any]) -> str:
    """The key of one validation: table contents, expectation inputs and code, GX version."""
    h = hashlib.blake2b(digest_size=20)
    h.update(json.dumps({"format": _FORMAT, "gx": _gx_version(), "inputs": builder_inputs}, sort_keys=True,
                        default=str).encode())
    h.update(hashlib.blake2b(_validation_source(), digest_size=16).digest())
    for name in sorted(tables):
        h.update(name.encode() + b"\0" + table_fingerprint(tables[name]).encode())
    return h.hexdigest()


def _read(path: Path, key: str) -> dict[str, Any] | None:
    try:
        entry = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(entry, dict) or entry.get("key") != key or not isinstance(entry.get("result"), dict):
        return None
    return entry


def _write(folder: Path, path: Path, entry: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(entry, allow_nan=False, default=str), encoding="utf-8")
    os.replace(tmp, path)
    entries = sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in entries[KEEP_ENTRIES:]:
        old.unlink(missing_ok=True)


def reuse_or_validate(
    folder: Path | None, key: str, validate: Callable[[], dict[str, Any]]
) -> dict[str, Any]:
    """The stored result for ``key`` (marked ``reused``), else ``validate()``'s, stored for next time.

    ``folder=None`` turns reuse off (always validates). A store that cannot be written (read-only
    cache) never fails the audit: the fresh result is returned unstored.
    """
    if folder is None:
        return validate()
    path = folder / f"{key}.json"
    entry = _read(path, key)
    if entry is not None:
        try:
            os.utime(path)  # recently used entries survive pruning
        except OSError:
            pass
        return {**entry["result"], "reused": {"validated_at": entry.get("validated_at"), "key": key}}
    result = validate()
    try:
        _write(folder, path, {"key": key, "validated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                              "result": result})
    except (OSError, ValueError, TypeError):
        pass
    return result
