"""User-supplied regions: PNG mask files or manifest boxes, validated per image.

Every problem with one image's mask (unreadable file, wrong size, box outside the image)
raises :class:`RegionFailure` with a message naming the region, the file or manifest
column, and the image; the builder records it and the run goes on.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from auditors.config.schema import _MaskSource
from auditors.errors import ConfigError
from auditors.data.geometry import clip_polygon, xywh_to_polygon
from auditors.regions.base import Region, RegionFailure
from auditors.regions.manifest import ManifestRows, is_missing

__all__ = ["MaskSource", "read_mask", "parse_boxes", "mask_path_for"]

MAX_MASK_PIXELS = 250_000_000
_ASPECT_TOLERANCE = 0.02


def mask_path_for(masks_dir: Path, image_path: str) -> Path:
    """``<masks_dir>/<image path relative to dataset.root, suffix replaced by .png>``."""
    return Path(masks_dir) / Path(image_path).with_suffix(".png")


def read_mask(path: Path) -> np.ndarray:
    """Decode a mask file to bool: a pixel is in the region when its value is non-zero.

    Grey and palette masks use the value/index; colour masks any channel; an alpha channel
    that varies takes precedence (cut-outs saved as transparent PNGs).
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise RegionFailure(f"cannot read mask {path} ({exc.strerror or exc})") from None
    if not data:
        raise RegionFailure(f"mask {path} is an empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                if img.size[0] * img.size[1] > MAX_MASK_PIXELS:
                    raise RegionFailure(f"mask {path} is too large ({img.size[0]}x{img.size[1]})")
                img.load()
                arr = np.asarray(img)
                mode = img.mode
    except RegionFailure:
        raise
    except Exception as exc:  # PIL raises many types for corrupt files
        raise RegionFailure(f"mask {path} is not a readable image ({type(exc).__name__}: {exc})") from None
    if arr.ndim == 3:
        if mode in ("RGBA", "LA", "PA") and arr[..., -1].min() != arr[..., -1].max():
            return arr[..., -1] > 0
        colour = arr[..., :-1] if mode in ("RGBA", "LA", "PA") else arr
        return np.any(colour != 0, axis=-1)
    return arr != 0


def parse_boxes(value: Any, where: str) -> list[list[float]]:
    """COCO ``[x, y, w, h]`` boxes from a manifest cell: one box, a list of boxes, or their JSON text."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise RegionFailure(f"{where}: not valid JSON boxes ({exc}): {value[:80]!r}") from None
    if hasattr(value, "tolist"):  # numpy arrays from Parquet list columns
        value = value.tolist()
    if value is None or value == []:
        return []
    if not isinstance(value, list | tuple):
        raise RegionFailure(f"{where}: expected [x, y, w, h] or a list of them, got {type(value).__name__}")
    items = [value] if value and not isinstance(value[0], list | tuple) and not hasattr(value[0], "tolist") else value
    boxes = []
    for i, box in enumerate(items):
        box = box.tolist() if hasattr(box, "tolist") else box
        if not isinstance(box, list | tuple) or len(box) != 4:
            raise RegionFailure(f"{where}: box #{i} must be [x, y, w, h], got {box!r}")
        try:
            x, y, w, h = (float(v) for v in box)
        except (TypeError, ValueError):
            raise RegionFailure(f"{where}: box #{i} has non-numeric values {box!r}") from None
        if not all(math.isfinite(v) for v in (x, y, w, h)):
            raise RegionFailure(f"{where}: box #{i} has non-finite values {box!r}")
        if w <= 0 or h <= 0:
            raise RegionFailure(f"{where}: box #{i} {box!r} has non-positive width or height")
        boxes.append([x, y, w, h])
    return boxes


class MaskSource:
    """Build one configured user region (``name``) for an image, from files or the manifest.

    ``rows`` is a callable returning the manifest rows (called only when a manifest source
    needs them, so an unused manifest is never read).
    """

    def __init__(self, name: str, key: str, cfg: _MaskSource, root: Path, rows: Callable[[], ManifestRows]):
        self.name, self.key, self.cfg, self.root = name, key, cfg, Path(root)
        self._rows = rows
        if cfg.source == "masks":
            d = Path(cfg.masks_dir).expanduser()  # type: ignore[arg-type]
            self.masks_dir = d if d.is_absolute() else Path.cwd() / d
            if not self.masks_dir.is_dir():
                raise ConfigError(f"{key}.masks_dir: folder not found: {self.masks_dir}")

    @property
    def manifest_column(self) -> str | None:
        return self.cfg.column if self.cfg.source in ("manifest_mask", "manifest_boxes") else None

    def describe(self) -> dict[str, Any]:
        src = self.cfg.source
        where = str(self.masks_dir) if src == "masks" else f"dataset.manifest column {self.cfg.column!r}"
        return {"source": src, "from": where, "heuristic": False}

    def _missing(self, what: str) -> list[np.ndarray] | np.ndarray:
        if self.cfg.missing == "error":
            raise RegionFailure(what)
        return []

    def foreground(self, path: str, hw: tuple[int, int]) -> tuple[list[np.ndarray], np.ndarray | None]:
        """(polygons, mask) of this source for the image at ``path`` of size ``hw``."""
        src = self.cfg.source
        if src == "masks":
            return [], self._mask_file(mask_path_for(self.masks_dir, path), hw)
        value = self._rows().get(path, {}).get(self.cfg.column)
        if is_missing(value) or (hasattr(value, "__len__") and not isinstance(value, str) and len(value) == 0):
            return self._missing(f"no value in manifest column {self.cfg.column!r} for {path}"), None  # type: ignore[return-value]
        if src == "manifest_mask":
            rel = Path(str(value).strip())
            full = (self.root / rel).resolve()
            if rel.is_absolute() or self.root.resolve() not in full.parents:
                raise RegionFailure(f"mask path {str(value)!r} (column {self.cfg.column!r}) must be relative to dataset.root and stay inside it")
            return [], self._mask_file(full, hw)
        return self._boxes(value, path, hw), None

    def _mask_file(self, f: Path, hw: tuple[int, int]) -> np.ndarray | None:
        if not f.is_file():
            self._missing(f"no mask file {f}")
            return None
        mask = read_mask(f)
        h, w = hw
        mh, mw = mask.shape
        if (mh, mw) != (h, w):
            same_aspect = abs(mw / mh - w / h) <= _ASPECT_TOLERANCE * (w / h)
            if not (self.cfg.resize_masks and same_aspect):
                hint = " (set resize_masks: true to stretch masks of the same aspect ratio)" if same_aspect else ""
                raise RegionFailure(f"mask {f} is {mw}x{mh} but the image is {w}x{h}{hint}")
        return mask

    def _boxes(self, value: Any, path: str, hw: tuple[int, int]) -> list[np.ndarray]:
        where = f"manifest column {self.cfg.column!r} for {path}"
        h, w = hw
        polys = []
        for i, box in enumerate(parse_boxes(value, where)):
            poly = clip_polygon(xywh_to_polygon(box), w, h)  # partly outside: keep the inside part
            if len(poly) < 3 or _area(poly) <= 0:
                raise RegionFailure(f"{where}: box #{i} {box} lies outside the {w}x{h} image")
            polys.append(poly)
        return polys

    def region(self, path: str, hw: tuple[int, int]) -> Region:
        polys, mask = self.foreground(path, hw)
        return Region(self.name, polygons=polys, scores=[1.0] * len(polys), mask=mask)

    def fingerprint(self, paths: list[str]) -> str:
        """Changes when any input of these images' regions changes (mask file bytes or manifest value).

        By content, not size/mtime: a mask rewritten with the same size and its mtime restored must
        not serve stale results (per-image result keys include this).
        """
        h = hashlib.sha256(self.cfg.model_dump_json().encode())
        for p in paths:
            if self.cfg.source == "masks":
                h.update(f"{p}|{_file_digest(mask_path_for(self.masks_dir, p))}\n".encode())
            else:
                value = self._rows().get(p, {}).get(self.cfg.column)
                h.update(f"{p}|{value!r}\n".encode())
                if self.cfg.source == "manifest_mask" and not is_missing(value):
                    h.update(f"{_file_digest(self.root / str(value).strip())}\n".encode())
        return h.hexdigest()


def _area(poly: np.ndarray) -> float:
    x, y = poly[:, 0], poly[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


def _file_digest(path: Path) -> str:
    """Content hash of a regular file, or 'missing' (never opens FIFOs or devices)."""
    try:
        if not path.is_file():
            return "missing"
        return hashlib.blake2b(path.read_bytes(), digest_size=16).hexdigest()
    except OSError:
        return "missing"
