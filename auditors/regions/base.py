"""The one region type every provider returns."""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from auditors.geometry import Placement, polygons_to_mask, warp_mask, warp_points

__all__ = ["Region"]


@dataclass
class Region:
    """A named area of one image, in original-image pixel coordinates.

    Vector regions (text boxes, borders) are ``polygons``: (K, 2) float x/y arrays, mapped
    exactly through preprocessing. Raster regions (user masks) set ``mask`` (bool, H x W).
    """

    name: str
    polygons: list[np.ndarray] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    mask: np.ndarray | None = None

    def model_polygons(self, placement: Placement) -> list[np.ndarray]:
        return [warp_points(p, placement) for p in self.polygons]

    def model_mask(self, placement: Placement, dilation: int = 0) -> np.ndarray:
        """Boolean (out_h, out_w) mask in model-input pixels."""
        hw = (placement.out_h, placement.out_w)
        out = polygons_to_mask(self.model_polygons(placement), hw)
        if self.mask is not None:
            out |= warp_mask(self.mask, placement)
        if dilation > 0 and out.any():
            k = 2 * dilation + 1
            out = cv2.dilate(out.astype(np.uint8), np.ones((k, k), np.uint8)).astype(bool)
        return out

    @property
    def is_empty(self) -> bool:
        return not self.polygons and (self.mask is None or not self.mask.any())
