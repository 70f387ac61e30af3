"""Per-class and overall aggregates of the per-image table, with bootstrap intervals.

Aggregates: ``<r>_mass`` and ``<r>_area`` are means over the class's images with a defined
value; ``<r>_lift`` is the ratio of those means (not the mean of per-image lifts, which
explodes on images with tiny regions); ``<r>_hit_rate`` is the share of pointing hits and
``<r>_hit_expected`` the share a uniformly random peak would score (the mean area).
Every mean comes with a percentile-bootstrap interval that resamples images; a statistic the
gate tests also gets ``<key>_p_value`` (one-sided bootstrap p-value against its threshold, read
off the same resamples: ``analysis.pvalues``) and ``<key>_p_threshold``.
"""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np
import pandas as pd

from auditors.config.schema import AuditConfig, StatsConfig
from auditors.analysis.gate import grid_rules
from auditors.analysis.pvalues import mean_test, ratio_test
from auditors.analysis.stats import finite, mean_ci

__all__ = ["aggregate", "class_stats"]


def _mean(s: pd.Series) -> float | None:
    return finite(s.mean()) if s.notna().any() else None


def _seed(stats: StatsConfig, group: str, key: str) -> int:
    """Independent, reproducible resampling per (group, statistic)."""
    return (stats.seed * 1_000_003 + zlib.crc32(f"{group}|{key}".encode())) & 0x7FFFFFFF


def _tested(key: str, ci_p: tuple[Any, float | None], limits: dict[str, float]) -> dict[str, Any]:
    """``<key>_ci`` and, where the gate tests ``key``, ``<key>_p_value`` / ``<key>_p_threshold``."""
    ci, p = ci_p
    out: dict[str, Any] = {f"{key}_ci": ci}
    if key in limits and p is not None:
        out[f"{key}_p_value"], out[f"{key}_p_threshold"] = p, float(limits[key])
    return out


def _reachable_stats(df: pd.DataFrame, r: str, st: StatsConfig, group: str, limits: dict[str, float]) -> dict[str, Any]:
    """``<r>_max_lift`` (mean reachable mass / mean area) and ``<r>_norm_lift`` (mean mass / mean
    reachable mass, with interval): the share of the mass a map at the target layer's
    resolution could put on the region that it does put there, comparable across models."""
    if f"{r}_max_lift" not in df:
        return {}
    mass, area = df[f"{r}_mass"].to_numpy(float), df[f"{r}_area"].to_numpy(float)
    reach = df[f"{r}_max_lift"].to_numpy(float) * area
    ok = np.isfinite(mass) & np.isfinite(reach) & np.isfinite(area)
    max_lift = reach[ok].mean() / area[ok].mean() if ok.any() and area[ok].mean() > 0 else float("nan")
    norm = mass[ok].mean() / reach[ok].mean() if ok.any() and reach[ok].mean() > 0 else float("nan")
    return {
        f"{r}_max_lift": finite(max_lift),
        f"{r}_norm_lift": finite(norm),
        **_tested(f"{r}_norm_lift", ratio_test(mass[ok], reach[ok], limits.get(f"{r}_norm_lift"), st.bootstrap, st.ci,
                                               _seed(st, group, f"{r}_norm_lift")), limits),
    }


def _region_stats(df: pd.DataFrame, r: str, st: StatsConfig, group: str, limits: dict[str, float]) -> dict[str, Any]:
    mass, area = df[f"{r}_mass"].to_numpy(float), df[f"{r}_area"].to_numpy(float)
    both = np.isfinite(mass) & np.isfinite(area)
    lift = mass[both].mean() / area[both].mean() if both.any() and area[both].mean() > 0 else float("nan")
    return {**_reachable_stats(df, r, st, group, limits),
        f"{r}_mass": _mean(df[f"{r}_mass"]),
        f"{r}_area": _mean(df[f"{r}_area"]),
        f"{r}_lift": finite(lift),
        f"{r}_hit_rate": _mean(df[f"{r}_hit"]),
        f"{r}_hit_expected": _mean(df[f"{r}_area"]),
        f"{r}_mass_ci": mean_ci(mass, st.bootstrap, st.ci, _seed(st, group, f"{r}_mass")),
        f"{r}_area_ci": mean_ci(area, st.bootstrap, st.ci, _seed(st, group, f"{r}_area")),
        **_tested(f"{r}_lift", ratio_test(mass, area, limits.get(f"{r}_lift"), st.bootstrap, st.ci, _seed(st, group, f"{r}_lift")), limits),
    }


def _counterfactual_stats(df: pd.DataFrame, r: str, st: StatsConfig, group: str, limits: dict[str, float]) -> dict[str, Any]:
    edited = df[df[f"{r}_removed_conf"].notna()]
    effect = edited[f"{r}_effect"].to_numpy(float)
    out = {
        f"n_{r}_edited": int(len(edited)),
        f"flip_rate_{r}_removed": _mean(edited[f"{r}_removed_flip"]),
        f"flip_rate_{r}_placebo": _mean(edited[f"{r}_placebo_flip"]),
        f"conf_drop_{r}_removed": _mean(edited["confidence"] - edited[f"{r}_removed_conf"]),
        f"conf_drop_{r}_placebo": _mean(edited["confidence"] - edited[f"{r}_placebo_conf"]),
        f"{r}_effect": _mean(edited[f"{r}_effect"]),
        **_tested(f"{r}_effect", mean_test(effect, limits.get(f"{r}_effect"), st.bootstrap, st.ci, _seed(st, group, f"{r}_effect")), limits),
    }
    status = df.get(f"{r}_placebo_status")
    # Images with the region but no valid placebo: left out of the effect above, counted here.
    out[f"n_{r}_no_placebo"] = int((status.notna() & (status != "ok")).sum()) if status is not None else 0
    return out


def _accuracy(df: pd.DataFrame, cf_regions: list[str]) -> dict[str, float | None] | None:
    """Accuracy on originals and on each edited set (unedited images keep their prediction)."""
    labelled = df[df["label"].notna()]
    if labelled.empty:
        return None
    acc: dict[str, float | None] = {"original": finite((labelled["pred"] == labelled["label"]).mean())}
    for r in cf_regions:
        for edit in ("removed", "placebo"):
            after = labelled[f"{r}_{edit}_pred"].fillna(labelled["pred"])
            acc[f"{r}_{edit}"] = finite((after == labelled["label"]).mean())
        acc[f"{r}_gap"] = finite(acc["original"] - acc[f"{r}_removed"])
    return acc


def class_stats(df: pd.DataFrame, cfg: AuditConfig, regions: list[str], group: str) -> dict[str, Any]:
    """Every statistic of one group of images (a class, or all images)."""
    out: dict[str, Any] = {"n": int(len(df))}
    cf_regions = cfg.counterfactual_regions()
    limits = dict(grid_rules(cfg.gate, regions, cf_regions))  # the gate's (key, threshold) grid
    for r in regions:
        out.update(_region_stats(df, r, cfg.stats, group, limits))
    for r in cf_regions:
        out.update(_counterfactual_stats(df, r, cfg.stats, group, limits))
    # Contract keys (summary.json since 0.1): text removal vs placebo flip rates.
    out.setdefault("flip_rate_text_removed", None)
    out["flip_rate_placebo"] = out.get("flip_rate_text_placebo")
    out["accuracy"] = _accuracy(df, cf_regions)
    return out


def aggregate(images: pd.DataFrame, cfg: AuditConfig, classes: list[str], regions: list[str], by: str) -> tuple[dict, dict]:
    """Per-class stats (every model class appears, with n=0 when absent) and overall stats.

    Images whose CAM is degenerate (all zero, NaN) are left out: their ratios are undefined.
    """
    ok = images[images["cam_status"] == "ok"]
    per_class = {c: class_stats(ok[ok[by] == c], cfg, regions, f"class:{c}") for c in classes}
    return per_class, class_stats(ok, cfg, regions, "overall")
