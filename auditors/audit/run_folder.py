"""The run folder and its files: the output contract lives here.

``<output.dir>/<name>/<run-id>/`` holds report.html, images.parquet, errors.csv,
validation.json and summary.json. Per-image rows are streamed to ``parts/`` as chunks finish
and merged at the end, so a crash loses at most the chunks in flight.
"""

from __future__ import annotations

import json
import math
import os
import secrets
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from auditors.data.discovery import ERROR_COLUMNS

if TYPE_CHECKING:
    from auditors.config.schema import AuditConfig

__all__ = ["new_run_id", "RunFolder", "write_json", "json_safe", "cache_dir_for"]


def cache_dir_for(cfg: AuditConfig) -> Path:
    """``output.cache_dir``, else the user's cache folder: per-image results, regions, validations."""
    if cfg.output.cache_dir:
        return Path(cfg.output.cache_dir)
    import platformdirs

    return Path(platformdirs.user_cache_dir("camaudit"))


def new_run_id(now: datetime | None = None) -> str:
    """Sortable, unique run id: UTC timestamp plus 4 random hex digits."""
    now = now or datetime.now(timezone.utc)
    return now.strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(2)


def json_safe(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalars
        return json_safe(obj.item())
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_json(path: Path, data: Any) -> None:
    """Write strict JSON (NaN/inf become null) atomically."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(json_safe(data), indent=2, allow_nan=False), encoding="utf-8")
    os.replace(tmp, path)


class RunFolder:
    """Paths of one audit run and the streaming writers for its tables."""

    def __init__(self, base: Path, name: str, run_id: str):
        self.dir = Path(base) / name / run_id
        self.parts = self.dir / "parts"
        self.parts.mkdir(parents=True, exist_ok=True)

    @property
    def images(self) -> Path:
        return self.dir / "images.parquet"

    @property
    def instances(self) -> Path:
        return self.dir / "text_instances.parquet"

    @property
    def errors(self) -> Path:
        return self.dir / "errors.csv"

    @property
    def failures(self) -> Path:
        return self.dir / "failures.parquet"

    @property
    def summary(self) -> Path:
        return self.dir / "summary.json"

    @property
    def validation(self) -> Path:
        return self.dir / "validation.json"

    @property
    def report(self) -> Path:
        return self.dir / "report.html"

    def write_part(self, index: int, rows: pd.DataFrame, kind: str = "chunk") -> Path:
        return self.write_table(rows, self.parts / f"{kind}-{index:06d}.parquet")

    @staticmethod
    def write_table(rows: pd.DataFrame, path: Path) -> Path:
        """Write a Parquet table under a temporary name, then rename: never half-written at ``path``."""
        tmp = path.with_suffix(".tmp")
        rows.to_parquet(tmp, index=False)
        os.replace(tmp, path)
        return path

    def merge_parts(self, empty: pd.DataFrame, kind: str = "chunk", dest: Path | None = None) -> int:
        """Concatenate ``kind`` part files into ``dest`` (default images.parquet) one part at a time.

        Returns the row count. The parts folder goes once every kind has been merged.
        """
        dest = dest or self.images
        parts = sorted(self.parts.glob(f"{kind}-*.parquet"))
        schema = pa.Schema.from_pandas(empty, preserve_index=False)
        n = 0
        tmp = dest.with_suffix(".tmp")
        with pq.ParquetWriter(tmp, schema) as writer:
            for p in parts:
                table = pq.read_table(p).select(schema.names).cast(schema)
                writer.write_table(table)
                n += table.num_rows
        os.replace(tmp, dest)
        for p in parts:
            p.unlink()
        if self.parts.is_dir() and not any(self.parts.iterdir()):
            self.parts.rmdir()
        return n

    def write_errors(self, errors: Iterable[dict[str, str]]) -> pd.DataFrame:
        df = pd.DataFrame(list(errors), columns=ERROR_COLUMNS)
        tmp = self.errors.with_suffix(".csv.tmp")
        df.to_csv(tmp, index=False)
        os.replace(tmp, self.errors)
        return df
