"""Class rules: a class fails a rule when its statistic exceeds the threshold significantly.

One-sided bootstrap p-value per (class, rule) cell, Benjamini-Hochberg adjusted across the whole
grid, so more regions and classes do not multiply false alarms (issue 10).
"""

from __future__ import annotations

from typing import Any

from auditors.analysis.gate.limits import effect_limits, lift_limits
from auditors.analysis.gate.token_gate import TOKEN_GATE_RULE
from auditors.analysis.pvalues import grid_pvalue
from auditors.analysis.stats import bh_adjust
from auditors.config.schema import GateConfig

__all__ = ["RULE", "apply_gate", "grid_rules", "grid_cells"]

#: The gate's decision rule in words (summary.json ``gate.rule``).
RULE = (
    "a class is flagged when a statistic exceeds its threshold significantly: one-sided bootstrap p-values (the "
    "share of resamples at or below the threshold, (1 + k) / (1 + B)), Benjamini-Hochberg adjusted across every class x region x rule tested, q <= gate.fdr "
    "(with a single test and the defaults: about the 95% interval's lower bound above the threshold); classes with fewer "
    "than gate.min_images_per_class images are reported, never tested"
)


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
