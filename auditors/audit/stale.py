"""Which run folders are alive: a lock held for a run's lifetime, and a sweep of dead runs' parts.

A run streams rows to ``<run>/parts/`` and merges them at the end. A run killed before the
merge (SIGKILL, OOM killer, power loss) leaves ``parts/`` behind forever. Each run therefore
holds an exclusive ``flock`` on ``<run>/.running`` while it works; the kernel drops the lock
when the process dies, however it dies. The next run of the same audit name removes the
``parts/`` of every folder whose lock is free, so concurrent runs never lose each other's parts.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import time
from pathlib import Path

from auditors.errors import ConfigError

__all__ = ["RunLock", "hold_run_lock", "sweep_stale_parts", "release_all", "ensure_dir"]

LOCK_NAME = ".running"
#: Folders from before run locks existed (no .running file) count as dead after this long.
LEGACY_AGE_S = 3600.0

_HELD: list["RunLock"] = []


class RunLock:
    """An exclusive lock on one run folder, released by :meth:`release` or by process death."""

    def __init__(self, run_dir: Path, fd: int):
        self.run_dir = run_dir
        self._fd: int | None = fd

    def release(self, remove_parts: bool = False) -> None:
        """Drop the lock (and the lock file); with ``remove_parts`` also this run's ``parts/``."""
        if self._fd is None:
            return
        if remove_parts:
            shutil.rmtree(self.run_dir / "parts", ignore_errors=True)
        try:
            (self.run_dir / LOCK_NAME).unlink(missing_ok=True)
        finally:
            os.close(self._fd)
            self._fd = None
            if self in _HELD:
                _HELD.remove(self)


def hold_run_lock(run_dir: Path) -> RunLock:
    """Create ``run_dir`` and lock it for this process (ConfigError when the folder cannot be made)."""
    run_dir = Path(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(run_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise ConfigError(f"output.dir: cannot create the run folder {run_dir} ({exc.strerror or exc})") from None
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a fresh run id: nobody else holds it
    lock = RunLock(run_dir, fd)
    _HELD.append(lock)
    return lock


def _is_dead(run_dir: Path, now: float) -> bool:
    lock_file = run_dir / LOCK_NAME
    if not lock_file.exists():
        try:
            return now - run_dir.stat().st_mtime > LEGACY_AGE_S
        except OSError:
            return False
    try:
        fd = os.open(lock_file, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False  # held: that run is alive
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return True
    finally:
        os.close(fd)


def sweep_stale_parts(audit_dir: Path) -> list[Path]:
    """Remove ``parts/`` (and the stale lock file) of dead runs under ``<output.dir>/<name>/``."""
    audit_dir = Path(audit_dir)
    removed: list[Path] = []
    if not audit_dir.is_dir():
        return removed
    now = time.time()
    for run_dir in sorted(p for p in audit_dir.iterdir() if p.is_dir() and not p.is_symlink()):
        parts = run_dir / "parts"
        if (parts.is_dir() and not parts.is_symlink() or (run_dir / LOCK_NAME).exists()) and _is_dead(run_dir, now):
            shutil.rmtree(parts, ignore_errors=True)
            (run_dir / LOCK_NAME).unlink(missing_ok=True)
            removed.append(parts)
    return removed


def release_all(remove_parts: bool) -> None:
    """Release every lock this process holds (used on SIGTERM/SIGINT before exiting)."""
    for lock in list(_HELD):
        lock.release(remove_parts=remove_parts)


def ensure_dir(path: Path, key: str) -> Path:
    """Create folder ``path`` or raise a ConfigError naming ``key`` (a file in the way, no permission)."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        if not os.access(path, os.W_OK | os.X_OK):
            raise PermissionError(errno.EACCES, "not writable")
    except OSError as exc:
        raise ConfigError(f"{key}: cannot use {path} as a folder ({exc.strerror or exc})") from None
    return path
