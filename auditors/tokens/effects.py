"""Token effects: remove only one token's instances (vs a matched placebo) and re-run the model.

Runs after the whole dataset is grouped into tokens, on the riskiest few tokens only, with a
bounded number of images each: its cost is independent of the dataset size.
"""

from __future__ import annotations

import json
import math
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from auditors.cam import CamEngine
from auditors.config.schema import CounterfactualConfig, StatsConfig
from auditors.interventions.edits import image_seed, plan_intervention
from auditors.data.discovery import Entry, chunked
from auditors.measure.gallery import GalleryItem
from auditors.data.geometry import image_area_mask, polygons_to_mask, warp_points
from auditors.measure.instances import polygon_crop
from auditors.measure.metrics import upsample_maps
from auditors.data.batches import Preprocess, load_batch, to_input
from auditors.measure.metrics import display_map
from auditors.models.engines import class_name
from auditors.analysis.stats import mean_ci, mean_pvalue

__all__ = ["token_effect", "risk_score", "sample_paths", "select_effect_tokens"]


def token_effect(
    token: str,
    instances: pd.DataFrame,
    labels: dict[str, str | None],
    classes: list[str],
    *,
    engine: CamEngine,
    device: torch.device,
    prep: Preprocess,
    root: Path,
    cf: CounterfactualConfig,
    stats: StatsConfig,
    max_images: int,
    batch_size: int,
    max_effect: float = 0.0,
    n_examples: int = 3,
    n_crops: int = 4,
    all_instances: pd.DataFrame | None = None,
) -> dict[str, Any]:
    """Flip rates, confidence drops and effect (with interval) of removing ``token``.

    ``instances``: the token's rows of text_instances (path, polygon, relative to ``root``);
    at most ``max_images`` of its images are edited (``cf`` says how), ``batch_size`` at a time.
    ``all_instances``: every text instance (any token); the placebo avoids all of them, so it
    never removes other text. Images without a valid placebo are skipped and counted
    (``n_no_placebo``). Returns statistics plus example crops and gallery items for the report.
    """
    paths = sample_paths(list(dict.fromkeys(instances["path"])), max_images, stats.seed, token)
    polys = {p: [np.asarray(json.loads(s)) for s in g["polygon"]] for p, g in instances[instances["path"].isin(paths)].groupby("path")}
    every = instances if all_instances is None else all_instances
    all_polys = {p: [np.asarray(json.loads(s)) for s in g["polygon"]] for p, g in every[every["path"].isin(paths)].groupby("path")}
    n_no_placebo = 0
    size = prep.input_size
    effects, flips_removed, flips_placebo, drops_removed, drops_placebo = [], [], [], [], []
    examples: list[GalleryItem] = []
    crops: list[np.ndarray] = []
    for batch in chunked([Entry(p, labels.get(p)) for p in paths], batch_size):
        loaded = load_batch(batch, Path(root), prep, [])
        plans, kept = [], []
        for it in loaded:
            model_polys = [warp_points(p, it.placement) for p in polys[it.path]]
            mask = polygons_to_mask(model_polys, size)
            if len(crops) < n_crops:
                crops.append(polygon_crop(it.original, polys[it.path][0], pad=2))
            avoid = polygons_to_mask([warp_points(p, it.placement) for p in all_polys.get(it.path, [])], size)
            plan = plan_intervention(it.model_view, mask, method=cf.method, radius=cf.radius, margin=cf.margin,
                                     seed=image_seed(cf.seed, it.digest, token), tries=cf.placebo_tries, avoid=avoid,
                                     content=image_area_mask(it.placement), tolerance=cf.placebo_max_overlap)
            if plan is not None and not plan.has_placebo:
                n_no_placebo += 1
            elif plan is not None:
                plans.append((plan, model_polys))
                kept.append(it)
        if not kept:
            continue
        n = len(kept)
        views = [it.model_view for it in kept] + [p.removed for p, _ in plans] + [p.placebo for p, _ in plans]
        base = engine.compute(to_input(views[:n], prep, device))
        out = engine.compute(to_input(views[n:], prep, device), base.targets.repeat(2))
        pred = base.probs.argmax(1)
        conf = base.probs.gather(1, pred[:, None])[:, 0]
        after = out.probs.gather(1, pred.repeat(2)[:, None])[:, 0]
        after_pred = out.probs.argmax(1)
        maps = upsample_maps(base.maps, size)
        for i, it in enumerate(kept):
            dr, dp = float(conf[i] - after[i]), float(conf[i] - after[n + i])
            drops_removed.append(dr)
            drops_placebo.append(dp)
            effects.append(dr - dp)
            flips_removed.append(float(after_pred[i] != pred[i]))
            flips_placebo.append(float(after_pred[n + i] != pred[i]))
            if len(examples) < n_examples:
                plan, model_polys = plans[i]
                examples.append(
                    GalleryItem(
                        path=it.path, label=it.entry.label, pred=class_name(classes, int(pred[i])),
                        confidence=float(conf[i]), score=dr - dp, metrics={"token_effect": dr - dp},
                        image=it.model_view,
                        cam=display_map(maps[i]),
                        regions={"token": plan.removed_mask}, text_polygons=model_polys,
                        edits={
                            "token_removed": {"image": plan.removed, "mask": plan.removed_mask,
                                              "pred": class_name(classes, int(after_pred[i])), "confidence": float(after[i])},
                            "token_placebo": {"image": plan.placebo, "mask": plan.placebo_mask,
                                              "pred": class_name(classes, int(after_pred[n + i])), "confidence": float(after[n + i])},
                        },
                    )
                )
    eff = np.array(effects, float)
    st = stats
    return {
        "n_tested": len(effects),
        "n_no_placebo": n_no_placebo,
        "flip_rate_removed": float(np.mean(flips_removed)) if flips_removed else None,
        "flip_rate_placebo": float(np.mean(flips_placebo)) if flips_placebo else None,
        "conf_drop_removed": float(np.mean(drops_removed)) if drops_removed else None,
        "conf_drop_placebo": float(np.mean(drops_placebo)) if drops_placebo else None,
        "effect": float(eff.mean()) if len(eff) else None,
        "effect_ci": mean_ci(eff, st.bootstrap, st.ci, st.seed),
        # one-sided H0 effect <= max_effect (issue 10); Student t: calibrated on few images
        "effect_p_value": mean_pvalue(eff, max_effect),
        "examples": examples,
        "crops": crops,
    }


def risk_score(row: pd.Series, n_images_total: int) -> float:
    """Frequent x class-associated x attended x effective, each factor >= 0.

    Association is -log10(p) of the one-sided Fisher test (capped at 10); attention is the
    lift above uniform; effect the confidence drop beyond placebo.
    """
    assoc = min(10.0, -math.log10(max(row["p_value"], 1e-300))) if np.isfinite(row["p_value"]) else 0.0
    attention = max(row["lift"] - 1.0, 0.0) if np.isfinite(row["lift"]) else 0.0
    effect = row.get("effect")
    effect = max(effect, 0.0) if effect is not None and np.isfinite(effect) else 0.0
    frequency = math.log1p(row["n_images"]) / math.log1p(max(n_images_total, 1))
    return float(frequency * (1.0 + assoc) * (1.0 + attention) * (1.0 + 10.0 * effect))


def sample_paths(paths: list[str], k: int, seed: int, token: str) -> list[str]:
    """A seeded random sample of ``k`` of a token's images, not the first ``k`` in dataset order.

    Dataset order is often class order, so the first N images would all come from one class.
    The seed mixes ``stats.seed`` with the token key: reproducible, independent per token.
    """
    if len(paths) <= k:
        return paths
    rng = np.random.default_rng([seed & 0x7FFFFFFF, zlib.crc32(token.encode())])
    idx = np.sort(rng.choice(len(paths), size=k, replace=False))
    return [paths[i] for i in idx]


def select_effect_tokens(table: pd.DataFrame, k: int) -> list[int]:
    """Up to ``k`` rows to test by removal, taken in turn from three rankings.

    Ranking by association alone would never test a mark that is balanced across classes, which
    is exactly the case where only the model's dependence can reveal it: so the risk ranking
    (association-led), frequency (``n_images``) and attention (``lift``) each contribute.
    """
    if k <= 0 or table.empty:
        return []
    rankings = [
        list(table.sort_values(["risk", "n_images"], ascending=False, kind="stable").index),
        list(table.sort_values(["n_images", "lift"], ascending=False, kind="stable").index),
        list(table.assign(_l=table["lift"].fillna(-np.inf)).sort_values(["_l", "n_images"], ascending=False, kind="stable").index),
    ]
    chosen: list[int] = []
    pos = 0
    while len(chosen) < min(k, len(table)):
        for r in rankings:
            if pos < len(r) and r[pos] not in chosen and len(chosen) < k:
                chosen.append(r[pos])
        pos += 1
    return chosen
