"""COCO-style annotation files as a region source (``regions.expected.source: coco``).

The file is read once per process (memoised by size and modification time). Problems with the
file as a whole (not JSON, no ``images`` list, an annotation pointing at an unknown image id)
are :class:`ConfigError` naming the file and the problem: no image can be judged from it.
A problem with one annotation (a malformed bbox or polygon) only fails the regions of its image,
as a :class:`RegionFailure` naming the file, the annotation id and the problem; the run goes on.

Polygon segmentations are used as drawn; an annotation with only a bbox, or with an RLE
segmentation (which needs pycocotools to decode), uses its ``[x, y, w, h]`` box.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from auditors.data.geometry import clip_polygon, xywh_to_polygon
from auditors.errors import ConfigError
from auditors.regions.base import Region, RegionFailure

__all__ = ["CocoAnnotations", "CocoSource", "load_coco"]

_MEMO: dict[tuple, CocoAnnotations] = {}
_LOCK = threading.Lock()


@dataclass
class _Image:
    width: int | None
    height: int | None
    polygons: list[np.ndarray] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


@dataclass
class CocoAnnotations:
    """Polygons per ``file_name`` (POSIX, as written in the file), with per-image problems."""

    path: Path
    images: dict[str, _Image]
    by_basename: dict[str, list[str]]

    def lookup(self, image_path: str) -> _Image | None:
        """The entry for a dataset path: exact ``file_name`` match, else a unique basename match."""
        key = PurePosixPath(image_path.replace("\\", "/")).as_posix()
        if key in self.images:
            return self.images[key]
        names = self.by_basename.get(PurePosixPath(key).name, [])
        return self.images[names[0]] if len(names) == 1 else None


def _fail(path: Path, problem: str) -> ConfigError:
    return ConfigError(f"regions.expected.annotations {path}: {problem}")


def _segment_polygons(seg: Any, where: str) -> list[np.ndarray] | None:
    """Polygons of a COCO ``segmentation`` (list of flat [x1, y1, x2, y2, ...]); None for RLE/absent."""
    if seg is None or isinstance(seg, dict) or seg == []:
        return None
    if not isinstance(seg, list):
        raise ValueError(f"{where}: segmentation must be a list of polygons or an RLE object, got {type(seg).__name__}")
    out = []
    for k, flat in enumerate(seg):
        if not isinstance(flat, list) or len(flat) < 6 or len(flat) % 2:
            raise ValueError(f"{where}: segmentation polygon #{k} must be a flat list of at least 3 x, y pairs")
        try:
            pts = np.asarray([float(v) for v in flat], np.float64).reshape(-1, 2)
        except (TypeError, ValueError):
            raise ValueError(f"{where}: segmentation polygon #{k} has non-numeric values") from None
        if not np.isfinite(pts).all():
            raise ValueError(f"{where}: segmentation polygon #{k} has non-finite values")
        out.append(pts)
    return out


def _bbox_polygon(bbox: Any, where: str) -> np.ndarray:
    if not isinstance(bbox, list) or len(bbox) != 4:
        raise ValueError(f"{where}: bbox must be [x, y, w, h], got {bbox!r}"[:200])
    try:
        x, y, w, h = (float(v) for v in bbox)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: bbox has non-numeric values {bbox!r}") from None
    if not all(math.isfinite(v) for v in (x, y, w, h)) or w <= 0 or h <= 0:
        raise ValueError(f"{where}: bbox {bbox!r} needs finite values and positive width and height")
    return xywh_to_polygon([x, y, w, h])


def _parse(path: Path, data: Any, categories: list[str] | None) -> CocoAnnotations:
    if not isinstance(data, dict):
        raise _fail(path, f"the top level must be an object with 'images' and 'annotations', got {type(data).__name__}")
    for key in ("images", "annotations"):
        if not isinstance(data.get(key), list):
            raise _fail(path, f"missing list {key!r}" if key not in data else f"{key!r} must be a list")
    cat_names: dict[Any, str] = {}
    if categories is not None:
        cats = data.get("categories")
        if not isinstance(cats, list):
            raise _fail(path, "regions.expected.categories is set but the file has no 'categories' list")
        cat_names = {c.get("id"): str(c.get("name")) for c in cats if isinstance(c, dict)}
        unknown = sorted(set(categories) - set(cat_names.values()))
        if unknown:
            raise _fail(path, f"categories {unknown} are not in the file (it has {sorted(set(cat_names.values()))[:20]})")
    images: dict[str, _Image] = {}
    by_id: dict[Any, str] = {}
    for i, im in enumerate(data["images"]):
        if not isinstance(im, dict) or not isinstance(im.get("file_name"), str) or "id" not in im:
            raise _fail(path, f"images[{i}] needs an 'id' and a string 'file_name'")
        name = PurePosixPath(im["file_name"].replace("\\", "/")).as_posix()
        if im["id"] in by_id:
            raise _fail(path, f"images[{i}]: duplicate image id {im['id']!r}")
        w, h = im.get("width"), im.get("height")
        dims = (int(w), int(h)) if isinstance(w, int | float) and isinstance(h, int | float) else (None, None)
        by_id[im["id"]] = name
        images.setdefault(name, _Image(*dims))
    for i, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict) or "image_id" not in ann:
            raise _fail(path, f"annotations[{i}] needs an 'image_id'")
        if ann["image_id"] not in by_id:
            raise _fail(path, f"annotations[{i}] refers to image_id {ann['image_id']!r}, which 'images' does not list")
        if categories is not None and cat_names.get(ann.get("category_id")) not in categories:
            continue
        entry = images[by_id[ann["image_id"]]]
        where = f"annotation id {ann.get('id', f'#{i}')!r}"
        try:
            polys = _segment_polygons(ann.get("segmentation"), where)
            if polys is None:
                if "bbox" not in ann:
                    raise ValueError(f"{where}: has neither a polygon segmentation nor a bbox")
                polys = [_bbox_polygon(ann["bbox"], where)]
            entry.polygons += polys
        except ValueError as exc:
            entry.problems.append(str(exc))
    base: dict[str, list[str]] = {}
    for name in images:
        base.setdefault(PurePosixPath(name).name, []).append(name)
    return CocoAnnotations(path, images, base)


def load_coco(path: Path, categories: list[str] | None = None) -> CocoAnnotations:
    """Read and check a COCO annotation file once per process (memoised by size and mtime)."""
    path = Path(path)
    try:
        st = path.stat()
    except OSError:
        raise _fail(path, "file not found") from None
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, tuple(categories or ()), categories is None)
    with _LOCK:
        if key not in _MEMO:
            try:
                data = json.loads(path.read_bytes())
            except (OSError, UnicodeDecodeError) as exc:
                raise _fail(path, f"cannot read it ({exc})") from None
            except ValueError as exc:
                raise _fail(path, f"not valid JSON ({exc})") from None
            _MEMO[key] = _parse(path, data, categories)
        return _MEMO[key]


class CocoSource:
    """The ``expected`` region of each image from a COCO file (same interface as MaskSource)."""

    def __init__(self, name: str, annotations: Path, categories: list[str] | None, missing: str):
        self.name, self.file, self.categories, self.missing = name, Path(annotations), categories, missing
        self.coco = load_coco(self.file, categories)  # fail fast on a broken file

    def describe(self) -> dict[str, Any]:
        cats = f", categories {self.categories}" if self.categories else ""
        return {"source": "coco", "from": f"{self.file}{cats}", "heuristic": False}

    def region(self, path: str, hw: tuple[int, int]) -> Region:
        entry = self.coco.lookup(path)
        if entry is None or (not entry.polygons and not entry.problems):
            if self.missing == "error":
                raise RegionFailure(f"{self.file}: no annotation for {path}")
            return Region(self.name)
        if entry.problems:
            raise RegionFailure(f"{self.file}: {'; '.join(entry.problems[:3])}")
        h, w = hw
        if entry.width is not None and (entry.width, entry.height) != (w, h):
            raise RegionFailure(f"{self.file}: says {path} is {entry.width}x{entry.height} but the image is {w}x{h}")
        polys = [clip_polygon(p, w, h) for p in entry.polygons]
        polys = [p for p in polys if len(p) >= 3]
        if not polys:
            raise RegionFailure(f"{self.file}: every annotation of {path} lies outside the {w}x{h} image")
        return Region(self.name, polygons=polys, scores=[1.0] * len(polys))

    def fingerprint(self, paths: list[str]) -> str:
        st = self.file.stat()
        return hashlib.sha256(f"{self.file.resolve()}|{st.st_size}|{st.st_mtime_ns}|{self.categories}".encode()).hexdigest()
