"""The chunk cache of older camaudit versions: ``<cache_dir>/prefect-results``, removed once.

Before per-image results (:mod:`auditors.audit.result_cache`), chunk results were Prefect-persisted
cloudpickle files in that folder. Nothing reads them any more (they were keyed by chunk, and
reading a pickle runs code), yet on a nightly audit they grew without bound. A run removes the
folder, but only when every entry in it is a regular file that Prefect wrote as a result record
for a key in that very folder: a symlink, a subfolder or any other file (something a user put
there) leaves the whole folder in place, with the reason.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path

__all__ = ["LEGACY_RESULTS", "LegacyCleanup", "remove_legacy_results"]

#: The folder name older versions passed as ``result_storage`` (a ``cache_dir`` child).
LEGACY_RESULTS = "prefect-results"
_HEAD = 4096  # a result record starts with its metadata; the pickled payload follows


@dataclass(frozen=True)
class LegacyCleanup:
    """What :func:`remove_legacy_results` did: ``removed`` files (``bytes`` in all), or why not."""

    path: Path
    removed: int = 0
    bytes: int = 0
    kept_because: str | None = None

    def message(self) -> str:
        if self.kept_because is not None:
            return (f"left the old camaudit chunk cache {self.path} in place: {self.kept_because}; "
                    "it is no longer used, remove it by hand if it is not yours")
        return (f"removed the old camaudit chunk cache {self.path} ({self.removed} Prefect result files, "
                f"{self.bytes / 1e6:.1f} MB): results are now stored per image in results.sqlite")


def _is_result_record(path: Path) -> bool:
    """Prefect 3's persisted result: ``{"metadata": {"storage_key": <this file>, "serializer": ...}, ...}``."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(_HEAD)
    except OSError:
        return False
    marker = b'{"metadata":{"storage_key":'
    if not head.startswith(marker):
        return False
    try:  # the storage key is the first JSON string after the marker
        key, _ = json.JSONDecoder().raw_decode(head[len(marker):].decode("utf-8", errors="replace"))
    except ValueError:
        return False
    return isinstance(key, str) and Path(key).name == path.name and b'"serializer":' in head


def remove_legacy_results(cache_dir: Path) -> LegacyCleanup | None:
    """Remove ``cache_dir/prefect-results`` when it holds only Prefect result records; None when absent."""
    folder = Path(cache_dir) / LEGACY_RESULTS
    try:
        st = os.lstat(folder)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return LegacyCleanup(folder, kept_because=f"cannot inspect it ({exc.strerror or exc})")
    if not stat.S_ISDIR(st.st_mode):
        return LegacyCleanup(folder, kept_because="it is not a folder (a link or a file)")
    files: list[tuple[Path, int]] = []
    try:
        entries = list(os.scandir(folder))
    except OSError as exc:
        return LegacyCleanup(folder, kept_because=f"cannot list it ({exc.strerror or exc})")
    for entry in sorted(entries, key=lambda e: e.name):
        path = Path(entry.path)
        if not entry.is_file(follow_symlinks=False):
            return LegacyCleanup(folder, kept_because=f"{path.name} is not a regular file")
        if not _is_result_record(path):
            return LegacyCleanup(folder, kept_because=f"{path.name} is not a Prefect result record")
        files.append((path, entry.stat(follow_symlinks=False).st_size))
    try:  # only the files checked above: anything added meanwhile makes rmdir fail and stays
        for path, _ in files:
            path.unlink()
        folder.rmdir()
    except OSError as exc:
        return LegacyCleanup(folder, kept_because=f"could not remove it ({exc.strerror or exc})")
    return LegacyCleanup(folder, removed=len(files), bytes=sum(n for _, n in files))
