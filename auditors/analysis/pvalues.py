"""One-sided bootstrap p-values for the gate's class x region x rule grid (issue 10).

The gate used to recover each cell's p-value from the stored 95% interval with a normal
approximation (centre and width of the interval). For a skewed statistic (a ratio of means,
a rare flip rate) that is wrong exactly where it matters: beyond the interval's ends, where
Benjamini-Hochberg looks. Here the p-value is read off the same bootstrap resamples the
interval comes from, at aggregation time (where the resamples exist), and only the number is
carried to the gate: no resample array is stored in summary.json.

``p = (1 + k) / (1 + B)``: ``k`` of the ``B`` finite resampled statistics fall at or below the
threshold (the null side of H0 ``statistic <= threshold``). The +1 keeps the Monte-Carlo
estimate conservative and never zero. Its floor ``1 / (B + 1)`` would make a clear failure
unrejectable in a large grid (BH needs ``p <= fdr / m``: 5e-5 for 500 cells at 0.025), so
where fewer than :data:`MIN_TAIL` resamples are on the null side more are drawn, bounded in
count and work (:data:`MAX_BOOT_FACTOR`, :data:`MAX_DRAWS`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from auditors.analysis.stats import mean_statistic, percentile_interval, ratio_statistic, bootstrap_values, finite, interval_pvalue

__all__ = ["bootstrap_pvalue", "bootstrap_test", "mean_test", "ratio_test", "grid_pvalue", "MIN_TAIL", "MAX_BOOT_FACTOR", "MAX_DRAWS"]

#: Resamples on the null side below which the tail is refined with more resamples.
MIN_TAIL = 10
#: Refinement stops at this many times ``stats.bootstrap`` resamples ...
MAX_BOOT_FACTOR = 100
#: ... or at this many resampled indices in all (B x n), so a 100k-image group stays cheap.
MAX_DRAWS = 20_000_000

Interval = tuple[float, float] | None


def bootstrap_pvalue(values: np.ndarray, threshold: float) -> float:
    """``(1 + #{values <= threshold}) / (1 + len(values))``: one-sided H0 ``statistic <= threshold``."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    return float((1 + np.count_nonzero(values <= threshold)) / (1 + len(values)))


def bootstrap_test(
    columns: Sequence[np.ndarray], statistic: Callable[..., np.ndarray], threshold: float | None,
    n_boot: int = 1000, level: float = 0.95, seed: int = 0,
) -> tuple[Interval, float | None]:
    """Percentile interval and one-sided bootstrap p-value of H0 ``statistic <= threshold``.

    The interval is exactly :func:`stats.bootstrap_ci` with the same seed (the first ``n_boot``
    resamples); the p-value counts those resamples, plus refinement rounds (fresh seeds) while
    fewer than :data:`MIN_TAIL` of them are on the null side. ``threshold`` None: no p-value.
    """
    values = bootstrap_values(columns, statistic, n_boot, seed)
    ci = percentile_interval(values, level)
    if values is None or threshold is None or not math.isfinite(threshold):
        return ci, None
    n_rows = int(np.isfinite(np.column_stack([np.asarray(c, dtype=np.float64) for c in columns])).all(axis=1).sum())
    null_side, total = int(np.count_nonzero(values <= threshold)), len(values)
    cap = min(n_boot * MAX_BOOT_FACTOR, max(n_boot, MAX_DRAWS // max(n_rows, 1)))
    round_ = 0
    while null_side < MIN_TAIL and total < cap:
        round_ += 1
        more = bootstrap_values(columns, statistic, min(n_boot * 2**round_, cap - total), (seed * 1_000_003 + round_) & 0x7FFFFFFF)
        if more is None:
            break
        null_side += int(np.count_nonzero(more <= threshold))
        total += len(more)
    return ci, float((1 + null_side) / (1 + total))


def mean_test(x: np.ndarray, threshold: float | None, n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> tuple[Interval, float | None]:
    """:func:`bootstrap_test` of the mean of ``x`` (interval identical to ``stats.mean_ci``)."""
    return bootstrap_test([x], mean_statistic, threshold, n_boot, level, seed)


def ratio_test(
    num: np.ndarray, den: np.ndarray, threshold: float | None, n_boot: int = 1000, level: float = 0.95, seed: int = 0,
) -> tuple[Interval, float | None]:
    """:func:`bootstrap_test` of mean(num) / mean(den) (interval identical to ``stats.ratio_ci``)."""
    return bootstrap_test([num, den], ratio_statistic, threshold, n_boot, level, seed)


def grid_pvalue(stats: Mapping[str, Any], key: str, threshold: float, level: float) -> tuple[float | None, str]:
    """A grid cell's p-value and where it came from.

    ``"bootstrap"``: ``<key>_p_value``, computed at aggregation against this very threshold
    (``<key>_p_threshold``). Otherwise (a summary written before issue 10, or a threshold
    changed since aggregation) ``"interval"``: the normal approximation from ``<key>_ci``.
    """
    p, at = finite(stats.get(f"{key}_p_value")), finite(stats.get(f"{key}_p_threshold"))
    if p is not None and at is not None and math.isclose(at, threshold, rel_tol=1e-12, abs_tol=1e-12):
        return p, "bootstrap"
    return interval_pvalue(stats.get(f"{key}_ci"), threshold, level), "interval"
