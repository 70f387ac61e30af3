"""How a gated cell (a class's lift, normalised lift or effect) is coloured: by the gate's decision.

The gate tests every (class, region, rule) cell and fails those whose Benjamini-Hochberg q-value
is at most ``gate.fdr`` (:func:`auditors.analysis.gate.grid_cells`). An interval above the limit is
therefore not a failure on its own: with many cells, a borderline one is not significant after
FDR control, and a class with fewer than ``gate.min_images_per_class`` images is never tested.
A red cell that did not fail, or a failing cell that is not red, would mislead a launch review,
so this module reads the gate's recorded decision (``gate.failures``, ``gate.cells``) and never
re-derives it from thresholds:

- ``fail`` (red, CSS ``lift-bad``): the gate failed this very cell;
- ``over`` (amber, hatched, ``lift-over``): the interval is above the limit, but the gate did not
  fail it (not significant after FDR, too few images, or not a gated cell); ``note`` says which;
- ``warn`` / ``ok``: the interval reaches above the limit / lies below it (the interval's levels,
  :func:`auditors.analysis.gate.interval_level`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from auditors.analysis.gate import interval_level
from auditors.audit.summary import Summary
from auditors.report.facts import min_images
from auditors.report.formatting import fmt_float, fmt_int, num

__all__ = ["GateCells", "CellDecision", "gate_cells", "decide_cell", "LEVEL_CSS"]

#: CSS class per decided level (the class table and the counterfactual table share them).
LEVEL_CSS = {"fail": "lift-bad", "over": "lift-over", "warn": "lift-warn", "ok": "lift-ok", "": ""}


@dataclass(frozen=True)
class GateCells:
    """The gate's recorded per-cell decisions: ``failed`` {(class, key): failure} for class rules
    that fired; ``tested`` {(class, key): cell} for every tested cell (``gate.cells``, recorded
    since issue 10; empty for older runs). ``key`` is the statistic, e.g. "text_norm_lift"."""

    failed: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    tested: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    fdr: float | None = None
    n_tests: int | None = None
    min_n: float | None = None


@dataclass(frozen=True)
class CellDecision:
    """``level``: fail | over | warn | ok | "" (no limit or no value); ``note``: why, in words."""

    level: str
    note: str = ""

    @property
    def css(self) -> str:
        return LEVEL_CSS[self.level]


def _key(rule: Any) -> str | None:
    rule = str(rule or "")
    return rule[4:] if rule.startswith("max_") else None


def gate_cells(summary: Summary) -> GateCells:
    """The gate's decisions as the summary recorded them (class rules ``max_<stat>`` only)."""
    gate = summary.gate
    if gate is None:
        return GateCells(min_n=min_images(summary))
    failed: dict[tuple[str, str], dict[str, Any]] = {}
    for f in gate.failures:
        key = _key(f.rule)
        if f.class_ is not None and key:
            failed[(str(f.class_), key)] = f.to_dict()
    tested: dict[tuple[str, str], dict[str, Any]] = {}
    for c in gate.get("cells") or []:
        key = _key(c.get("rule")) if isinstance(c, dict) else None
        if key and c.get("class") is not None:
            tested[(str(c["class"]), key)] = c
    return GateCells(failed, tested, num(gate.fdr), gate.n_tests, min_images(summary))


def _over_note(cls: str | None, key: str, n: Any, cells: GateCells) -> str:
    """Why a cell over its limit is not a gate failure."""
    head = "Over the limit by its interval, but not a gate failure: "
    if cls is None:
        return head + "all images together are not gated (the gate tests each class)."
    n, min_n = num(n), cells.min_n
    if n is not None and min_n is not None and n < min_n:
        return (head + f"the class has {fmt_int(n)} image{'' if n == 1 else 's'}, fewer than "
                f"gate.min_images_per_class ({fmt_int(min_n)}), so it is not tested.")
    cell = cells.tested.get((cls, key))
    q = num(cell.get("q_value")) if cell else None
    if q is not None:
        fdr = f" > gate.fdr {fmt_float(cells.fdr, 3)}" if cells.fdr is not None else ""
        across = f" across the {fmt_int(cells.n_tests)} tested cells" if cells.n_tests else ""
        return head + f"not significant after Benjamini-Hochberg false-discovery-rate control{across} (q {q:.2g}{fdr})."
    return head + "the gate did not flag it (not significant after false-discovery-rate control, or not tested)."


def decide_cell(value: Any, ci: Any, limit: float | None, cls: str | None, key: str, n: Any,
                cells: GateCells) -> CellDecision:
    """The level of cell ``key`` (e.g. "text_lift") of class ``cls`` (None: the all-images row).

    Red exactly when the gate failed this (class, rule); a cell the gate failed is red even where
    its interval alone would not say so (``gate.fdr`` above the interval's one-sided level)."""
    fired = cells.failed.get((cls, key)) if cls is not None else None
    if fired is not None:
        q = num(fired.get("q_value"))
        lower = num(fired.get("lower"))
        bound = f"lower bound {fmt_float(lower, 3)} > {fired.get('threshold')}" if lower is not None else ""
        detail = ", ".join(p for p in (bound, f"q {q:.2g}" if q is not None else "") if p)
        return CellDecision("fail", f"The gate fails this class by rule {fired.get('rule')}" + (f": {detail}" if detail else ""))
    level = interval_level(value, ci, limit)
    if level == "bad":
        return CellDecision("over", _over_note(cls, key, n, cells))
    return CellDecision(level)
