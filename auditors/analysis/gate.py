"""The bias gate: the one place that decides which classes are flagged and whether the audit passes.

A rule fails when a class's statistic exceeds its threshold significantly: a one-sided p-value
per (class, rule) cell, Benjamini-Hochberg adjusted across the whole grid, so adding regions and
classes does not multiply false alarms, and a noisy estimate on few images never flags on its
point value alone.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from auditors.analysis.stats import bh_adjust, interval_pvalue
from auditors.config.schema import GateConfig, TokensConfig

__all__ = ["apply_gate", "grid_cells", "token_decisions", "token_failures", "TOKEN_GATE_RULE"]


def apply_gate(
    per_class: dict[str, dict], gate: GateConfig, regions: list[str], cf_regions: list[str], level: float = 0.95
) -> dict[str, Any]:
    """Flag classes whose statistics exceed the thresholds at FDR ``gate.fdr``; mutates ``per_class``.

    Rules: text lift > ``max_text_lift``; text effect > ``max_text_effect`` (with
    counterfactuals); ``max_lift[r]`` / ``max_effect[r]`` for any other region.
    """
    lift_limits = {**{r: v for r, v in gate.max_lift.items() if r in regions}}
    if "text" in regions:
        lift_limits["text"] = gate.max_text_lift
    effect_limits = {r: v for r, v in gate.max_effect.items() if r in cf_regions}
    if "text" in cf_regions:
        effect_limits["text"] = gate.max_text_effect
    cells = grid_cells(per_class, gate, lift_limits, effect_limits, level)
    failures = []
    for name, stats in per_class.items():
        found = [c for c in cells if c["class"] == name and c["failed"]]
        for c in found:
            del c["failed"]
        stats["flagged"] = bool(found)
        stats["flag_reasons"] = [
            f"{f['rule'][4:]} {f['value']:.3g} (interval lower bound {f['lower']:.3g}, q {f['q_value']:.2g}) > {f['threshold']}"
            for f in found
        ]
        failures += found
    return {
        "passed": not failures,
        "failures": failures,
        "max_text_lift": gate.max_text_lift,
        "max_text_effect": gate.max_text_effect,
        "fdr": gate.fdr,
        "n_tests": len(cells),
        "rule": GRID_RULE.format(fdr=gate.fdr, min_n=gate.min_images_per_class),
        "token_rule": TOKEN_GATE_RULE,
    }


# --- False-discovery-rate control across the class x region x rule grid (issue 10) ---------------

GRID_RULE = (
    "a class is flagged when a statistic exceeds its threshold significantly: one-sided p-values from the "
    "bootstrap intervals, Benjamini-Hochberg adjusted across every class x region x rule tested, q <= {fdr} "
    "(with a single test and the defaults: the 95% interval's lower bound above the threshold); classes with fewer "
    "than {min_n} images are reported, never tested"
)


def grid_cells(
    per_class: dict[str, dict], gate: GateConfig, lift_limits: dict[str, float], effect_limits: dict[str, float], level: float
) -> list[dict[str, Any]]:
    """Every tested (class, rule) cell with its p-value, BH q-value and decision.

    A cell is tested when the class has ``gate.min_images_per_class`` images and an interval.
    """
    cells: list[dict[str, Any]] = []
    for name, stats in per_class.items():
        if stats.get("n", 0) < gate.min_images_per_class:
            continue
        for key, threshold in [(f"{r}_lift", t) for r, t in lift_limits.items()] + [(f"{r}_effect", t) for r, t in effect_limits.items()]:
            ci = stats.get(f"{key}_ci")
            p = interval_pvalue(ci, threshold, level)
            if p is None or stats.get(key) is None:
                continue
            cells.append({"class": name, "rule": f"max_{key}", "value": stats[key], "lower": ci[0], "threshold": threshold, "p_value": p})
    q = bh_adjust([c["p_value"] for c in cells])
    for c, qv in zip(cells, q):
        c["q_value"] = float(qv)
        c["failed"] = bool(qv <= gate.fdr)
    return cells


# --- Token findings: data association vs model dependence (issue 10) ------------------------------

TOKEN_GATE_RULE = (
    "a token fails the gate when the model depends on it: removing it lowers confidence by more than "
    "tokens.max_effect beyond a matched placebo (one-sided t-test, Benjamini-Hochberg q <= tokens.dependence_fdr "
    "across the tested tokens), or when it is class-associated (omnibus class test, BH q <= tokens.max_p_value "
    "across tokens) and attended above tokens.max_lift; association alone fails only with tokens.fail_on_association"
)


def token_decisions(table: pd.DataFrame, tc: TokensConfig) -> pd.DataFrame:
    """Columns ``q_value``, ``effect_q_value``, ``associated``, ``attended``, ``dependent``, ``finding``, ``flagged``.

    ``table`` needs ``p_value`` (association), ``lift``, ``n_images`` and ``effect_p_value``
    (NaN where the token's removal was not tested). Two findings are kept apart: association is
    about the data, dependence about the model, and dependence fails on its own.
    """
    out = pd.DataFrame(index=table.index)
    out["q_value"] = bh_adjust(table["p_value"].tolist())
    eff_p = table["effect_p_value"] if "effect_p_value" in table else pd.Series(np.nan, index=table.index)
    out["effect_q_value"] = bh_adjust(eff_p.tolist())
    big_enough = table["n_images"] >= tc.min_images
    out["associated"] = (out["q_value"] <= tc.max_p_value) & big_enough
    out["attended"] = table["lift"] > tc.max_lift
    out["dependent"] = (out["effect_q_value"] <= tc.dependence_fdr) & big_enough
    assoc_fails = out["associated"] & (out["attended"] | tc.fail_on_association)
    out["flagged"] = out["dependent"] | assoc_fails

    def finding(r: pd.Series) -> str | None:
        parts = []
        if r["dependent"]:
            parts.append("model dependence")
        if r["associated"]:
            parts.append("data association" + (" + attention" if r["attended"] else ""))
        return "; ".join(parts) or None

    out["finding"] = out.apply(finding, axis=1) if len(out) else pd.Series(dtype=object)
    return out


def token_failures(tokens: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Gate failures of the flagged tokens of ``summary["tokens"]``, each naming its finding."""
    return [
        {"class": t["top_class"], "rule": "token", "token": t["token"], "value": t["lift"], "effect": t["effect"],
         "lower": (t["effect_ci"] or [None])[0], "threshold": None, "finding": t.get("finding"),
         "q_value": t.get("q_value"), "effect_q_value": t.get("effect_q_value")}
        for t in tokens if t["flagged"]
    ]
