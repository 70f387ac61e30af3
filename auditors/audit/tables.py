"""The per-image output tables' columns and dtypes (the output contract: extend, never rename)."""

from __future__ import annotations

import pandas as pd

from auditors.config.schema import AuditConfig
from auditors.audit.variants import variant_columns
from auditors.interventions.runner import counterfactual_columns
from auditors.regions.build import RegionBuilder, region_names

__all__ = ["row_columns", "wants_instances", "empty_rows"]


def row_columns(cfg: AuditConfig) -> dict[str, str]:
    """images.parquet columns and dtypes (the output contract; extend, never rename)."""
    regions = region_names(cfg)
    cols = {
        "path": "string",
        "label": "string",
        "pred": "string",
        "confidence": "float64",
        "target": "string",
        "target_prob": "float64",
        "cam_status": "string",
        "width": "int64",
        "height": "int64",
        "content_hash": "string",
    }
    cols.update(RegionBuilder.column_dtypes(cfg.regions))
    for r in regions:
        cols.update({f"{r}_mass": "float64", f"{r}_area": "float64", f"{r}_lift": "float64", f"{r}_hit": "float64"})
    if wants_instances(cfg):
        cols.update({"text_top_instance": "Int64", "text_top_instance_mass": "float64", "text_top_instance_share": "float64"})
    cols.update(counterfactual_columns(cfg.counterfactual, regions))
    cols.update(variant_columns(cfg, regions))  # cam.target: topk / cam.layers (none by default)
    for r in regions:  # added after the 0.1 columns: extend, never reorder
        cols.update({f"{r}_max_lift": "float64", f"{r}_norm_lift": "float64"})
    return cols


def wants_instances(cfg: AuditConfig) -> bool:
    """Per-instance text rows are needed by the token stage."""
    return cfg.regions.text.enabled and cfg.tokens.enabled


def empty_rows(cfg: AuditConfig) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in row_columns(cfg).items()})
