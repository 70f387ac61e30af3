"""Token rules: a token the model depends on fails on its own; a class-associated token fails
when it is also over-attended (association alone only with ``tokens.fail_on_association``)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from auditors.analysis import token_rules
from auditors.analysis.stats import bh_adjust
from auditors.config.schema import TokensConfig

__all__ = ["TOKEN_GATE_RULE", "token_decisions", "flag_tokens", "token_failures"]


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
    # validity-report (issue 10): which findings fired and which of them fail (analysis/token_rules.py)
    verdicts = [token_rules.verdict(a, t, d, tc.fail_on_association)
                for a, t, d in zip(out["associated"], out["attended"], out["dependent"])]
    out["findings"] = pd.Series([v.findings for v in verdicts], index=out.index, dtype=object)
    out["fails_on"] = pd.Series([v.failing() or None for v in verdicts], index=out.index, dtype=object)
    return out


def flag_tokens(table: pd.DataFrame, tc: TokensConfig) -> pd.Series:
    """Flagged tokens: model dependence, or association with attention (see :func:`token_decisions`)."""
    return token_decisions(table, tc)["flagged"]


def token_failures(tokens: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One gate failure per flagged token (entries of summary.json ``tokens``), naming its finding."""
    return [
        {"class": t["top_class"], "rule": "token", "token": t["token"], "value": t["lift"], "effect": t["effect"],
         "lower": (t["effect_ci"] or [None])[0], "threshold": None, "finding": t.get("finding"),
         "q_value": t.get("q_value"), "effect_q_value": t.get("effect_q_value"),
         "fails_on": token_rules.entry_fails_on(t)}  # validity-report2: ["dependence"] / ["association"] / both
        for t in tokens if t["flagged"]
    ]
