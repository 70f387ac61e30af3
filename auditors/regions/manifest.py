"""Manifest values that region sources need, looked up by image path.

The region builder is created inside every chunk task, possibly in another process, so it
must not be handed (or re-read) the whole manifest each time: the caller may pass the rows it
has, and otherwise the manifest file is read once per process, keeping only the needed
columns, and memoised by file size and modification time.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from auditors.errors import ConfigError

__all__ = ["ManifestRows", "manifest_columns", "rows_from_frame", "is_missing"]

_MEMO: dict[tuple, dict[str, dict[str, Any]]] = {}
_MEMO_LOCK = threading.Lock()

ManifestRows = Mapping[str, Mapping[str, Any]]


def is_missing(value: Any) -> bool:
    """None, NaN, pd.NA and blank strings all mean 'no value for this image'."""
    if value is None or value is pd.NA:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and not value.strip()


def rows_from_frame(df: pd.DataFrame, columns: list[str], source: str = "dataset.manifest") -> dict[str, dict[str, Any]]:
    """``path -> {column: value}`` for ``columns``; ConfigError naming a missing column."""
    if "path" not in df.columns:
        raise ConfigError(f"{source}: missing required column 'path'")
    absent = [c for c in columns if c not in df.columns]
    if absent:
        raise ConfigError(f"{source}: regions need column(s) {absent}, which it lacks (has {list(df.columns)})")
    if not columns:
        return {}
    paths = df["path"].astype(str).str.strip()
    values = {c: df[c].tolist() for c in columns}
    return {p: {c: values[c][i] for c in columns} for i, p in enumerate(paths)}


def manifest_columns(manifest: Path | None, columns: list[str]) -> dict[str, dict[str, Any]]:
    """Read ``columns`` of the manifest file once per process (memoised by size and mtime)."""
    if not columns:
        return {}
    if manifest is None:
        raise ConfigError(f"regions: manifest column(s) {columns} are configured but dataset.manifest is not set")
    path = Path(manifest)
    try:
        st = path.stat()
    except OSError:
        raise ConfigError(f"dataset.manifest: file not found: {path}") from None
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, tuple(sorted(columns)))
    with _MEMO_LOCK:
        if key not in _MEMO:
            from auditors.data.discovery import _read_manifest

            _MEMO[key] = rows_from_frame(_read_manifest(path), columns, f"dataset.manifest {path}")
        return _MEMO[key]
