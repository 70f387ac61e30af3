"""Dataset discovery: ImageFolder trees or manifests become a list of (path, label) entries.

Discovery only lists files; decoding happens per chunk (see ``auditors.data.decoding``), so a
100k-image dataset costs a list of strings here, never pixels.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from auditors.config.schema import DatasetConfig
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


def _walk_image_folder(root: Path, extensions: Sequence[str]) -> tuple[list[Entry], list[str], list[dict]]:
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not _is_hidden(d.name))
    if not class_dirs:
        raise ConfigError(f"dataset.root {root}: no class sub-folders (ImageFolder layout expected)")
    exts = {e.lower() for e in extensions}
    entries: list[Entry] = []
    errors: list[dict] = []
    for d in class_dirs:
        for f in sorted(d.rglob("*")):
            if not f.is_file() or any(_is_hidden(p) for p in f.relative_to(root).parts):
                continue
            rel = f.relative_to(root).as_posix()
            if f.suffix.lower() not in exts:
                errors.append({"path": rel, "stage": "discover", "reason": f"not an image file (suffix {f.suffix or 'none'!r})"})
                continue
            entries.append(Entry(rel, d.name))
    return entries, [d.name for d in class_dirs], errors


def _read_manifest(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise ConfigError(f"dataset.manifest: file not found: {path}")
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            df = pd.read_parquet(path)
        elif path.suffix.lower() in (".csv", ".tsv"):
            df = pd.read_csv(path, sep="\t" if path.suffix.lower() == ".tsv" else ",", dtype={"path": str})
        else:
            raise ConfigError(f"dataset.manifest {path}: expected .csv, .tsv or .parquet")
    except ConfigError:
        raise
    except Exception as exc:  # pandas raises many types for bad files
        raise ConfigError(f"dataset.manifest {path}: cannot read ({exc})") from None
    if "path" not in df.columns:
        raise ConfigError(f"dataset.manifest {path}: missing required column 'path' (has {list(df.columns)})")
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
        for i, row in enumerate(manifest_df.itertuples(index=False)):
            p = getattr(row, "path")
            if not isinstance(p, str) or not p.strip():
                errors.append({"path": f"<manifest row {i}>", "stage": "discover", "reason": "empty path"})
                continue
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
        full = (root / e.path).resolve()
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
