"""Crash-safe, multi-process store of detected regions, keyed by image content and detector settings.

Text regions depend on the pixels and the detector only, never on the audited model, so a
second audit of the same dataset (another model, another CAM method) runs no OCR at all.

Safety, and why:
- SQLite in WAL mode, one transaction per batch: a killed run loses at worst the batch it
  was writing, never the file; readers never block the writer.
- Several processes (Dask workers, two audits) may share the file: SQLite's locks serialise
  writes; a busy timeout plus a retry loop rides out long write bursts.
- A connection is never used across ``fork``: each process opens its own.
- A file that is not a database (truncated copy, disk error) is moved aside and rebuilt,
  and an entry that does not decode counts as a miss: the cache can cost work, never a run.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

__all__ = ["RegionCache"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS regions (
    image_hash TEXT NOT NULL,
    settings TEXT NOT NULL,
    payload TEXT NOT NULL,
    PRIMARY KEY (image_hash, settings)
)
"""
_T = TypeVar("_T")


class RegionCache:
    """Map (image content hash, settings key) -> JSON-able payload dict."""

    def __init__(self, path: Path | str, timeout: float = 60.0):
        self.path = Path(path)
        self.timeout = timeout
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._pid = -1
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._connection()  # fail early (unwritable dir) and repair a corrupt file now

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(str(self.path), check_same_thread=False, timeout=self.timeout)
        conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":  # e.g. a file system without shared memory: still safe, slower
            conn.execute("PRAGMA journal_mode=DELETE")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(_SCHEMA)
        conn.commit()
        return conn

    def _connection(self) -> sqlite3.Connection:
        """This process's connection (re-opened after fork; rebuilt when the file is corrupt)."""
        if self._conn is not None and self._pid == os.getpid():
            return self._conn
        try:
            conn = self._retry(self._open)
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError):
                raise
            aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
            warnings.warn(f"region cache {self.path} is unreadable ({exc}); moved to {aside.name}, starting empty", stacklevel=3)
            for suffix in ("", "-wal", "-shm"):
                f = Path(str(self.path) + suffix)
                if f.exists():
                    f.replace(Path(str(aside) + suffix))
            conn = self._retry(self._open)
        self._conn, self._pid = conn, os.getpid()
        return conn

    def _retry(self, fn: Callable[[], _T]) -> _T:
        """Run ``fn``, retrying 'database is locked' for up to ``timeout`` seconds."""
        deadline = time.monotonic() + self.timeout
        delay = 0.05
        while True:
            try:
                return fn()
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 1.0)

    def get_many(self, keys: list[str], settings: str) -> dict[str, dict[str, Any]]:
        """Cached payloads among ``keys`` (missing or undecodable keys are absent)."""
        found: dict[str, dict[str, Any]] = {}
        unique = list(dict.fromkeys(keys))
        with self._lock:
            conn = self._connection()
            for start in range(0, len(unique), 500):
                part = unique[start : start + 500]
                marks = ",".join("?" * len(part))
                sql = f"SELECT image_hash, payload FROM regions WHERE settings = ? AND image_hash IN ({marks})"
                rows = self._retry(lambda: conn.execute(sql, [settings, *part]).fetchall())  # noqa: B023
                for image_hash, payload in rows:
                    try:
                        data = json.loads(payload)
                    except ValueError:
                        continue
                    if isinstance(data, dict):
                        found[image_hash] = data
        return found

    def put_many(self, items: dict[str, dict[str, Any]], settings: str) -> None:
        """Store payloads in one transaction (all or nothing)."""
        rows = [(key, settings, json.dumps(payload, separators=(",", ":"))) for key, payload in items.items()]
        if not rows:
            return

        def write() -> None:
            with conn:  # commits, or rolls back on error
                conn.executemany("INSERT OR REPLACE INTO regions VALUES (?, ?, ?)", rows)

        with self._lock:
            conn = self._connection()
            self._retry(write)

    def __len__(self) -> int:
        with self._lock:
            conn = self._connection()
            return self._retry(lambda: conn.execute("SELECT COUNT(*) FROM regions").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None

    def __getstate__(self) -> dict[str, Any]:
        """Pickle as a path (Prefect/Dask ship objects between processes; connections don't travel)."""
        return {"path": self.path, "timeout": self.timeout}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"], state["timeout"])
