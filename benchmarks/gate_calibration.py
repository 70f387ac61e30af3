"""Gate calibration (issue 10): how often does an audit fail when there is nothing to find?

Each simulated audit is a synthetic per-image table (3 classes x ``n`` images, text and border
regions, counterfactual effects) and a token table (tokens on random images, independent of the
class), pushed through the real statistics: ``analysis.aggregate.aggregate`` (bootstrap
intervals), ``analysis.gate.apply_gate`` (BH across the class x region x rule grid),
``tokens.grouping.token_table`` (omnibus association test) and ``analysis.gate.token_decisions``
(BH across tokens, dependence and association). Two nulls:

- ``ignore``: the model ignores text: lift 1, effects 0 (what a clean audit looks like);
- ``boundary``: the worst case the thresholds allow: lift exactly ``max_*_lift``, effects exactly
  ``max_*_effect``, token effects exactly ``tokens.max_effect``; tokens unassociated, and
  ``fail_on_association: true`` so association false alarms count too.

``python benchmarks/gate_calibration.py [n_audits] [ignore|boundary ...]`` prints the share of audits failing per
family and overall, next to the nominal levels and the unadjusted interval rule it replaces.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np
import pandas as pd

from auditors.analysis.aggregate import aggregate
from auditors.analysis.gate import apply_gate, token_decisions
from auditors.analysis.stats import mean_pvalue
from auditors.config import config_from_dict
from auditors.config.schema import AuditConfig
from auditors.tokens.grouping import TokenSettings, token_table

CLASSES = ["a", "b", "c"]
REGIONS = ["text", "border"]


def null_config(bootstrap: int = 1000) -> AuditConfig:
    return config_from_dict(
        {
            "name": "calibration",
            "dataset": {"root": "."},
            "model": {"arch": "resnet18"},
            "counterfactual": {"enabled": True, "regions": REGIONS},
            "tokens": {"fail_on_association": True},
            "stats": {"bootstrap": bootstrap},
            "gate": {"max_lift": {"border": 2.0}, "max_effect": {"border": 0.05}},
        }
    )


def _images(rng: np.random.Generator, n_per_class: int, lift: dict[str, float], effect: dict[str, float]) -> pd.DataFrame:
    n = n_per_class * len(CLASSES)
    df = pd.DataFrame({"path": [f"i{k}.png" for k in range(n)], "label": np.repeat(CLASSES, n_per_class), "cam_status": "ok"})
    df["pred"] = df["label"]
    df["confidence"] = rng.uniform(0.6, 0.99, n)
    for r in REGIONS:
        area = rng.uniform(0.02, 0.2, n)
        noise = rng.lognormal(-0.125, 0.5, n)  # mean 1: E[mass] = lift * E[area]
        df[f"{r}_area"] = area
        df[f"{r}_mass"] = np.clip(area * lift[r] * noise, 0, 1)
        df[f"{r}_hit"] = (rng.random(n) < np.clip(area * lift[r], 0, 1)).astype(float)
        drop_placebo = rng.normal(0.0, 0.03, n)
        drop_removed = drop_placebo + rng.normal(effect[r], 0.05, n)
        df[f"{r}_removed_conf"] = df["confidence"] - drop_removed
        df[f"{r}_placebo_conf"] = df["confidence"] - drop_placebo
        df[f"{r}_effect"] = drop_removed - drop_placebo
        df[f"{r}_removed_flip"] = (drop_removed > 0.3).astype(float)
        df[f"{r}_placebo_flip"] = (drop_placebo > 0.3).astype(float)
        df[f"{r}_removed_pred"] = df["pred"]
        df[f"{r}_placebo_pred"] = df["pred"]
    return df


def _tokens(rng: np.random.Generator, images: pd.DataFrame, cfg: AuditConfig, n_tokens: int, token_effect: float, seed: int) -> pd.DataFrame:
    rows = []
    for t in range(n_tokens):
        size = int(rng.integers(4, len(images) // 3))
        for k, path in enumerate(rng.choice(images["path"], size=size, replace=False)):
            area = rng.uniform(0.005, 0.05)
            rows.append({"token": f"text:t{t}", "path": path, "instance": k, "text": f"t{t}", "area": area,
                         "mass": area * rng.lognormal(-0.125, 0.5)})
    table = token_table(pd.DataFrame(rows), images, "label", TokenSettings(min_images=cfg.tokens.min_images))
    tested = table.sort_values("n_images", ascending=False).index[: cfg.tokens.effect_tokens]
    table["effect_p_value"] = np.nan
    for i in tested:  # the removal test: per-image effects around token_effect, a bounded sample
        n = min(int(table.at[i, "n_images"]), cfg.tokens.max_effect_images)
        eff = rng.normal(token_effect, 0.05, n)
        table.at[i, "effect_p_value"] = mean_pvalue(eff, cfg.tokens.max_effect)  # as tokens.effects.token_effect
    return table


@dataclass
class AuditOutcome:
    grid: bool  # a class flagged by the gate's grid
    grid_unadjusted: bool  # ... by the old rule: any interval lower bound above its threshold
    dependence: bool  # a token flagged for model dependence
    association: bool  # a token flagged for data association (fail_on_association: true)
    association_unadjusted: bool  # ... by the old post-selected best-class Fisher test, p < 0.01

    @property
    def failed(self) -> bool:
        return self.grid or self.dependence or self.association


def simulate_audit(seed: int, null: str, cfg: AuditConfig, n_per_class: int = 40, n_tokens: int = 15) -> AuditOutcome:
    """One audit of data with nothing to find (see the module docstring for the two nulls)."""
    from scipy.stats import fisher_exact

    rng = np.random.default_rng(seed)
    g = cfg.gate
    if null == "ignore":
        lift, effect, tok_effect = {r: 1.0 for r in REGIONS}, {r: 0.0 for r in REGIONS}, 0.0
    elif null == "boundary":
        lift = {"text": g.max_text_lift, "border": g.max_lift["border"]}
        effect = {"text": g.max_text_effect, "border": g.max_effect["border"]}
        tok_effect = cfg.tokens.max_effect
    else:
        raise ValueError(f"null must be 'ignore' or 'boundary', not {null!r}")
    images = _images(rng, n_per_class, lift, effect)
    cfg = cfg.model_copy(update={"stats": cfg.stats.model_copy(update={"seed": seed})})
    per_class, _ = aggregate(images, cfg, CLASSES, REGIONS, "label")
    gate = apply_gate(per_class, g, REGIONS, REGIONS, level=cfg.stats.ci)
    limits = [("text_lift", g.max_text_lift), ("border_lift", g.max_lift["border"]),
              ("text_effect", g.max_text_effect), ("border_effect", g.max_effect["border"])]
    unadjusted = any(
        s.get(f"{k}_ci") is not None and s[f"{k}_ci"][0] > t
        for s in per_class.values() if s["n"] >= g.min_images_per_class for k, t in limits
    )
    table = _tokens(rng, images, cfg, n_tokens, tok_effect, seed)
    decisions = token_decisions(table, cfg.tokens)
    base = images["label"].value_counts()
    old_assoc = False
    for _, row in table.iterrows():  # the old rule: pick the most enriched class, then test it
        shares = row["class_shares"]
        top = max(base.index, key=lambda c: shares.get(c, 0.0) / base[c])
        n_with = row["n_images"]
        a = round(shares.get(top, 0.0) * n_with)
        _, p = fisher_exact([[a, n_with - a], [base[top] - a, len(images) - n_with - base[top] + a]], alternative="greater")
        old_assoc |= p < cfg.tokens.max_p_value
    return AuditOutcome(
        grid=not gate["passed"],
        grid_unadjusted=bool(unadjusted),
        dependence=bool(decisions["dependent"].any()),
        association=bool((decisions["associated"] & ~decisions["dependent"]).any()),
        association_unadjusted=bool(old_assoc),
    )


def nominal(cfg: AuditConfig) -> dict[str, float]:
    """Family levels: BH at q bounds P(any rejection) by q under the complete null."""
    t = cfg.tokens
    return {"grid": cfg.gate.fdr, "dependence": t.dependence_fdr, "association": t.max_p_value,
            "audit": cfg.gate.fdr + t.dependence_fdr + t.max_p_value}


def calibration(n_audits: int, null: str, cfg: AuditConfig | None = None) -> dict[str, float]:
    cfg = cfg or null_config()
    outs = [simulate_audit(seed, null, cfg) for seed in range(n_audits)]
    share = {k: float(np.mean([getattr(o, k) for o in outs])) for k in
             ("grid", "grid_unadjusted", "dependence", "association", "association_unadjusted", "failed")}
    return {"n_audits": n_audits, **share}


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    cfg = null_config()
    nulls = sys.argv[2:] or ["ignore", "boundary"]
    print("nominal", nominal(cfg))
    for null in nulls:
        print(null, calibration(n, null, cfg), flush=True)
