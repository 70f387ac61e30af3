"""The token stage: group text instances into tokens, test the riskiest, flag, and summarise."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from auditors.config.schema import AuditConfig
from auditors.data.batches import Preprocess
from auditors.measure.gallery import GalleryItem
from auditors.analysis.gate import token_decisions
from auditors.analysis.stats import interval
from auditors.models.engines import engine_for
from auditors.models.loading import select_device
from auditors.tokens.effects import risk_score, select_effect_tokens, token_effect
from auditors.tokens.grouping import TokenSettings, assign_tokens, token_table
from auditors.tokens.pair_store import PairSimilarities

__all__ = ["TokenResult", "analyse_tokens"]


@dataclass
class TokenResult:
    table: pd.DataFrame  # every token on >= min_images images, ranked by risk
    summary: list[dict[str, Any]]  # top N, JSON-ready
    examples: dict[str, list[GalleryItem]] = field(default_factory=dict)
    crops: dict[str, list[np.ndarray]] = field(default_factory=dict)
    stats: dict[str, int] = field(default_factory=dict)  # token_pairs_reused / _computed (summary incremental)


def _settings(cfg: AuditConfig) -> TokenSettings:
    t = cfg.tokens
    return TokenSettings(
        min_text_length=t.min_text_length, min_text_conf=t.min_text_conf, max_hamming=t.max_hamming, min_images=t.min_images,
        max_visual_distance=t.max_visual_distance, max_edit_distance=t.max_edit_distance,
    )


def _num(v: Any) -> float | None:
    return float(v) if v is not None and np.isfinite(v) else None


def analyse_tokens(
    cfg: AuditConfig, instances: pd.DataFrame, images: pd.DataFrame, group_by: str, classes: list[str], target_layer: str,
    pairs: PairSimilarities | None = None,
) -> TokenResult:
    """Assign a ``token`` to every instance (in place) and build the ranked token table.

    ``pairs``: crop similarities stored by earlier runs (``<cache_dir>/token_pairs.sqlite``).
    """
    s = _settings(cfg)
    counted = instances[instances["is_text"].fillna(True).astype(bool)]
    pair_stats = pairs.stats if pairs is not None else {}
    if counted.empty:
        instances["token"] = pd.Series(dtype="string")
        return TokenResult(pd.DataFrame(), [], stats=dict(pair_stats))
    instances["token"] = pd.Series(pd.NA, index=instances.index, dtype="string")
    instances.loc[counted.index, "token"] = assign_tokens(counted, s, pairs).astype("string")
    ok_images = images[images["cam_status"] == "ok"]
    table = token_table(instances.loc[counted.index].assign(token=instances.loc[counted.index, "token"]), ok_images, group_by, s)
    if table.empty:
        return TokenResult(table, [], stats=dict(pair_stats))
    n_total = len(ok_images)
    table["effect"] = np.nan
    table["effect_ci"] = None
    table["flip_rate_removed"] = np.nan
    table["flip_rate_placebo"] = np.nan
    table["n_tested"] = 0
    table["effect_p_value"] = np.nan
    table["n_no_placebo"] = 0  # images of the token left out of its effect: no placebo avoiding all text
    table["risk"] = table.apply(risk_score, axis=1, n_images_total=n_total)
    table = table.sort_values(["risk", "n_images"], ascending=False).reset_index(drop=True)
    examples: dict[str, list[GalleryItem]] = {}
    crops: dict[str, list[np.ndarray]] = {}
    labels = dict(zip(images["path"], images["label"]))
    if cfg.counterfactual.enabled and cfg.tokens.effect_tokens > 0:
        device = select_device(cfg.cam.device)
        engine = engine_for(cfg.model, cfg.cam, target_layer, device)
        prep = Preprocess.of(cfg.model)
        for i in select_effect_tokens(table, cfg.tokens.effect_tokens):
            token = table.at[i, "token"]
            res = token_effect(
                token, instances[instances["token"] == token], labels, classes, engine=engine, device=device, prep=prep,
                root=cfg.dataset.root, cf=cfg.counterfactual, stats=cfg.stats,
                max_images=cfg.tokens.max_effect_images, batch_size=cfg.cam.batch_size, all_instances=instances,
                max_effect=cfg.tokens.max_effect,
            )
            for key in ("effect", "flip_rate_removed", "flip_rate_placebo", "n_tested", "n_no_placebo", "effect_p_value"):
                table.at[i, key] = res[key] if res[key] is not None else np.nan
            table.at[i, "effect_ci"] = res["effect_ci"]
            examples[token], crops[token] = res["examples"], res["crops"]
        table["risk"] = table.apply(risk_score, axis=1, n_images_total=n_total)
        table = table.sort_values(["risk", "n_images"], ascending=False).reset_index(drop=True)
    decisions = token_decisions(table, cfg.tokens)
    for col in decisions.columns:
        table[col] = decisions[col]
    # Flagged tokens first (dependence, then association), each group by risk: the report's top
    # row is the most serious finding, not the most class-skewed mark.
    table = table.sort_values(["flagged", "dependent", "risk", "n_images"], ascending=False, kind="stable").reset_index(drop=True)
    summary = [
        {
            "token": r.token,
            "kind": r.token.split(":", 1)[0],
            "example_text": r.example_text,
            "n_images": int(r.n_images),
            "n_instances": int(r.n_instances),
            "top_class": r.top_class,
            "class_share": float(r.class_share),
            "class_shares": r.class_shares,
            "p_value": float(r.p_value),
            "mass": float(r.mass),
            "area": float(r.area),
            "lift": float(r.lift),
            "effect": None if not np.isfinite(r.effect) else float(r.effect),
            "effect_ci": list(interval(r.effect_ci) or []) or None,
            "flip_rate_removed": None if not np.isfinite(r.flip_rate_removed) else float(r.flip_rate_removed),
            "flip_rate_placebo": None if not np.isfinite(r.flip_rate_placebo) else float(r.flip_rate_placebo),
            "n_no_placebo": int(r.n_no_placebo),
            # issue 10: two findings kept apart (data association vs model dependence)
            "q_value": _num(r.q_value),
            "associated": bool(r.associated),
            "attended": bool(r.attended),
            "effect_p_value": _num(r.effect_p_value),
            "effect_q_value": _num(r.effect_q_value),
            "dependent": bool(r.dependent),
            "finding": r.finding if isinstance(r.finding, str) else None,
            "findings": r.findings,  # which fired: associated | dependent | both | none
            "fails_on": r.fails_on if isinstance(r.fails_on, str) else None,  # the findings that fail the gate
            "risk": float(r.risk),
            "flagged": bool(r.flagged),
        }
        for r in table.head(cfg.tokens.top_n).itertuples()
    ]
    return TokenResult(table, summary, examples, crops, stats=dict(pair_stats))
