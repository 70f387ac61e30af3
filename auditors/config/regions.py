"""The ``regions:`` section: text, border, background, custom and expected (reference) regions."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from auditors.config.base import _Strict


class TextRegionConfig(_Strict):
    enabled: bool = True
    languages: list[str] = Field(default=["en"], min_length=1)
    canvas_size: int = Field(default=1024, ge=64, description="EasyOCR detection canvas (longest side).")
    min_score: float = Field(
        default=0.5,
        ge=0.0,
        le=1.0,
        description="Drop boxes scoring below this. A box's score is the mean CRAFT text score of its character "
        "pixels: ~0.55-0.65 for clear print, 0.3-0.45 for blurred text, never below low_text.",
    )
    text_threshold: float = Field(
        default=0.7, gt=0.0, le=1.0, description="CRAFT: a box needs a pixel at least this sure it is text (EasyOCR's text_threshold)."
    )
    low_text: float = Field(default=0.4, gt=0.0, lt=1.0, description="CRAFT: pixels above this are character pixels.")
    link_threshold: float = Field(default=0.4, gt=0.0, lt=1.0, description="CRAFT: link score joining characters into words.")
    dilation: int = Field(default=0, ge=0, description="Grow each text polygon by this many pixels.")
    min_size: int = Field(default=4, ge=0, description="Drop boxes smaller than this (pixels, original).")
    read: bool = Field(
        default=False,
        description="Also recognise the text (EasyOCR recogniser, slower): strings and confidences are cached "
        "and written to the text_read column.",
    )
    batch_size: int = Field(default=4, ge=1, le=64, description="Same-size detection canvases per CRAFT forward pass.")
    threads: int | None = Field(default=None, ge=1, description="torch threads while detecting; null = leave the process setting.")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        default="auto", description="auto = bf16 where the CPU/GPU runs it natively (boxes move by a pixel at most), else fp32."
    )


class BorderRegionConfig(_Strict):
    enabled: bool = True
    width: float = Field(default=0.05, gt=0.0, lt=0.5, description="Frame width as a fraction of H and W.")


REGION_BUILTINS = ("text", "border", "background", "expected")
#: Reference regions: measured, but never shortcuts (no gate rule, no exclusive claim on pixels).
REFERENCE_REGIONS = ("expected",)
_REGION_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")


class _MaskSource(_Strict):
    """Where a user-supplied region comes from (shared by background foregrounds and custom regions)."""

    source: Literal["masks", "manifest_mask", "manifest_boxes"]
    masks_dir: Path | None = Field(
        default=None, description="source=masks: folder of PNG masks named <image path relative to dataset.root>.png."
    )
    column: str | None = Field(
        default=None,
        description="source=manifest_mask: manifest column with a mask path (relative to dataset.root); "
        "source=manifest_boxes: column with COCO [x, y, w, h] boxes (a list of them, or JSON text).",
    )
    missing: Literal["empty", "error"] = Field(
        default="empty", description="An image without a mask file / boxes: an empty region, or a recorded error."
    )
    resize_masks: bool = Field(
        default=False, description="Accept masks of another size with the image's aspect ratio (stretched over it)."
    )

    @model_validator(mode="after")
    def _source_needs_its_key(self) -> _MaskSource:
        if self.source == "masks" and self.masks_dir is None:
            raise ValueError("source 'masks' needs masks_dir")
        if self.source in ("manifest_mask", "manifest_boxes") and not self.column:
            raise ValueError(f"source {self.source!r} needs column (a dataset.manifest column)")
        return self


class BackgroundRegionConfig(_MaskSource):
    """Background = the image minus a foreground, taken from user masks/boxes or estimated by GrabCut."""

    enabled: bool = False
    source: Literal["grabcut", "masks", "manifest_mask", "manifest_boxes"] = Field(
        default="grabcut",
        description="Foreground source. grabcut is a heuristic (OpenCV GrabCut from a centred rectangle) and "
        "is labelled as such in the summary.",
    )
    missing: Literal["empty", "error"] = Field(
        default="error", description="An image without a foreground mask/boxes: a recorded error, or an empty foreground."
    )
    grabcut_margin: float = Field(default=0.1, gt=0.0, lt=0.5, description="GrabCut start rectangle: inset by this fraction per side.")
    grabcut_iterations: int = Field(default=3, ge=1, le=20)
    grabcut_max_side: int = Field(default=192, ge=32, le=2048, description="GrabCut runs on a copy at most this large.")


class CustomRegionConfig(_MaskSource):
    """A user-named region (watermark, logo, ...) from masks or manifest boxes."""


class ExpectedRegionConfig(_MaskSource):
    """Human attention (pointing game): where a person says the evidence for the class is.

    Measured like any region (expected_mass/_area/_lift/_hit) but never a shortcut: high
    attention there is good, so no gate rule reads it.
    """

    enabled: bool = False
    source: Literal["masks", "manifest_mask", "manifest_boxes", "coco"] = Field(
        default="masks",
        description="masks: <masks_dir>/<image path>.png; manifest_boxes/manifest_mask: a dataset.manifest column; "
        "coco: a COCO-style annotation file (annotations) with images[].file_name and annotations[].bbox/segmentation.",
    )
    annotations: Path | None = Field(
        default=None, description="source=coco: the instances JSON; file_name is matched to the image path under dataset.root."
    )
    categories: list[str] | None = Field(
        default=None, description="source=coco: use only annotations of these category names; null = all."
    )
    gallery_size: int = Field(default=8, ge=0, description="Biggest pointing misses shown in the report.")

    @model_validator(mode="after")
    def _source_needs_its_key(self) -> ExpectedRegionConfig:  # type: ignore[override]
        if not self.enabled:
            return self
        if self.source == "coco" and self.annotations is None:
            raise ValueError("source 'coco' needs annotations (a COCO instances JSON file)")
        if self.source != "coco" and self.categories is not None:
            raise ValueError("categories applies to source 'coco' only")
        if self.source == "masks" and self.masks_dir is None:
            raise ValueError("source 'masks' needs masks_dir")
        if self.source in ("manifest_mask", "manifest_boxes") and not self.column:
            raise ValueError(f"source {self.source!r} needs column (a dataset.manifest column)")
        return self


class RegionsConfig(_Strict):
    text: TextRegionConfig = TextRegionConfig()
    border: BorderRegionConfig = BorderRegionConfig()
    background: BackgroundRegionConfig = BackgroundRegionConfig()
    expected: ExpectedRegionConfig = Field(
        default=ExpectedRegionConfig(), description="Human-annotated evidence region for the pointing game (off by default)."
    )
    custom: dict[str, CustomRegionConfig] = Field(
        default={}, description="Named regions, e.g. {watermark: {source: masks, masks_dir: masks/watermark}}."
    )
    exclusive: bool = Field(default=False, description="Give each pixel to one region only, by priority.")
    priority: list[str] | None = Field(
        default=None, description="Overlap resolution order for exclusive; default [text, <custom...>, border, background]."
    )
    overlap_columns: bool = Field(default=True, description="Per-image overlap_<a>_<b> and regions_overlap columns.")

    @field_validator("custom")
    @classmethod
    def _custom_names(cls, v: dict[str, CustomRegionConfig]) -> dict[str, CustomRegionConfig]:
        for name in v:
            if not _REGION_NAME.match(name):
                raise ValueError(f"custom region name {name!r} must be lower-case letters, digits and _, starting with a letter (max 40)")
            if name in REGION_BUILTINS or name.startswith("overlap") or name == "regions":
                raise ValueError(f"custom region name {name!r} is reserved (built-ins: {', '.join(REGION_BUILTINS)}; no 'overlap*', 'regions')")
        return v

    def enabled_names(self) -> list[str]:
        """Enabled regions in column order: text, border, background, then custom regions."""
        names = [n for n in REGION_BUILTINS if getattr(self, n).enabled]
        return names + list(self.custom)

    @model_validator(mode="after")
    def _priority_and_columns(self) -> RegionsConfig:
        names = self.enabled_names()
        if self.priority is not None:
            known = [*REGION_BUILTINS, *self.custom]
            unknown = [p for p in self.priority if p not in known]
            if unknown:
                raise ValueError(f"priority names {unknown} are not regions (known: {known})")
            if len(set(self.priority)) != len(self.priority):
                raise ValueError("priority lists a region twice")
        pairs = [f"overlap_{a}_{b}" for i, a in enumerate(names) for b in names[i + 1 :]]
        if len(set(pairs)) != len(pairs):
            clash = sorted({c for c in pairs if pairs.count(c) > 1})
            raise ValueError(f"region names make ambiguous overlap columns {clash}; rename a custom region")
        return self
