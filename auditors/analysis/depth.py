"""Summary of the CAM variants: per-layer region lift (cam.layers) and per-target-class stats (top-k).

Per layer the lift follows the main aggregate's definition (ratio of mean mass to mean area,
percentile-bootstrap interval resampling images), so ``layers.classes[c][layer]["text_lift"]``
for the target layer equals ``classes[c]["text_lift"]``. Top-k aggregates group targets.parquet
by the *target* class (every rank), which answers "where does the model look when it scores
class c, whether or not it predicts c".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from auditors.analysis.aggregate import _seed, class_stats
from auditors.analysis.stats import ratio_ci
from auditors.config.schema import AuditConfig

__all__ = ["layer_stats", "variant_summary"]


def _layer_group(df: pd.DataFrame, cfg: AuditConfig, layers: list[str], regions: list[str], group: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    st = cfg.stats
    for layer in layers:
        per: dict[str, Any] = {}
        for r in regions:
            mass = df[f"{r}_mass@{layer}"].to_numpy(float)
            area = df[f"{r}_area"].to_numpy(float)
            both = np.isfinite(mass) & np.isfinite(area)
            lift = float(mass[both].mean() / area[both].mean()) if both.any() and area[both].mean() > 0 else None
            per[f"{r}_mass"] = float(mass[both].mean()) if both.any() else None
            per[f"{r}_lift"] = lift
            per[f"{r}_lift_ci"] = ratio_ci(mass, area, st.bootstrap, st.ci, _seed(st, group, f"{r}_lift@{layer}"))
        out[layer] = per
    return out


def layer_stats(images: pd.DataFrame, cfg: AuditConfig, classes: list[str], regions: list[str], by: str) -> dict[str, Any]:
    """``{"names": [...], "classes": {c: {layer: {r_mass, r_lift, r_lift_ci}}}, "overall": {...}}``."""
    layers = list(cfg.cam.layers or [])
    ok = images[images["cam_status"] == "ok"]
    return {
        "names": layers,
        "classes": {c: _layer_group(ok[ok[by] == c], cfg, layers, regions, f"class:{c}") for c in classes},
        "overall": _layer_group(ok, cfg, layers, regions, "overall"),
    }


def target_stats(targets: pd.DataFrame, cfg: AuditConfig, classes: list[str], regions: list[str]) -> dict[str, Any]:
    """Per target class (all ranks) region stats, and how many rows each rank contributed."""
    # interventions run for the rank-0 target only (images.parquet): targets.parquet has no edit columns
    cfg = cfg.model_copy(update={"counterfactual": cfg.counterfactual.model_copy(update={"enabled": False})})
    ok = targets[targets["cam_status"] == "ok"]
    per = {c: {**class_stats(ok[ok["target"] == c], cfg, regions, f"target:{c}"),
               "n_by_rank": {int(k): int(v) for k, v in ok.loc[ok["target"] == c, "target_rank"].value_counts().sort_index().items()}}
           for c in classes}
    return {"k": cfg.cam.k, "n_rows": int(len(targets)), "classes": per}


def variant_summary(
    cfg: AuditConfig, images: pd.DataFrame, run_dir: Path, classes: list[str], regions: list[str], by: str
) -> dict[str, Any]:
    """Additive summary.json keys: ``layers``, ``targets`` (null when off) and ``exports``."""
    targets = None
    if cfg.cam.target == "topk":
        targets = target_stats(pd.read_parquet(run_dir / "targets.parquet"), cfg, classes, regions)
    return {
        "layers": layer_stats(images, cfg, classes, regions, by) if cfg.cam.layers else None,
        "targets": targets,
        "exports": {
            "regions": "regions.parquet",
            "targets": "targets.parquet" if cfg.cam.target == "topk" else None,
            "cams": "cams.npz" if cfg.output.save_cams else None,
        },
    }
