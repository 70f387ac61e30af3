"""Aligned similarities of text-instance crops, remembered across runs.

The token stage groups every text instance of the dataset on every run, and the aligned
comparison of two crops (``tokens.visual.patch_similarity``: template matching at three
scales, both ways, block by block) is nearly all of its cost. A nightly audit of a growing
dataset compares almost the same candidate pairs every night, and a pair's similarity depends
on the two stored patches and the code that compares them only. So each computed similarity is
stored under both patches' digests and a version of that code; a later run reads it back
instead of comparing again. The grouping itself runs in full every time, on exactly the values
a fresh comparison gives (stored as float64, read back bit for bit), so tokens never depend on
what happened to be stored.

The store is the crash-safe SQLite store the text regions use (``regions.cache.RegionCache``):
WAL, one transaction per write, a corrupt file moved aside and rebuilt.
"""

from __future__ import annotations

import hashlib
import sqlite3
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from auditors.code_version import library_versions, sources_digest
from auditors.regions.cache import RegionCache

__all__ = ["PairSimilarities", "PairMemo", "open_pair_store", "similarity_version", "patch_digest"]

#: Source files whose code decides a pair's similarity (the comparison, and the patch layout).
_SIMILARITY_SOURCES = ("tokens/visual.py", "measure/instances.py")
_LIBRARIES = ("opencv-python-headless", "numpy")


def similarity_version() -> str:
    """Hash of the comparison's source and the libraries it calls: a change recomputes every pair."""
    libraries = library_versions(_LIBRARIES)
    parts = [sources_digest(_SIMILARITY_SOURCES)] + [f"{k}={v}" for k, v in libraries.items()]
    return hashlib.blake2b("\0".join(parts).encode(), digest_size=16).hexdigest()


def patch_digest(patch: str) -> str:
    """Digest of one stored patch (its base64 text, as in text_instances.parquet)."""
    return hashlib.blake2b(patch.encode("ascii", "replace"), digest_size=12).hexdigest()


class PairSimilarities:
    """``<cache_dir>/token_pairs.sqlite``: pair of patch digests -> similarity, per code version.

    Counts what one run reused and computed (``stats``) for summary.json's ``incremental``.
    """

    def __init__(self, path: Path | str, version: str | None = None):
        self.store = RegionCache(path)
        self.version = version or similarity_version()
        self.stats = {"token_pairs_reused": 0, "token_pairs_computed": 0}

    def get_many(self, keys: Sequence[str]) -> dict[str, float]:
        found = self.store.get_many(list(keys), self.version)
        return {k: float(v["s"]) for k, v in found.items() if isinstance(v.get("s"), (int, float))}

    def put_many(self, values: dict[str, float]) -> None:
        self.store.put_many({k: {"s": v} for k, v in values.items()}, self.version)


class PairMemo:
    """One grouping's view of the store: pairs are indices into its patches.

    ``prefetch`` reads many pairs in one query (the candidate pairs); ``get`` looks one up
    (pairs the linker samples); ``add`` keeps a new value; ``save`` writes them in one
    transaction at the end.
    """

    def __init__(self, store: PairSimilarities, patches: Sequence[str]):
        self.store = store
        self.digests = [patch_digest(p) for p in patches]
        self.known: dict[tuple[int, int], float] = {}
        self.looked: set[tuple[int, int]] = set()
        self.new: dict[str, float] = {}

    def _key(self, i: int, j: int) -> str:
        a, b = self.digests[i], self.digests[j]
        return f"{a}:{b}" if a <= b else f"{b}:{a}"

    def prefetch(self, pairs: np.ndarray) -> None:
        wanted = {(min(i, j), max(i, j)) for i, j in np.asarray(pairs, int).reshape(-1, 2).tolist()} - self.looked
        if not wanted:
            return
        by_key: dict[str, list[tuple[int, int]]] = {}
        for pair in wanted:
            by_key.setdefault(self._key(*pair), []).append(pair)
        for key, value in self.store.get_many(list(by_key)).items():
            for pair in by_key[key]:
                self.known[pair] = value
        self.looked |= wanted

    def get(self, i: int, j: int) -> float | None:
        pair = (min(i, j), max(i, j))
        if pair not in self.looked:
            self.prefetch(np.array([pair]))
        value = self.known.get(pair)
        if value is not None:
            self.store.stats["token_pairs_reused"] += 1
        return value

    def add(self, i: int, j: int, value: float) -> None:
        self.new[self._key(i, j)] = float(value)
        self.store.stats["token_pairs_computed"] += 1

    def save(self) -> None:
        """Write this grouping's new comparisons; a failed write (disk full, a locked or read-only
        store) costs the next run work, never this run its tokens."""
        if not self.new:
            return
        try:
            self.store.put_many(self.new)
        except (sqlite3.Error, OSError) as exc:
            warnings.warn(f"token pair store {self.store.store.path}: could not store {len(self.new)} comparisons "
                          f"({type(exc).__name__}: {exc}); the next run compares them again", stacklevel=2)
        self.new = {}


def open_pair_store(path: Path | str) -> PairSimilarities | None:
    """The store at ``path``, or None (with a warning) when it cannot be opened: the token stage
    then compares every pair, as without a cache."""
    try:
        return PairSimilarities(path)
    except (sqlite3.Error, OSError) as exc:
        warnings.warn(f"token pair store {path}: cannot be opened ({type(exc).__name__}: {exc}); comparing every pair",
                      stacklevel=2)
        return None
