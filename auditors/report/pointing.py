"""The pointing-game section: does the heatmap peak on what a human annotated (regions.expected)?

Reads ``summary.pointing`` (analysis/pointing.py) and the biggest misses collected by the chunk
loop. A class's hit rate is compared with its chance rate (the annotated share of the image,
grown by the tolerance): above chance only when the whole interval is above it.
"""

from __future__ import annotations

from typing import Any

from auditors.analysis.stats import finite as num
from auditors.analysis.stats import interval
from auditors.audit.summary import PointingGroup, Summary
from auditors.measure.gallery import GalleryItem
from auditors.report.facts import ci_level
from auditors.report.formatting import DASH, as_dict, fmt_ci, fmt_float, fmt_int, fmt_pct, fmt_text, pct_words, plural, sort_key
from auditors.report.images import (
    as_rgb_uint8, cam_like, display_scale, heatmap_overlay, mask_polygons, outline_polygons, png_data_uri, resize,
)

__all__ = ["build_pointing", "pointing_sentence", "versus_chance"]


def versus_chance(g: PointingGroup) -> tuple[str, str]:
    """(status, words): 'above' / 'below' when the hit-rate interval excludes the chance rate."""
    ci, chance = interval(g.hit_rate_ci), num(g.chance)
    if ci is None or chance is None:
        return "none", "too few images to tell"
    if ci[0] > chance:
        return "above", "above chance"
    if ci[1] < chance:
        return "below", "below chance"
    return "chance", "not distinguishable from chance"


def pointing_sentence(group: str | None, g: PointingGroup) -> str:
    """"The model points at the annotated object in 71% of horror images (chance 18%)."""
    where = "of all judged images" if group is None else f"of {group} images"
    return (f"The model points at the annotated object in {pct_words(g.hit_rate)} {where} "
            f"(chance {pct_words(g.chance)}, {plural(g.n, 'image')}).")


def _miss_card(rank: int, item: GalleryItem) -> dict[str, Any]:
    rgb = as_rgb_uint8(item.image)
    panels = []
    if rgb is not None:
        scale = display_scale(rgb.shape)
        outline = mask_polygons(as_dict(item.regions).get("expected"), rgb.shape[:2])
        small = resize(rgb, scale)
        overlay = heatmap_overlay(small, resize(cam_like(item.cam, rgb.shape[:2]), scale))
        panels = [
            {"caption": "Annotated region", "src": png_data_uri(outline_polygons(small, outline, scale))},
            {"caption": "Grad-CAM", "src": png_data_uri(overlay)},
            {"caption": "Grad-CAM, annotation outlined", "src": png_data_uri(outline_polygons(overlay, outline, scale))},
        ]
    m = as_dict(item.metrics)
    label = None if item.label is None else str(item.label)
    return {
        "rank": rank, "path": str(item.path), "label": label if label is not None else DASH, "pred": str(item.pred),
        "confidence": fmt_pct(item.confidence), "panels": panels,
        "metrics": [{"label": "Mass on annotation", "value": fmt_pct(m.get("expected_mass"))},
                    {"label": "Annotated area", "value": fmt_pct(m.get("expected_area"))},
                    {"label": "Lift", "value": fmt_float(m.get("expected_lift"))}],
    }


def build_pointing(summary: Summary, misses: list[GalleryItem] | None = None) -> dict[str, Any] | None:
    """The section's context; None when the run had no regions.expected."""
    p = summary.pointing
    if p is None:
        return None
    rows = []
    for name, g in p.classes.items():
        status, words = versus_chance(g)
        rows.append({
            "name": fmt_text(name), "n": fmt_int(g.n), "n_sort": sort_key(g.n),
            "hit_rate": fmt_pct(g.hit_rate), "hit_sort": sort_key(g.hit_rate), "hit_value": num(g.hit_rate), "ci": fmt_ci(g.hit_rate_ci, fmt_pct),
            "chance": fmt_pct(g.chance), "chance_sort": sort_key(g.chance),
            "lift": fmt_float(g.lift), "lift_sort": sort_key(g.lift), "lift_ci": fmt_ci(g.lift_ci),
            "status": status, "words": words,
            "sentence": pointing_sentence(str(name), g) if g.n else "",
        })
    overall = p.overall or PointingGroup()
    return {
        "headline": pointing_sentence(None, overall) if overall.n else "No image had an annotated region the model could be judged on.",
        "sentences": [r["sentence"] for r in sorted(rows, key=lambda r: -1.0 if r["hit_value"] is None else r["hit_value"], reverse=True) if r["sentence"]],
        "rows": rows,
        "overall_status": versus_chance(overall)[1] if overall.n else "",
        "tolerance": p.tolerance_px,
        "source": fmt_text(p.source),
        "n_judged": fmt_int(p.n_judged),
        "n_unannotated": p.n_unannotated,
        "ci_level": ci_level(summary),
        "misses": [_miss_card(i, it) for i, it in enumerate(misses or [], start=1)],
    }
