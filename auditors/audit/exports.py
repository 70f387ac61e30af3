"""Exports for reuse without re-running: regions.parquet (every region shape) and cams.npz.

regions.parquet has one row per image, region and shape, in ORIGINAL-image pixel coordinates
(the coordinates the user's files have, not the model input's): ``polygon`` is a flat
[x0, y0, x1, y1, ...] list, ``x0..y1`` its bounding box, ``score`` the detector score (text),
``text``/``text_score`` the read string where recognition is on. Raster regions (user masks,
GrabCut) give one ``kind = "mask"`` row with the mask's bounding box. ``complement = True``
marks a background: the region is the image MINUS these shapes. A region that could not be
built gives one row with ``error`` set; an empty region gives no row.

cams.npz is a plain NumPy zip (no pickle: ``np.load(path)`` works with allow_pickle=False).
Chunks write part files; :func:`merge_cams` copies their members into one zip without decoding.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from auditors.audit.run_folder import RunFolder
from auditors.audit.variants import target_columns
from auditors.config.schema import AuditConfig
from auditors.regions import Region
from auditors.regions.build import region_names

__all__ = ["REGION_SCHEMA", "region_rows", "write_regions_part", "merge_regions", "write_cams_part", "merge_cams"]

REGION_SCHEMA = pa.schema([
    ("path", pa.string()), ("region", pa.string()), ("shape", pa.int64()), ("kind", pa.string()),
    ("complement", pa.bool_()), ("polygon", pa.list_(pa.float64())),
    ("x0", pa.float64()), ("y0", pa.float64()), ("x1", pa.float64()), ("y1", pa.float64()),
    ("score", pa.float64()), ("text", pa.string()), ("text_score", pa.float64()), ("error", pa.string()),
])


def _num(v: Any) -> float | None:
    return None if v is None or not np.isfinite(float(v)) else float(v)


def region_rows(path: str, regions: dict[str, Region], height: int, width: int) -> list[dict[str, Any]]:
    """regions.parquet rows of one image (``height``/``width``: the original image's size)."""
    rows: list[dict[str, Any]] = []
    for name, reg in regions.items():
        base = {"path": path, "region": name, "complement": bool(reg.complement)}
        if reg.is_failed:
            rows.append({**base, "shape": 0, "kind": "failed", "error": reg.error})
            continue
        for k, poly in enumerate(reg.polygons):
            pts = np.asarray(poly, float).reshape(-1, 2)
            rows.append({
                **base, "shape": k, "kind": "polygon", "polygon": pts.ravel().tolist(),
                "x0": float(pts[:, 0].min()), "y0": float(pts[:, 1].min()), "x1": float(pts[:, 0].max()), "y1": float(pts[:, 1].max()),
                "score": _num(reg.scores[k]) if k < len(reg.scores) else None,
                "text": reg.texts[k] if reg.texts is not None and k < len(reg.texts) else None,
                "text_score": _num(reg.text_scores[k]) if reg.text_scores is not None and k < len(reg.text_scores) else None,
            })
        if reg.mask is not None and reg.mask.any():
            ys, xs = np.nonzero(reg.mask)
            sy, sx = height / reg.mask.shape[0], width / reg.mask.shape[1]  # a low-res mask spans the whole image
            rows.append({
                **base, "shape": len(reg.polygons), "kind": "mask",
                "x0": float(xs.min() * sx), "y0": float(ys.min() * sy), "x1": float((xs.max() + 1) * sx), "y1": float((ys.max() + 1) * sy),
            })
    return rows


def _atomic_table(path: Path, table: pa.Table) -> Path:
    tmp = path.with_suffix(".tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)
    return path


def write_regions_part(parts: Path, index: int, rows: list[dict[str, Any]]) -> Path:
    return _atomic_table(parts / f"regions-{index:06d}.parquet", pa.Table.from_pylist(rows, schema=REGION_SCHEMA))


def merge_regions(parts: Path, dest: Path) -> int:
    """Concatenate the region part files into ``dest`` (written even when empty); returns rows."""
    files = sorted(parts.glob("regions-*.parquet")) if parts.is_dir() else []
    n = 0
    tmp = dest.with_suffix(".tmp")
    with pq.ParquetWriter(tmp, REGION_SCHEMA) as writer:
        for f in files:
            table = pq.read_table(f).cast(REGION_SCHEMA)
            writer.write_table(table)
            n += table.num_rows
    os.replace(tmp, dest)
    for f in files:
        f.unlink()
    return n


def write_cams_part(parts: Path, index: int, maps: dict[str, np.ndarray]) -> Path:
    path = parts / f"cams-{index:06d}.npz"
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        np.savez(fh, **maps)
    os.replace(tmp, path)
    return path


def merge_cams(parts: Path, dest: Path) -> int:
    """One cams.npz from the chunk parts (members copied, not re-encoded); returns the map count."""
    files = sorted(parts.glob("cams-*.npz")) if parts.is_dir() else []
    n = 0
    tmp = dest.with_name(dest.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as out:
        seen: set[str] = set()
        for f in files:
            with zipfile.ZipFile(f) as part:
                for info in part.infolist():
                    if info.filename in seen:  # a path audited twice (retried chunk): first copy wins
                        continue
                    seen.add(info.filename)
                    out.writestr(info, part.read(info.filename))
                    n += 1
    os.replace(tmp, dest)
    for f in files:
        f.unlink()
    return n


def write_chunk_exports(parts: Path, index: int, result: Any, write_part: Callable[..., Path]) -> None:
    """Stream one chunk's exports to part files (``result``: a ChunkResult; ``write_part``: RunFolder.write_part)."""
    write_regions_part(parts, index, result.regions)
    if result.targets is not None:
        write_part(index, result.targets, kind="targets")
    if result.cams:
        write_cams_part(parts, index, result.cams)


def merge_exports(cfg: AuditConfig, folder: RunFolder) -> None:
    """regions.parquet always; targets.parquet for cam.target: topk; cams.npz for output.save_cams."""
    merge_regions(folder.parts, folder.dir / "regions.parquet")
    if cfg.cam.target == "topk":
        empty = pd.DataFrame({c: pd.Series(dtype=t) for c, t in target_columns(cfg, region_names(cfg)).items()})
        folder.merge_parts(empty, kind="targets", dest=folder.dir / "targets.parquet")
    if cfg.output.save_cams:
        merge_cams(folder.parts, folder.dir / "cams.npz")
