"""Great Expectations checks on the dataset index and on the per-image results.

Two suites: ``manifest`` (what was asked to be audited) and ``images`` (what the audit
produced: ratios in [0, 1], known classes, one row per path). A failed expectation fails the
gate: numbers outside their definition mean the audit itself cannot be trusted.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import pandas as pd

__all__ = ["validate_tables", "manifest_expectations", "images_expectations"]


def manifest_expectations(classes: list[str], labelled: bool) -> list:
    import great_expectations.expectations as gxe

    exps = [
        gxe.ExpectColumnValuesToNotBeNull(column="path"),
        gxe.ExpectColumnValuesToBeUnique(column="path"),
    ]
    if labelled:
        exps += [
            gxe.ExpectColumnValuesToNotBeNull(column="label"),
            gxe.ExpectColumnValuesToBeInSet(column="label", value_set=list(classes)),
        ]
    return exps


def images_expectations(
    classes: list[str], regions: list[str], cf_regions: list[str] | None = None, placebo_max_overlap: float = 0.0
) -> list:
    """Definitions the per-image table must satisfy; a placebo overlapping its region beyond the
    stated tolerance is a broken control and fails validation."""
    import great_expectations.expectations as gxe

    exps = [
        gxe.ExpectColumnValuesToBeUnique(column="path"),
        gxe.ExpectColumnValuesToNotBeNull(column="pred"),
        gxe.ExpectColumnValuesToBeInSet(column="pred", value_set=list(classes)),
        gxe.ExpectColumnValuesToBeBetween(column="confidence", min_value=0.0, max_value=1.0),
        gxe.ExpectColumnValuesToBeInSet(column="cam_status", value_set=["ok", "zero", "nonfinite"]),
    ]
    for r in regions:
        exps += [
            gxe.ExpectColumnValuesToBeBetween(column=f"{r}_mass", min_value=0.0, max_value=1.0 + 1e-6),
            gxe.ExpectColumnValuesToBeBetween(column=f"{r}_area", min_value=0.0, max_value=1.0),
            gxe.ExpectColumnValuesToBeBetween(column=f"{r}_lift", min_value=0.0),
            gxe.ExpectColumnValuesToBeInSet(column=f"{r}_hit", value_set=[0.0, 1.0]),
            gxe.ExpectColumnValuesToBeBetween(column=f"{r}_norm_lift", min_value=0.0, max_value=1.0 + 1e-6),
        ]
    for r in cf_regions or []:
        exps += [
            gxe.ExpectColumnValuesToBeBetween(column=f"{r}_placebo_overlap", min_value=0.0, max_value=placebo_max_overlap,
                                              row_condition=f'{r}_placebo_status=="ok"', condition_parser="pandas"),
        ]
    return exps


def _run_suite(ctx: Any, name: str, df: pd.DataFrame, expectations: list) -> dict[str, Any]:
    import great_expectations as gx

    batch_def = (
        ctx.data_sources.add_pandas(f"camaudit-{name}")
        .add_dataframe_asset(name)
        .add_batch_definition_whole_dataframe("all")
    )
    suite = ctx.suites.add(gx.ExpectationSuite(name=f"camaudit-{name}"))
    for exp in expectations:
        suite.add_expectation(exp)
    result = batch_def.get_batch(batch_parameters={"dataframe": df}).validate(suite)
    return result.to_json_dict()


def validate_tables(tables: dict[str, tuple[pd.DataFrame, list]]) -> dict[str, Any]:
    """Validate each ``name -> (DataFrame, expectations)``; return a JSON-ready result.

    An ephemeral context: nothing is written to disk and nothing is fetched from the network.
    """
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    # GX sets some module loggers to INFO explicitly (e.g. "Created temporary directory ...").
    for name in ("great_expectations", "great_expectations.data_context.types.base"):
        logging.getLogger(name).setLevel(logging.WARNING)
    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    suites = {}
    for name, (df, expectations) in tables.items():
        suites[name] = _run_suite(ctx, name, df, expectations)
    n_exp = sum(len(s.get("results", [])) for s in suites.values())
    n_failed = sum(1 for s in suites.values() for r in s.get("results", []) if not r.get("success"))
    return {"success": all(s.get("success") for s in suites.values()), "n_expectations": n_exp, "n_failed": n_failed, "suites": suites}
