"""The bias gate: the one module that decides what is flagged and whether the audit passes.

Every pass/fail decision lives here, so a new rule is added in one place:

- class rules (:func:`apply_gate`): a rule fails when a class's statistic exceeds its threshold
  significantly: a one-sided p-value per (class, rule) cell, Benjamini-Hochberg adjusted across
  the whole grid, so more regions and classes do not multiply false alarms (issue 10);
- token rules (:func:`token_decisions`, :func:`token_failures`): a token the model depends on
  (on its own), or a class-associated token that is over-attended (association alone only
  with ``tokens.fail_on_association``);
- regression rule (:func:`apply_regression_rule`): a class got worse than ``gate.baseline`` by
  more than allowed, beyond sampling noise;
- run rules (:func:`validation_failure`): result tables that fail validation cannot be trusted;
- :func:`decide` combines them into the ``gate`` section of summary.json;
- the levels the report colours cells with (:func:`interval_level`, :func:`point_level`,
  :func:`effect_status`, :func:`token_status`) follow the same rules, so the report never
  re-derives a decision from thresholds on its own.

Adding a rule: write a function returning failure dicts ``{"class", "rule", "value",
"threshold", ...}`` and append its failures in :func:`decide`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from auditors.analysis import token_rules
from auditors.analysis.pvalues import grid_pvalue
from auditors.analysis.stats import bh_adjust, finite, interval
from auditors.config.schema import GateConfig, TokensConfig

__all__ = [
    "RULE", "apply_gate", "apply_regression_rule", "decide", "limit", "lift_limits", "effect_limits", "token_failures",
    "validation_failure", "flag_tokens", "token_decisions", "grid_cells", "grid_rules", "TOKEN_GATE_RULE",
    "interval_level", "point_level", "effect_status", "token_status",
]

#: The gate's decision rule in words (summary.json ``gate.rule``).
RULE = (
    "a class is flagged when a statistic exceeds its threshold significantly: one-sided bootstrap p-values (the "
    "share of resamples at or below the threshold, (1 + k) / (1 + B)), Benjamini-Hochberg adjusted across every class x region x rule tested, q <= gate.fdr "
    "(with a single test and the defaults: about the 95% interval's lower bound above the threshold); classes with fewer "
    "than gate.min_images_per_class images are reported, never tested"
)

#: A point estimate this close to its limit (as a share of it) is shown as a warning.
WARN_SHARE = 0.75


# --------------------------------------------------------------------------- limits


def limit(gate: GateConfig, region: str, kind: str) -> float | None:
    """The gate's ``kind`` ("lift" or "effect") limit for ``region``, or None when none is set."""
    if region == "text":
        return gate.max_text_lift if kind == "lift" else gate.max_text_effect
    return (gate.max_lift if kind == "lift" else gate.max_effect).get(region)


def lift_limits(gate: GateConfig, regions: list[str]) -> dict[str, float]:
    """Lift limits of the measured regions that have one."""
    out = {r: v for r, v in gate.max_lift.items() if r in regions}
    if "text" in regions:
        out["text"] = gate.max_text_lift
    return out


def effect_limits(gate: GateConfig, cf_regions: list[str]) -> dict[str, float]:
    """Effect limits of the intervened regions that have one."""
    out = {r: v for r, v in gate.max_effect.items() if r in cf_regions}
    if "text" in cf_regions:
        out["text"] = gate.max_text_effect
    return out


# --------------------------------------------------------------------------- class rules


def apply_gate(
    per_class: dict[str, dict], gate: GateConfig, regions: list[str], cf_regions: list[str], level: float = 0.95
) -> dict[str, Any]:
    """Flag classes whose statistics exceed the thresholds at FDR ``gate.fdr``; mutates ``per_class``.

    Rules: text lift > ``max_text_lift``; text effect > ``max_text_effect`` (with
    counterfactuals); ``max_lift[r]`` / ``max_effect[r]`` / ``max_norm_lift[r]`` for other regions.
    ``level``: the coverage of the intervals (``stats.ci``), used only where a cell has no
    bootstrap p-value (:func:`auditors.analysis.pvalues.grid_pvalue`).
    """
    cells = grid_cells(per_class, gate, grid_rules(gate, regions, cf_regions), level)
    # validity-report2 (issue 10): every tested cell's decision, so the report colours by it
    tested = [{k: c[k] for k in ("class", "rule", "p_value", "q_value", "failed")} for c in cells]
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
        "cells": tested,
        "rule": RULE,
        "token_rule": TOKEN_GATE_RULE,
    }


# --- grid p-values (issue 10, validity-stats): bootstrap p-values computed at aggregation -------


def grid_rules(gate: GateConfig, regions: list[str], cf_regions: list[str]) -> list[tuple[str, float]]:
    """(statistic key, threshold) of every class rule; aggregation computes a bootstrap p-value
    for each of these keys against its threshold, the gate tests the same list."""
    rules = [(f"{r}_lift", t) for r, t in lift_limits(gate, regions).items()]
    rules += [(f"{r}_effect", t) for r, t in effect_limits(gate, cf_regions).items()]
    rules += [(f"{r}_norm_lift", t) for r, t in gate.max_norm_lift.items() if r in regions]
    return rules


def grid_cells(per_class: dict[str, dict], gate: GateConfig, rules: list[tuple[str, float]], level: float) -> list[dict[str, Any]]:
    """Every tested (class, rule) cell with its p-value, BH q-value and decision (issue 10).

    A cell is tested when the class has ``gate.min_images_per_class`` images and a p-value:
    the bootstrap one from aggregation, else one recovered from its interval (``p_source``).
    """
    cells: list[dict[str, Any]] = []
    for name, stats in per_class.items():
        if stats.get("n", 0) < gate.min_images_per_class:
            continue
        for key, threshold in rules:
            p, source = grid_pvalue(stats, key, threshold, level)
            ci = stats.get(f"{key}_ci")
            if p is None or stats.get(key) is None or not ci:
                continue
            cells.append({"class": name, "rule": f"max_{key}", "value": stats[key], "lower": ci[0], "threshold": threshold,
                          "p_value": p, "p_source": source})
    q = bh_adjust([c["p_value"] for c in cells])
    for c, qv in zip(cells, q):
        c["q_value"] = float(qv)
        c["failed"] = bool(qv <= gate.fdr)
    return cells
# --- end grid p-values --------------------------------------------------------------------------


# --------------------------------------------------------------------------- regression rule (issue 13: history)

REGRESSION_RULE = (
    "regression: a class fails when the lower bound of the interval of (this run - baseline) exceeds "
    "the allowed increase, i.e. it got worse by more than allowed beyond sampling noise"
)


def apply_regression_rule(
    gate_result: dict[str, Any], per_class: dict[str, dict], baseline: dict[str, Any] | None, gate: GateConfig
) -> dict[str, Any]:
    """Add regression failures (``gate.baseline`` with ``max_lift_increase`` / ``max_effect_increase``).

    ``baseline`` is the comparison built by :func:`auditors.history.compare_runs`; without one
    (no baseline configured, or the first run of an audit) the gate is returned unchanged.
    Mutates ``per_class`` (flagged, flag_reasons) and ``gate_result``.
    """
    if gate.baseline is None:
        return gate_result
    gate_result["regression"] = {
        "baseline": gate.baseline,
        "baseline_run": baseline["run_id"] if baseline else None,
        "max_lift_increase": gate.max_lift_increase,
        "max_effect_increase": gate.max_effect_increase,
        "rule": REGRESSION_RULE,
    }
    if baseline is None:
        return gate_result
    limits = {"text_lift": gate.max_lift_increase, "text_effect": gate.max_effect_increase}
    for name, change in baseline.get("classes", {}).items():
        stats = per_class.get(name)
        if stats is None or stats["n"] < gate.min_images_per_class:
            continue
        for key, allowed in limits.items():
            c = change.get(key)
            ci = c.get("delta_ci") if c else None
            if not ci or ci[0] is None or not ci[0] > allowed:
                continue
            failure = {"class": name, "rule": f"regression_{key}", "metric": key,
                       "value": c["delta"], "lower": ci[0], "threshold": allowed,
                       "baseline_run": baseline["run_id"], "baseline_value": c["reference"], "current_value": c["current"]}
            gate_result["failures"].append(failure)
            stats["flagged"] = True
            stats.setdefault("flag_reasons", []).append(
                f"{key} rose by {c['delta']:.3g} since run {baseline['run_id']} "
                f"(interval lower bound {ci[0]:.3g}) > allowed increase {allowed}"
            )
            gate_result["passed"] = False
    return gate_result


# --------------------------------------------------------------------------- token and run rules


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


def validation_failure(validation: Mapping[str, Any]) -> dict[str, Any] | None:
    """A whole-run failure when the result tables failed Great Expectations validation."""
    if validation["success"]:
        return None
    return {"class": None, "rule": "validation", "value": validation["n_failed"], "threshold": 0}


def decide(
    per_class: dict[str, dict], gate: GateConfig, regions: list[str], cf_regions: list[str],
    tokens: list[dict[str, Any]], validation: Mapping[str, Any], baseline: dict[str, Any] | None = None,
    level: float = 0.95,
) -> dict[str, Any]:
    """The whole gate: class rules (flags ``per_class`` in place), regression against ``baseline``
    (the ``history.baseline`` comparison, when ``gate.baseline`` is set), then tokens, then validation.
    ``level``: the intervals' coverage (``stats.ci``) the class rules' p-values come from."""
    result = apply_gate(per_class, gate, regions, cf_regions, level)
    result = apply_regression_rule(result, per_class, baseline, gate)
    failures = token_failures(tokens)
    invalid = validation_failure(validation)
    if invalid is not None:
        failures.append(invalid)
    if failures:
        result["passed"] = False
        result["failures"] += failures
    return result


# --------------------------------------------------------------------------- levels shown in the report


def point_level(value: Any, threshold: float | None) -> str:
    """"bad" above the limit, "warn" within 25% of it, "ok" below; "" when either is missing."""
    v = finite(value)
    if v is None or threshold is None:
        return ""
    if v > threshold:
        return "bad"
    if v >= WARN_SHARE * threshold:
        return "warn"
    return "ok"


def interval_level(value: Any, ci: Any, threshold: float | None) -> str:
    """As the gate decides: "bad" when even the interval's lower bound is above the limit,
    "warn" when only part of it is, "ok" when all of it is below. Without an interval the
    point estimate decides (:func:`point_level`)."""
    if finite(value) is None or threshold is None:
        return ""
    ci = interval(ci)
    if ci is None:
        return point_level(value, threshold)
    lo, hi = ci
    if lo > threshold:
        return "bad"
    if hi > threshold:
        return "warn"
    return "ok"


def effect_status(level: str, n: float | None, min_n: float | None) -> str:
    """A class's effect status: its level, but "small" when above the limit on too few images to
    be flagged (``gate.min_images_per_class``), "none" without a level."""
    if not level:
        return "none"
    if level == "bad" and min_n is not None and n is not None and n < min_n:
        return "small"
    return level


def token_status(t: Mapping[str, Any], limits: Mapping[str, Any]) -> tuple[str, str]:
    """("flagged" | "reported" | "ok", why) of a token entry, by the gate's token rule
    (:func:`auditors.analysis.token_rules.entry_verdict`): "flagged" when a finding fails the gate
    (``why`` names it), "reported" when a finding fired that does not fail it (association
    without attention, ``tokens.fail_on_association`` off), "ok" when none fired.
    ``limits``: {"lift", "effect", "p_value", "fail_on_association"} as in ``tokens.*``."""
    v = token_rules.entry_verdict(t, limits)
    if v.fails:
        return "flagged", v.failing()
    if v.findings != "none":
        return "reported", "data association, not attended" if v.associated else "model dependence"
    return "ok", ""


# --- hardening (issue 12): "the audit could not judge" ------------------------------------------
# A gate that found nothing to flag is not a gate that passed: with no audited images, NaN
# predictions or all-zero maps there is nothing it *could* have flagged. These checks decide
# whether the numbers can be judged at all; when they cannot, the gate's status is
# "inconclusive" (CLI exit 4), ``passed`` is False, and PASSED is never printed.

GATE_STATUSES = ("passed", "failed", "inconclusive")
__all__ += ["GATE_STATUSES", "judge_inconclusive", "inconclusive_reasons", "gate_status"]


def judge_inconclusive(
    *,
    n_listed: int,
    n_audited: int,
    n_degenerate: int,
    n_nonfinite: int,
    class_sizes: dict[str, int],
    gate: GateConfig,
) -> list[str]:
    """Reasons the audit cannot be judged (empty when it can).

    ``n_listed``: images that discovery handed to the audit; ``n_audited``: rows written;
    ``n_degenerate``: rows whose map is zero or non-finite; ``n_nonfinite``: rows whose
    predictions or map are not finite (a broken model or preprocessing); ``class_sizes``:
    audited images per gated class.
    """
    reasons: list[str] = []
    if n_listed == 0:
        reasons.append("the dataset listing is empty: no image was found to audit")
    elif n_audited == 0:
        reasons.append(f"no image could be audited ({n_listed} listed, all failed; see errors.csv)")
    else:
        if n_audited < gate.min_audited_images:
            reasons.append(f"only {n_audited} image(s) audited (gate.min_audited_images = {gate.min_audited_images})")
        share = n_audited / n_listed
        if share < gate.min_audited_fraction:
            reasons.append(
                f"only {n_audited} of {n_listed} listed images ({share:.0%}) could be audited "
                f"(gate.min_audited_fraction = {gate.min_audited_fraction:g}; see errors.csv)"
            )
        if n_nonfinite / n_audited > gate.max_nonfinite_fraction:
            reasons.append(
                f"{n_nonfinite} of {n_audited} images have non-finite predictions or maps (NaN/inf: broken weights or "
                f"preprocessing; gate.max_nonfinite_fraction = {gate.max_nonfinite_fraction:g})"
            )
        if n_degenerate / n_audited > gate.max_degenerate_fraction:
            reasons.append(
                f"{n_degenerate} of {n_audited} heatmaps are degenerate (all zero or non-finite; "
                f"gate.max_degenerate_fraction = {gate.max_degenerate_fraction:g})"
            )
        if class_sizes and max(class_sizes.values()) < gate.min_images_per_class:
            reasons.append(
                f"no class has at least {gate.min_images_per_class} usable audited image(s) (gate.min_images_per_class; "
                "degenerate maps do not count), so no class could be flagged"
            )
    return reasons


def inconclusive_reasons(images: pd.DataFrame, n_listed: int, per_class: dict[str, dict], gate: GateConfig) -> list[str]:
    """:func:`judge_inconclusive` on an images table (columns confidence, target_prob, cam_status)."""
    usable = np.ones(len(images), bool)
    for col in ("confidence", "target_prob"):
        if col in images:
            usable &= np.isfinite(pd.to_numeric(images[col], errors="coerce").to_numpy(dtype=float))
    status = images["cam_status"].astype(str) if "cam_status" in images else pd.Series(["ok"] * len(images))
    return judge_inconclusive(
        n_listed=n_listed,
        n_audited=len(images),
        n_degenerate=int((status != "ok").to_numpy().sum()),
        n_nonfinite=int((~usable | (status == "nonfinite").to_numpy()).sum()),
        class_sizes={c: int(s.get("n") or 0) for c, s in per_class.items()},
        gate=gate,
    )


def gate_status(gate_result: dict[str, Any], reasons: list[str]) -> dict[str, Any]:
    """Add ``status`` and ``inconclusive_reasons`` to a gate result (additive keys).

    Inconclusive wins over passed *and* failed: flags computed from unusable numbers mean nothing.
    ``passed`` is False whenever the status is not "passed".
    """
    status = "inconclusive" if reasons else ("passed" if gate_result["passed"] else "failed")
    return {**gate_result, "passed": status == "passed", "status": status, "inconclusive_reasons": list(reasons)}
# --- end hardening ------------------------------------------------------------------------------
