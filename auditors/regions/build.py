"""Build every enabled region for a batch of images, and their model-input masks.

The one place that knows which providers a config enables and in which column order; the
pipeline asks it for regions and never names a provider itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np

from auditors.config import AuditConfig
from auditors.geometry import Placement
from auditors.regions.base import Region
from auditors.regions.border import border_region
from auditors.regions.cache import RegionCache
from auditors.regions.text import TextDetector

__all__ = ["RegionBuilder", "region_names", "ImageItem"]


class ImageItem(Protocol):
    """What a provider may look at: the decoded original and where it came from."""

    original: np.ndarray
    digest: str
    placement: Placement

    @property
    def path(self) -> str: ...


def region_names(cfg: AuditConfig) -> list[str]:
    """Enabled regions, in column order."""
    names = []
    if cfg.regions.text.enabled:
        names.append("text")
    if cfg.regions.border.enabled:
        names.append("border")
    return names


class RegionBuilder:
    """Regions for images of one audit. ``stats`` counts detector work (cache hits vs runs)."""

    def __init__(self, cfg: AuditConfig, cache_path: Path | None = None, use_gpu: bool = False):
        self.cfg = cfg
        self.names = region_names(cfg)
        self.detector = None
        if cfg.regions.text.enabled:
            cache = RegionCache(cache_path) if cache_path is not None else None
            self.detector = TextDetector(cfg.regions.text, cache, use_gpu=use_gpu)

    @property
    def stats(self) -> dict[str, int]:
        return {f"text_{k}": v for k, v in self.detector.stats.items()} if self.detector else {}

    def build(self, items: list[ImageItem]) -> list[dict[str, Region]]:
        """One ``name -> Region`` dict per image, in original-image coordinates."""
        out: list[dict[str, Region]] = [{} for _ in items]
        if self.detector is not None:
            texts = self.detector.detect([it.original for it in items], [it.digest for it in items])
            for regs, t in zip(out, texts, strict=True):
                regs["text"] = t
        if self.cfg.regions.border.enabled:
            for regs, it in zip(out, items, strict=True):
                h, w = it.original.shape[:2]
                regs["border"] = border_region(h, w, self.cfg.regions.border.width)
        return out

    @staticmethod
    def column_dtypes(cfg: AuditConfig) -> dict[str, str]:
        """Per-image columns (besides <region>_mass/_area/_lift/_hit) that regions add to images.parquet."""
        cols = {}
        if cfg.regions.text.enabled:
            cols["n_text_boxes"] = "Int64"
        return cols

    def image_columns(self, regions: list[dict[str, Region]], masks: np.ndarray) -> list[dict[str, Any]]:
        """Values of :meth:`column_dtypes` for each image."""
        out = []
        for regs in regions:
            row: dict[str, Any] = {}
            if "text" in regs:
                row["n_text_boxes"] = len(regs["text"].polygons)
            out.append(row)
        return out

    def model_masks(self, regions: list[dict[str, Region]], items: list[ImageItem]) -> np.ndarray:
        """(B, R, H, W) bool masks in model-input pixels, R in :attr:`names` order."""
        h, w = self.cfg.model.input_size
        if not self.names:
            return np.zeros((len(items), 0, h, w), bool)
        dilation = {"text": self.cfg.regions.text.dilation}
        return np.stack(
            [np.stack([regs[r].model_mask(it.placement, dilation.get(r, 0)) for r in self.names]) for regs, it in zip(regions, items, strict=True)]
        )
