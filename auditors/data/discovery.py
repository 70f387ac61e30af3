"""Dataset discovery: ImageFolder trees or manifests become a list of (path, label) entries.

Discovery only lists files; decoding happens per chunk (see ``auditors.data.decoding``), so a
100k-image dataset costs a list of strings here, never pixels.
"""

from __future__ import annotations

import csv
import errno
import io
import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from auditors.config.schema import DatasetConfig
from auditors.safe_io import UnsafeFile, file_kind, read_regular_file
from auditors.errors import ConfigError

__all__ = ["Entry", "DatasetIndex", "discover", "chunked", "ERROR_COLUMNS"]

ERROR_COLUMNS = ["path", "stage", "reason"]


@dataclass(frozen=True)
class Entry:
    """One image to audit. ``path`` is relative to the dataset root; ``label`` may be None."""

    path: str
    label: str | None


@dataclass
class DatasetIndex:
    root: Path
    entries: list[Entry]
    classes: list[str]
    labelled: bool
    errors: list[dict[str, str]] = field(default_factory=list)
    manifest: pd.DataFrame | None = None

    def __len__(self) -> int:
        return len(self.entries)


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def _shown(rel: str) -> str:
    """A name safe to write to CSV/Parquet/HTML: undecodable bytes become backslash escapes."""
    return os.fsencode(rel).decode("utf-8", "backslashreplace")


def _odd_entry(path: Path) -> str | None:
    """Why ``path`` (found while walking) cannot be an image file, or None when it is a regular file.

    Special files, symlink loops and dangling links used to be skipped without a trace; each
    now gets a reason that goes to errors.csv (stage discover).
    """
    try:
        st = path.stat()  # follows symlinks
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "symlink loop (too many levels of symbolic links)"
        if exc.errno == errno.ENOENT and path.is_symlink():
            return f"dangling symlink (target {os.readlink(path)!r} does not exist)"
        return f"cannot inspect file ({exc.strerror or exc})"
    if stat.S_ISREG(st.st_mode):
        return None
    return f"not a regular file ({file_kind(st.st_mode)})"


def _walk_image_folder(root: Path, extensions: Sequence[str]) -> tuple[list[Entry], list[str], list[dict]]:
    errors: list[dict] = []
    class_dirs = []
    for d in sorted(root.iterdir()):
        if _is_hidden(d.name):
            continue
        if d.is_dir():
            class_dirs.append(d)
        elif (why := _odd_entry(d)) is not None:
            errors.append({"path": _shown(d.name), "stage": "discover", "reason": why})
    if not class_dirs:
        raise ConfigError(f"dataset.root {root}: no class sub-folders (ImageFolder layout expected)")
    exts = {e.lower() for e in extensions}
    entries: list[Entry] = []
    for d in class_dirs:
        # os.walk does not follow symlinked folders (no loops, no escapes); they are recorded.
        for here, dirs, files in os.walk(d, followlinks=False):
            dirs[:] = sorted(x for x in dirs if not _is_hidden(x))
            base = Path(here)
            for name in sorted(dirs):
                if (base / name).is_symlink():
                    rel = (base / name).relative_to(root).as_posix()
                    errors.append({"path": _shown(rel), "stage": "discover", "reason": "symlinked folder (not followed)"})
            for name in sorted(files):
                if _is_hidden(name):
                    continue
                f = base / name
                rel = f.relative_to(root).as_posix()
                why = _odd_entry(f)
                if why is None and f.suffix.lower() not in exts:
                    why = f"not an image file (suffix {f.suffix or 'none'!r})"
                if why is None and _shown(rel) != rel:
                    why = "file name is not valid UTF-8 (rename the file)"
                if why is not None:
                    errors.append({"path": _shown(rel), "stage": "discover", "reason": why})
                    continue
                entries.append(Entry(rel, d.name))
    return entries, [d.name for d in class_dirs], errors


#: A manifest of 10 million rows is ~1 GB of CSV; larger files are refused before reading.
MAX_MANIFEST_BYTES = 2 * 1024**3


def _read_manifest(path: Path) -> pd.DataFrame:
    if path.suffix.lower() not in (".parquet", ".pq", ".csv", ".tsv"):
        raise ConfigError(f"dataset.manifest {path}: expected .csv, .tsv or .parquet")
    try:  # a FIFO or device named as the manifest must not hang the run
        data = read_regular_file(path, MAX_MANIFEST_BYTES)
    except UnsafeFile as exc:
        raise ConfigError(f"dataset.manifest {path}: {exc.reason}") from None
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            df = pd.read_parquet(io.BytesIO(data))
        else:
            df = pd.read_csv(io.BytesIO(data), sep="\t" if path.suffix.lower() == ".tsv" else ",", dtype={"path": str})
    except ConfigError:
        raise
    except Exception as exc:  # pandas raises many types for bad files
        raise ConfigError(f"dataset.manifest {path}: cannot read ({exc})") from None
    if "path" not in df.columns:
        raise ConfigError(f"dataset.manifest {path}: missing required column 'path' (has {list(df.columns)})")
    header = [str(c) for c in df.columns]
    if path.suffix.lower() in (".csv", ".tsv"):  # pandas renames a repeated column to "label.1"
        first = data.split(b"\n", 1)[0].decode("utf-8", "replace").lstrip("\ufeff")
        header = next(csv.reader([first], delimiter="\t" if path.suffix.lower() == ".tsv" else ","), [])
    dup = sorted({c for c in header if header.count(c) > 1})
    if dup:
        raise ConfigError(f"dataset.manifest {path}: duplicate column(s) {dup}")
    return df


def discover(cfg: DatasetConfig, classes: list[str] | None = None) -> DatasetIndex:
    """List the dataset's images and labels; record (not raise) per-file problems.

    ``classes`` (from the model config) fixes the index -> name mapping; labels outside it
    are recorded as errors. Without it, ImageFolder's sorted folder names (or the manifest's
    sorted labels) are used.
    """
    root = Path(cfg.root)
    if not root.is_dir():
        raise ConfigError(f"dataset.root: folder not found: {root}")
    errors: list[dict] = []
    manifest_df: pd.DataFrame | None = None
    if cfg.manifest is not None:
        manifest_df = _read_manifest(Path(cfg.manifest))
        labelled = "label" in manifest_df.columns
        entries = []
        seen: set[str] = set()
        for i, row in enumerate(manifest_df.itertuples(index=False)):
            p = getattr(row, "path")
            if not isinstance(p, str) or not p.strip():
                what = "empty path" if p is None or isinstance(p, str) or (isinstance(p, float) and pd.isna(p)) else f"path is not text ({type(p).__name__})"
                errors.append({"path": f"<manifest row {i}>", "stage": "discover", "reason": what})
                continue
            if "\x00" in p:
                errors.append({"path": f"<manifest row {i}>", "stage": "discover", "reason": "path contains a NUL byte"})
                continue
            if p.strip() in seen:
                errors.append({"path": p.strip(), "stage": "discover", "reason": f"listed twice in the manifest (row {i}; first kept)"})
                continue
            seen.add(p.strip())
            label = getattr(row, "label") if labelled else None
            label = None if label is None or (isinstance(label, float) and pd.isna(label)) else str(label)
            entries.append(Entry(p.strip(), label))
        found_classes = sorted({e.label for e in entries if e.label is not None})
    else:
        entries, found_classes, errors = _walk_image_folder(root, cfg.extensions)
        labelled = True
    class_names = list(classes) if classes else found_classes
    if labelled:
        known = set(class_names)
        kept = []
        for e in entries:
            if e.label is None:
                errors.append({"path": e.path, "stage": "discover", "reason": "missing label"})
            elif e.label not in known:
                errors.append({"path": e.path, "stage": "discover", "reason": f"unknown label {e.label!r} (not in model classes)"})
            else:
                kept.append(e)
        entries = kept
    # Paths must stay inside root: a manifest must not read /etc/passwd via ../../
    safe = []
    root_resolved = root.resolve()
    for e in entries:
        try:
            full = (root / e.path).resolve()
        except (RuntimeError, OSError, ValueError) as exc:  # 3.11: RuntimeError on a symlink loop
            reason = "symlink loop (too many levels of symbolic links)" if "loop" in str(exc).lower() else f"cannot resolve path ({exc})"
            errors.append({"path": e.path, "stage": "discover", "reason": reason})
            continue
        if root_resolved not in full.parents and full != root_resolved:
            errors.append({"path": e.path, "stage": "discover", "reason": "path escapes dataset.root"})
        else:
            safe.append(e)
    entries = safe
    if cfg.limit is not None:
        entries = entries[: cfg.limit]
    return DatasetIndex(root=root, entries=entries, classes=class_names, labelled=labelled, errors=errors, manifest=manifest_df)


def chunked(entries: Sequence[Entry], size: int) -> Iterator[list[Entry]]:
    """Consecutive chunks of ``size`` entries (the unit of caching, retry and distribution)."""
    for start in range(0, len(entries), size):
        yield list(entries[start : start + size])
