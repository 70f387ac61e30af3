"""The pointing game: does the heatmap's peak fall on the region a human annotated?

Per class: the hit rate (share of images whose CAM argmax lies in ``regions.expected``, within
``cam.pointing_tolerance`` pixels) with a bootstrap interval, against the chance rate: the share
a uniformly random peak would score, i.e. the mean dilated area of the annotation
(``expected_hit_area``). An image without an annotation (empty region), whose region failed, or
whose CAM is degenerate cannot be judged and is left out; ``n`` counts the judged images.
Mass and lift on the annotation come with it (lift > 1: more attention than its area).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from auditors.analysis.aggregate import _seed
from auditors.analysis.stats import finite, mean_ci, ratio_ci
from auditors.config.schema import AuditConfig

__all__ = ["pointing_stats", "group_pointing"]


def group_pointing(df: pd.DataFrame, cfg: AuditConfig, group: str) -> dict[str, Any]:
    """Pointing-game numbers of one group of images (already restricted to judged images)."""
    st = cfg.stats
    hit = df["expected_hit"].to_numpy(float)
    chance = df["expected_hit_area"].to_numpy(float)
    mass, area = df["expected_mass"].to_numpy(float), df["expected_area"].to_numpy(float)
    n = int(len(df))
    ci = mean_ci(hit, st.bootstrap, st.ci, _seed(st, group, "pointing_hit")) if n else None
    lift_ci = ratio_ci(mass, area, st.bootstrap, st.ci, _seed(st, group, "pointing_lift")) if n else None
    return {
        "n": n,
        "hits": int(np.nansum(hit)) if n else 0,
        "hit_rate": finite(hit.mean()) if n else None,
        "hit_rate_ci": list(ci) if ci else None,
        "chance": finite(chance.mean()) if n else None,
        "mass": finite(mass.mean()) if n else None,
        "lift": finite(mass.mean() / area.mean()) if n and area.mean() > 0 else None,
        "lift_ci": list(lift_ci) if lift_ci else None,
    }


def pointing_stats(images: pd.DataFrame, cfg: AuditConfig, classes: list[str], by: str) -> dict[str, Any] | None:
    """summary.json ``pointing``: per class and overall; None when regions.expected is off."""
    if not cfg.regions.expected.enabled or "expected_hit" not in images.columns:
        return None
    judged = images[
        (images["cam_status"] == "ok") & images["expected_hit"].notna() & (images["expected_area"] > 0)
        & images["expected_hit_area"].notna()
    ]
    n_unannotated = int(((images["cam_status"] == "ok") & ~(images["expected_area"] > 0)).sum())
    return {
        "tolerance_px": cfg.cam.pointing_tolerance,
        "source": cfg.regions.expected.source,
        "n_judged": int(len(judged)),
        "n_unannotated": n_unannotated,
        "classes": {c: group_pointing(judged[judged[by] == c], cfg, f"pointing:{c}") for c in classes},
        "overall": group_pointing(judged, cfg, "pointing:overall"),
    }
