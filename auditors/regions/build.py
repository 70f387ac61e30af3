"""Build every enabled region for a batch of images, and their model-input masks.

The one place that knows which providers a config enables and in which column order; the
pipeline asks it for regions and never names a provider itself.

Per-image failures (an unreadable mask file, a box outside the image, a detector error on
one image) never raise: the region comes back as ``Region.failed(name, reason)``, its mask
is empty, :meth:`RegionBuilder.errors` lists it for errors.csv and :meth:`RegionBuilder.failed`
tells the caller which metrics to report as missing (NaN) instead of 0.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from auditors.config.schema import AuditConfig, RegionsConfig
from auditors.errors import ConfigError
from auditors.data.geometry import Placement
from auditors.regions.background import BackgroundProvider
from auditors.regions.base import Region, RegionFailure
from auditors.regions.border import border_region
from auditors.regions.cache import RegionCache
from auditors.regions.coco import CocoSource
from auditors.regions.manifest import ManifestRows, manifest_columns, rows_from_frame
from auditors.regions.masks import MaskSource
from auditors.regions.overlap import overlap_pairs, overlap_values, priority_order, resolve_exclusive
from auditors.regions.text import TextDetector

__all__ = [
    "RegionBuilder",
    "region_names",
    "region_sources",
    "describe_regions",
    "region_inputs_fingerprint",
    "manifest_columns_for",
    "chunk_manifest_rows",
    "check_region_inputs",
    "ImageItem",
]


class ImageItem(Protocol):
    """What a provider may look at: the decoded original and where it came from."""

    original: np.ndarray
    digest: str
    placement: Placement

    @property
    def path(self) -> str: ...


def region_names(cfg: AuditConfig) -> list[str]:
    """Enabled regions, in column order: text, border, background, then custom regions."""
    return cfg.regions.enabled_names()


def manifest_columns_for(rc: RegionsConfig) -> list[str]:
    """Manifest columns the enabled region sources read (pass only these to the builder)."""
    sources = [rc.background] if rc.background.enabled else []
    sources += [rc.expected] if rc.expected.enabled else []
    sources += list(rc.custom.values())
    return sorted({s.column for s in sources if s.source in ("manifest_mask", "manifest_boxes") and s.column})


def region_sources(cfg: AuditConfig) -> dict[str, dict[str, Any]]:
    """``name -> {"source", "from", "heuristic", ...}`` for summary.json, from the config alone."""
    return describe_regions(cfg.regions)


def describe_regions(rc: RegionsConfig) -> dict[str, dict[str, Any]]:
    """Where each enabled region comes from and whether it is a heuristic (see :func:`region_sources`)."""
    out: dict[str, dict[str, Any]] = {}
    for name in rc.enabled_names():
        if name == "text":
            t = rc.text
            out[name] = {"source": "easyocr-craft", "from": f"EasyOCR CRAFT detector, canvas {t.canvas_size}, "
                         f"min_score {t.min_score}" + (", with recognition" if t.read else ""), "heuristic": False}
        elif name == "border":
            out[name] = {"source": "frame", "from": f"outer {rc.border.width:.0%} of width and height", "heuristic": False}
        elif name == "expected" and rc.expected.source == "coco":
            cats = f", categories {rc.expected.categories}" if rc.expected.categories else ""
            out[name] = {"source": "coco", "from": f"{rc.expected.annotations}{cats}", "heuristic": False}
        else:
            c = {"background": rc.background, "expected": rc.expected}.get(name) or rc.custom[name]
            if c.source == "grabcut":
                out[name] = {"source": "grabcut", "heuristic": True,
                             "from": f"complement of an OpenCV GrabCut foreground from a centred rectangle "
                                     f"(margin {c.grabcut_margin}); a guess, not ground truth"}
            else:
                where = str(c.masks_dir) if c.source == "masks" else f"dataset.manifest column {c.column!r}"
                out[name] = {"source": c.source, "from": where, "heuristic": False}
            if name == "background":
                out[name]["complement_of_foreground"] = True
    if "expected" in out:
        out["expected"]["reference"] = True  # where the evidence should be: never a shortcut
    if rc.exclusive:
        order = priority_order(rc.enabled_names(), rc.priority)
        for i, name in enumerate(order):
            out[name]["exclusive_rank"] = i
    return out


class RegionBuilder:
    """Regions for images of one audit, from the ``regions:`` section alone.

    ``root``: the dataset root that mask paths are relative to. ``manifest``: the manifest rows
    region sources may read, as a DataFrame or a mapping ``path -> {column: value}`` (only this
    chunk's paths and :func:`manifest_columns_for` columns are needed), or the manifest file,
    then read once per process and only if a source asks. ``stats`` counts provider work
    (detector runs vs cache hits, failures).
    """

    def __init__(
        self,
        regions: RegionsConfig,
        root: Path,
        cache_path: Path | None = None,
        use_gpu: bool = False,
        manifest: pd.DataFrame | ManifestRows | Path | None = None,
    ):
        if not isinstance(regions, RegionsConfig):
            raise TypeError(f"RegionBuilder takes the regions section (cfg.regions), not {type(regions).__name__}")
        self.regions = rc = regions
        self.names = rc.enabled_names()
        needs_cache = rc.text.enabled or (rc.background.enabled and rc.background.source == "grabcut")
        self.cache = RegionCache(cache_path) if cache_path is not None and needs_cache else None
        self.detector = TextDetector(rc.text, self.cache, use_gpu=use_gpu) if rc.text.enabled else None
        root = Path(root)
        self._rows = _rows_loader(rc, manifest)
        self.background = BackgroundProvider(rc.background, root, self._rows, self.cache) if rc.background.enabled else None
        self.custom = {n: MaskSource(n, f"regions.custom.{n}", c, root, self._rows) for n, c in rc.custom.items()}
        self.expected = _expected_source(rc, root, self._rows) if rc.expected.enabled else None
        self.order = priority_order(self.names, rc.priority)
        self._n_failed = 0
        self._overlap_for: list | None = None
        self._overlaps: list[dict[str, float]] | None = None

    @property
    def stats(self) -> dict[str, int]:
        out: dict[str, int] = {}
        if self.detector is not None:  # text failures are counted in region_errors
            out.update({f"text_{k}": v for k, v in self.detector.stats.items() if k != "failed"})
        if self.background is not None and self.background.heuristic:
            out.update({f"background_{k}": v for k, v in self.background.stats.items()})
        out["region_errors"] = self._n_failed
        return out

    def describe(self) -> dict[str, dict[str, Any]]:
        """Where each region comes from and whether it is a heuristic (summary.json ``region_sources``)."""
        return describe_regions(self.regions)

    def build(self, items: list[ImageItem]) -> list[dict[str, Region]]:
        """One ``name -> Region`` dict per image (keys in :attr:`names` order), original coordinates."""
        found: dict[str, list[Region]] = {}
        images = [it.original for it in items]
        if self.detector is not None:
            found["text"] = self.detector.detect(images, [it.digest for it in items])
        if self.regions.border.enabled:
            w = self.regions.border.width
            found["border"] = [border_region(*img.shape[:2], w) for img in images]
        if self.background is not None:
            found["background"] = self.background.regions(images, [it.path for it in items], [it.digest for it in items])
        if self.expected is not None:
            src = self.expected
            found["expected"] = [_guarded("expected", lambda it=it: src.region(it.path, it.original.shape[:2])) for it in items]
        for name, src in self.custom.items():
            found[name] = [_guarded(name, lambda it=it, src=src: src.region(it.path, it.original.shape[:2])) for it in items]
        out = [{name: found[name][i] for name in self.names} for i in range(len(items))]
        self._n_failed += sum(r.is_failed for regs in out for r in regs.values())
        return out

    def errors(self, regions: list[dict[str, Region]], items: list[ImageItem]) -> list[dict[str, str]]:
        """errors.csv rows ``{path, stage: "regions", reason}``, one per failed region of an image."""
        return [
            {"path": it.path, "stage": "regions", "reason": f"region {name!r}: {r.error}"}
            for regs, it in zip(regions, items, strict=True)
            for name, r in regs.items()
            if r.is_failed
        ]

    def failed(self, regions: list[dict[str, Region]]) -> np.ndarray:
        """(B, R) bool, R in :attr:`names` order: True where a region could not be built (report NaN)."""
        return np.array([[regs[n].is_failed for n in self.names] for regs in regions], bool).reshape(len(regions), len(self.names))

    @staticmethod
    def column_dtypes(rc: RegionsConfig) -> dict[str, str]:
        """Per-image columns (besides <region>_mass/_area/_lift/_hit) that regions add to images.parquet."""
        cols: dict[str, str] = {}
        if rc.text.enabled:
            cols["n_text_boxes"] = "Int64"
            if rc.text.read:
                cols["text_read"] = "string"
        names = rc.enabled_names()
        if rc.overlap_columns and len(names) >= 2:
            cols.update({f"overlap_{a}_{b}": "float64" for a, b in overlap_pairs(names)})
            cols["regions_overlap"] = "float64"
        return cols

    def model_masks(self, regions: list[dict[str, Region]], items: list[ImageItem]) -> np.ndarray:
        """(B, R, H, W) bool masks in model-input pixels, R in :attr:`names` order.

        Text dilation is applied here; with ``regions.exclusive`` each pixel keeps only its
        highest-priority region. Overlaps are measured before that resolution.
        """
        if not items:
            return np.zeros((0, len(self.names), 0, 0), bool)
        if not self.names:
            p = items[0].placement
            return np.zeros((len(items), 0, p.out_h, p.out_w), bool)
        dilation = {"text": self.regions.text.dilation}
        masks = np.stack(
            [np.stack([regs[r].model_mask(it.placement, dilation.get(r, 0)) for r in self.names]) for regs, it in zip(regions, items, strict=True)]
        )
        if self.regions.overlap_columns and len(self.names) >= 2:
            self._overlaps = overlap_values(masks, self.names, self.failed(regions))
            self._overlap_for = regions
        if self.regions.exclusive:
            masks = resolve_exclusive(masks, self.names, self.order)
        return masks

    def image_columns(self, regions: list[dict[str, Region]], masks: np.ndarray) -> list[dict[str, Any]]:
        """Values of :meth:`column_dtypes` for each image (``masks`` from :meth:`model_masks`)."""
        rc = self.regions
        want_overlap = rc.overlap_columns and len(self.names) >= 2
        overlaps = None
        if want_overlap:
            overlaps = self._overlaps if self._overlap_for is regions else overlap_values(masks, self.names, self.failed(regions))
        out = []
        for i, regs in enumerate(regions):
            row: dict[str, Any] = {}
            if "text" in regs:
                t = regs["text"]
                row["n_text_boxes"] = pd.NA if t.is_failed else len(t.polygons)
                if rc.text.read:
                    row["text_read"] = None if t.is_failed else _text_json(t)
            if overlaps is not None:
                row.update(overlaps[i])
            out.append(row)
        return out


def _rows_loader(rc: RegionsConfig, manifest: pd.DataFrame | ManifestRows | Path | None) -> Callable[[], ManifestRows]:
    """A memoised ``() -> rows`` (the manifest is touched only if a source asks)."""
    memo: list[ManifestRows] = []

    def rows() -> ManifestRows:
        if not memo:
            cols = manifest_columns_for(rc)
            if isinstance(manifest, pd.DataFrame):
                memo.append(rows_from_frame(manifest, cols))
            elif manifest is None or isinstance(manifest, (str, Path)):
                memo.append(manifest_columns(manifest, cols))
            else:
                memo.append(manifest)
        return memo[0]

    return rows


def _expected_source(rc: RegionsConfig, root: Path, rows: Callable[[], ManifestRows]) -> MaskSource | CocoSource:
    """The pointing-game region's source: a COCO file, or the mask sources custom regions use."""
    e = rc.expected
    if e.source == "coco":
        return CocoSource("expected", e.annotations, e.categories, e.missing)  # type: ignore[arg-type]
    return MaskSource("expected", "regions.expected", e, root, rows)  # type: ignore[arg-type]


def _guarded(name: str, make: Any) -> Region:
    """Run a provider for one image; any failure becomes a failed Region, never an exception."""
    try:
        return make()
    except ConfigError:
        raise  # the config (not this image) is wrong: stop the run with the message
    except RegionFailure as exc:
        return Region.failed(name, str(exc))
    except Exception as exc:  # a bug or an odd file in one image must not cost the batch
        return Region.failed(name, f"{type(exc).__name__}: {exc}")


def _text_json(t: Region) -> str:
    confs = t.text_scores or []
    return json.dumps(
        [[s, None if i >= len(confs) or not math.isfinite(confs[i]) else round(confs[i], 4)] for i, s in enumerate(t.texts or [])],
        ensure_ascii=False,
    )


def region_inputs_fingerprint(cfg: AuditConfig, paths: list[str], manifest: pd.DataFrame | ManifestRows | None = None) -> str:
    """Hash of the user inputs behind these images' regions (mask files' size/mtime, manifest
    values): add it to a chunk cache key so an edited mask or box invalidates the chunk."""
    rc = cfg.regions
    if not rc.custom and not rc.expected.enabled and not (rc.background.enabled and rc.background.source != "grabcut"):
        return ""
    rows = _rows_loader(rc, cfg.dataset.manifest if manifest is None else manifest)
    root = Path(cfg.dataset.root)
    sources = [MaskSource(n, f"regions.custom.{n}", c, root, rows) for n, c in rc.custom.items()]
    if rc.background.enabled and rc.background.source != "grabcut":
        sources.append(MaskSource("background", "regions.background", rc.background, root, rows))
    if rc.expected.enabled:
        sources.append(_expected_source(rc, root, rows))
    h = hashlib.sha256()
    for s in sources:
        h.update(f"{s.name}:{s.fingerprint(paths)}\n".encode())
    return h.hexdigest()




def chunk_manifest_rows(manifest: pd.DataFrame | None, paths: list[str], cfg: AuditConfig) -> dict[str, dict[str, Any]] | None:
    """The manifest values a chunk's region sources need (None when they need none): small
    enough to pass to a chunk task as ``RegionBuilder(..., manifest=rows)``."""
    cols = manifest_columns_for(cfg.regions)
    if not cols or manifest is None:
        return None
    rows = rows_from_frame(manifest, cols)
    return {p: rows.get(p, {}) for p in paths}


def check_region_inputs(cfg: AuditConfig, manifest: pd.DataFrame | None = None) -> None:
    """Fail fast, before any chunk runs, on region settings that cannot work for any image:
    missing mask folders, manifest sources without a manifest or without their column."""
    root = Path(cfg.dataset.root)
    rc = cfg.regions
    for name, c in rc.custom.items():
        MaskSource(name, f"regions.custom.{name}", c, root, dict)
    if rc.background.enabled and rc.background.source != "grabcut":
        MaskSource("background", "regions.background", rc.background, root, dict)
    if rc.expected.enabled:
        _expected_source(rc, root, dict)  # a missing folder or a broken COCO file stops the run here
    cols = manifest_columns_for(rc)
    if cols:
        if manifest is None and cfg.dataset.manifest is None:
            raise ConfigError(f"regions: manifest column(s) {cols} are configured but dataset.manifest is not set")
        if manifest is not None:
            rows_from_frame(manifest, cols)
        else:
            manifest_columns(cfg.dataset.manifest, cols)
