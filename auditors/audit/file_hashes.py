"""Content hashes of the dataset's files, remembered with each file's stat.

Why: a per-image result is keyed by the image's content hash, so deciding what to reuse read
every byte of the dataset every night; at 1M images that read, not the model, was the cost of
an unchanged night. As in git's index, a hash is stored with the file's stat (device, inode,
size, mtime and ctime in ns) and trusted while all of them match. Users cannot set ctime
(``touch -d`` or a copy that keeps mtime still moves it), so an edited file is always read again.
A file changed shortly before its hash was taken could change once more within the same
timestamp tick without its stat moving: such a hash is not trusted (git's "racy" rule, with
:data:`RACY_NS` of margin for coarse file-system clocks) and the file is read again next time.

Stored in ``<cache_dir>/file_hashes.sqlite`` (the verified JSON-in-SQLite store the other
caches use; one row per absolute path).
"""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path
from typing import Any

from auditors.data.decoding import content_hash
from auditors.regions.cache import RegionCache
from auditors.safe_io import MAX_IMAGE_BYTES, UnsafeFile, read_regular_file

__all__ = ["FileHashes", "RACY_NS", "HASH_MEMO_FORMAT"]

HASH_MEMO_FORMAT = "file-hash:1"
#: A file whose mtime or ctime is this close to the moment it was hashed is read again next time
#: (FAT keeps 2 s mtimes; ext4, XFS and APFS keep ns).
RACY_NS = 2_000_000_000


def _stamp(st: os.stat_result) -> list[int]:
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def _trusted(memo: Any, st: os.stat_result) -> str | None:
    """The remembered hash when the memo is well-formed, the stat matches and it is not racy."""
    if not isinstance(memo, dict) or memo.get("stat") != _stamp(st):
        return None
    digest, seen = memo.get("hash"), memo.get("seen_ns")
    if not isinstance(digest, str) or not isinstance(seen, int):
        return None
    return digest if max(st.st_mtime_ns, st.st_ctime_ns) < seen - RACY_NS else None


class FileHashes:
    """``hashes(paths)`` -> content hash per path (None: not a readable regular image file;
    the decoder records why). ``store=None`` keeps no memory; ``read=False`` trusts none of it
    (``run.cache: false``) but still records what it reads."""

    def __init__(self, store: Path | None, read: bool = True):
        self._db = RegionCache(store) if store is not None else None
        self.read_memo = read
        self.files_read = 0  # hashed from their bytes in this call's lifetime
        self.files_remembered = 0  # served from the memo, no byte read

    def hashes(self, paths: list[Path]) -> dict[Path, str | None]:
        out: dict[Path, str | None] = {}
        stats: dict[Path, os.stat_result] = {}
        for p in paths:
            try:
                st = os.stat(p)
            except OSError:
                out[p] = None
                continue
            if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_IMAGE_BYTES:
                out[p] = None  # a FIFO, device or oversized file: never read here
                continue
            stats[p] = st
        keys = {p: str(p.absolute()) for p in stats}
        memo = self._db.get_many(list(keys.values()), HASH_MEMO_FORMAT) if self._db is not None and self.read_memo else {}
        learned: dict[str, dict[str, Any]] = {}
        for p, st in stats.items():
            known = _trusted(memo.get(keys[p]), st)
            if known is not None:
                out[p] = known
                self.files_remembered += 1
                continue
            seen = time.time_ns()  # taken before the read: a write during the read is then racy
            try:
                digest = content_hash(read_regular_file(p, MAX_IMAGE_BYTES))
            except UnsafeFile:
                out[p] = None
                continue
            out[p] = digest
            self.files_read += 1
            try:
                unchanged = _stamp(os.stat(p)) == _stamp(st)
            except OSError:
                unchanged = False
            if unchanged:  # remembered only when nothing moved while it was read
                learned[keys[p]] = {"stat": _stamp(st), "hash": digest, "seen_ns": seen}
        if learned and self._db is not None:
            self._db.put_many(learned, HASH_MEMO_FORMAT)
        return out

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
