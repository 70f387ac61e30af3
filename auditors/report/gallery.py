"""The gallery: the most text-reliant images with their heatmaps and counterfactual edits."""

from __future__ import annotations

from typing import Any

from auditors.measure.gallery import GalleryItem
from auditors.report.formatting import DASH, as_dict, fmt_float, fmt_pct, lift_level, region_label
from auditors.report.images import (
    after_text, as_rgb_uint8, cam_like, display_scale, edit_panel, heatmap_overlay, mask_polygons, outline_polygons,
    png_data_uri, resize,
)

__all__ = ["gallery_panels", "edit_rows", "build_gallery"]


def gallery_panels(item: GalleryItem) -> list[dict[str, str]]:
    """Input, heatmap, heatmap with text boxes; empty when the item has no usable image."""
    rgb = as_rgb_uint8(item.image)
    if rgb is None:
        return []
    cam = cam_like(item.cam, rgb.shape[:2])
    polygons = list(item.text_polygons or []) or mask_polygons(
        as_dict(item.regions).get("text"), rgb.shape[:2]
    )
    scale = display_scale(rgb.shape)
    small, small_cam = resize(rgb, scale), resize(cam, scale)
    overlay = heatmap_overlay(small, small_cam)
    boxed = outline_polygons(overlay, polygons, scale)
    n_boxes = len(polygons)
    return [
        {"caption": "Input", "src": png_data_uri(small)},
        {"caption": "Grad-CAM", "src": png_data_uri(overlay)},
        {"caption": f"Text boxes ({n_boxes})", "src": png_data_uri(boxed)},
    ]


def _edit_regions(edits: dict, order: list[str]) -> list[str]:
    """Regions with a counterfactual view ("<r>_removed" / "<r>_placebo"), in ``order`` first."""
    found = []
    for key in edits:
        for suffix in ("_removed", "_placebo"):
            if isinstance(key, str) and key.endswith(suffix) and key[: -len(suffix)] not in found:
                found.append(key[: -len(suffix)])
    return [r for r in order if r in found] + [r for r in found if r not in order]


def edit_rows(item: GalleryItem, order: list[str] | None = None) -> list[dict[str, Any]]:
    """One row per edited region: the region-removed image, the placebo (outlined) and what the
    model predicted before and after each edit."""
    edits = as_dict(getattr(item, "edits", None))
    before = str(item.pred)
    rows = []
    for r in _edit_regions(edits, order or []):
        label = region_label(r)
        removed, placebo = as_dict(edits.get(f"{r}_removed")), as_dict(edits.get(f"{r}_placebo"))
        panels, changes = [], []
        for view, caption, outline, what in (
            (removed, f"{label} removed", False, f"{label} removed"),
            (placebo, "Placebo (outlined)", True, "Placebo"),
        ):
            if not view:
                continue
            panel = edit_panel(view, caption, outline)
            if panel:
                panels.append(panel)
            text, flipped = after_text(view, before)
            changes.append({"label": what, "after": text, "flipped": flipped})
        if changes:
            rows.append({"region": r, "panels": panels, "changes": changes,
                         "before": f"{before} {fmt_pct(item.confidence, 0)}"})
    return rows


def _item_metrics(item: GalleryItem, regions: list[str], thresholds: dict[str, float | None]) -> list[dict[str, str]]:
    """Caption figures per region: mass and lift (the numbers the ranking is about)."""
    metrics = as_dict(item.metrics)
    out = []
    for r in regions or ["text"]:
        mass, lift = metrics.get(f"{r}_mass"), metrics.get(f"{r}_lift")
        if mass is None and lift is None:
            continue
        out.append({"label": f"{region_label(r)} mass", "value": fmt_pct(mass), "cls": ""})
        out.append({"label": f"{region_label(r)} lift", "value": fmt_float(lift),
                    "cls": lift_level(lift, thresholds.get(r))})
    return out


def build_gallery(
    gallery: list[GalleryItem], regions: list[str], thresholds: dict[str, float | None] | None = None,
    edit_order: list[str] | None = None,
) -> list[dict[str, Any]]:
    """Template-ready gallery cards, keeping the caller's ranking."""
    cards = []
    for rank, item in enumerate(gallery or [], start=1):
        label = None if item.label is None else str(item.label)
        cards.append({
            "rank": rank,
            "path": str(item.path),
            "label": label if label is not None else DASH,
            "pred": str(item.pred),
            "mismatch": label is not None and label != str(item.pred),
            "confidence": fmt_pct(item.confidence),
            "score": fmt_float(item.score, 3),
            "metrics": _item_metrics(item, regions, thresholds or {}),
            "panels": gallery_panels(item),
            "edits": edit_rows(item, edit_order),
        })
    return cards
