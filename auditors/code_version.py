"""What a stored result was computed with: camaudit's source files and library versions.

Stores keyed by content (per-image rows, token comparisons) must miss when the code that
computed them changes; both hash the same way, here.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
from collections.abc import Iterable
from pathlib import Path

import auditors

__all__ = ["PACKAGE_ROOT", "sources_digest", "library_versions"]

#: The ``auditors`` package folder; source paths are relative to it.
PACKAGE_ROOT = Path(auditors.__file__).parent


def sources_digest(relative_paths: Iterable[str], root: Path | None = None) -> str:
    """Hash of each file's path and bytes, in the order given."""
    root = root or PACKAGE_ROOT
    h = hashlib.blake2b(digest_size=16)
    for rel in relative_paths:
        h.update(rel.encode() + b"\0" + (root / rel).read_bytes() + b"\0")
    return h.hexdigest()


def library_versions(names: Iterable[str]) -> dict[str, str]:
    """Installed version of each distribution ("absent" when it is not installed)."""
    out = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "absent"
    return out
