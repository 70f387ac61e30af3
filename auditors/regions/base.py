"""The one region type every provider returns."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import cv2
import numpy as np

from auditors.data.geometry import Placement, image_area_mask, polygons_to_mask, warp_mask, warp_points

__all__ = ["Region", "RegionFailure"]


class RegionFailure(Exception):
    """A region cannot be built for one image (bad mask file, bad boxes...). Recorded, not raised past the builder."""


@dataclass
class Region:
    """A named area of one image, in original-image pixel coordinates.

    Vector regions (text boxes, borders, manifest boxes) are ``polygons``: (K, 2) float x/y
    arrays, mapped exactly through preprocessing. Raster regions (user masks, GrabCut) set
    ``mask``: a bool array covering the whole image, either at full resolution or at any
    lower resolution with the same aspect ratio (it is stretched over the image).
    ``complement=True`` means "the image minus polygons and mask" (backgrounds): taking the
    complement after mapping keeps letterbox padding out of it.
    ``error`` marks a region that could not be built: its mask is empty and its metrics must
    be reported as missing, never as 0.
    """

    name: str
    polygons: list[np.ndarray] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    mask: np.ndarray | None = None
    complement: bool = False
    texts: list[str] | None = None
    text_scores: list[float] | None = None
    error: str | None = None

    @classmethod
    def failed(cls, name: str, reason: str) -> Region:
        return cls(name, error=reason)

    @property
    def is_failed(self) -> bool:
        return self.error is not None

    def model_polygons(self, placement: Placement) -> list[np.ndarray]:
        return [warp_points(p, placement) for p in self.polygons]

    def _raster(self, placement: Placement) -> np.ndarray:
        """Polygons and mask (not complemented, not dilated) in model-input pixels."""
        hw = (placement.out_h, placement.out_w)
        out = polygons_to_mask(self.model_polygons(placement), hw)
        if self.mask is not None:
            mh, mw = self.mask.shape[:2]
            # A low-resolution mask covers the same image extent: only the source size differs.
            p = placement if (mh, mw) == (placement.src_h, placement.src_w) else dataclasses.replace(placement, src_w=mw, src_h=mh)
            out |= warp_mask(self.mask, p)
        return out

    def model_mask(self, placement: Placement, dilation: int = 0) -> np.ndarray:
        """Boolean (out_h, out_w) mask in model-input pixels (all False for a failed region)."""
        if self.is_failed:
            return np.zeros((placement.out_h, placement.out_w), bool)
        out = self._raster(placement)
        if dilation > 0 and out.any():
            k = 2 * dilation + 1
            out = cv2.dilate(out.astype(np.uint8), np.ones((k, k), np.uint8)).astype(bool)
        if self.complement:
            out = image_area_mask(placement) & ~out
        return out

    def original_mask(self, height: int, width: int) -> np.ndarray:
        """The region as a bool (height, width) mask of the original image (tests, overlays)."""
        from auditors.data.geometry import placement_for

        return self.model_mask(placement_for((height, width), (height, width), "stretch"))

    @property
    def is_empty(self) -> bool:
        if self.complement:
            return False
        return not self.polygons and (self.mask is None or not self.mask.any())
