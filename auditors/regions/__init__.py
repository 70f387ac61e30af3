"""Region providers: where in the image is text, border, background, or a user-named area.

Every provider returns :class:`Region` objects in *original-image* coordinates; the caller
maps them through the same :class:`~auditors.data.geometry.Placement` the model input went through.
"""

from auditors.regions.base import Region, RegionFailure
from auditors.regions.border import border_region
from auditors.regions.cache import RegionCache
from auditors.regions.text import TextDetector

__all__ = ["Region", "RegionFailure", "border_region", "RegionCache", "TextDetector"]
