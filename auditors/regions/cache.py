"""Crash-safe store of detected regions, keyed by image content and detector settings.

Text regions depend on the pixels and the detector only, never on the audited model, so a
second audit of the same dataset (another model, another CAM method) runs no OCR at all.
SQLite in WAL mode: a killed run leaves at worst its last uncommitted batch missing.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

import numpy as np

__all__ = ["RegionCache"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS regions (
    image_hash TEXT NOT NULL,
    settings TEXT NOT NULL,
    payload TEXT NOT NULL,
    PRIMARY KEY (image_hash, settings)
)
"""


class RegionCache:
    """Map (image content hash, settings key) -> list of polygons and scores."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(str(self.path), check_same_thread=False, timeout=30)
        with self._lock:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute(_SCHEMA)
            self._conn.commit()

    def get_many(self, keys: list[str], settings: str) -> dict[str, tuple[list[np.ndarray], list[float]]]:
        """Cached entries among ``keys`` (missing keys are absent from the result)."""
        found: dict[str, tuple[list[np.ndarray], list[float]]] = {}
        with self._lock:
            for start in range(0, len(keys), 500):
                part = keys[start : start + 500]
                marks = ",".join("?" * len(part))
                rows = self._conn.execute(
                    f"SELECT image_hash, payload FROM regions WHERE settings = ? AND image_hash IN ({marks})",
                    [settings, *part],
                ).fetchall()
                for image_hash, payload in rows:
                    data = json.loads(payload)
                    polys = [np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in data["polygons"]]
                    found[image_hash] = (polys, [float(s) for s in data["scores"]])
        return found

    def put_many(self, items: dict[str, tuple[list[np.ndarray], list[float]]], settings: str) -> None:
        rows = [
            (
                key,
                settings,
                json.dumps({"polygons": [np.asarray(p).round(2).tolist() for p in polys], "scores": [float(s) for s in scores]}),
            )
            for key, (polys, scores) in items.items()
        ]
        with self._lock:
            self._conn.executemany("INSERT OR REPLACE INTO regions VALUES (?, ?, ?)", rows)
            self._conn.commit()

    def __len__(self) -> int:
        with self._lock:
            return self._conn.execute("SELECT COUNT(*) FROM regions").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._conn.close()
