"""Bootstrap intervals for means and ratios of means, resampling images.

Percentile bootstrap, seeded. Resamples are drawn in blocks so memory stays bounded for
100k-image audits (B x n indices would be 800 MB at B=1000, n=100k).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["bootstrap_ci", "mean_ci", "ratio_ci", "finite", "interval"]

_BLOCK_CELLS = 4_000_000  # indices per block: ~32 MB of int64


def bootstrap_ci(
    columns: Sequence[np.ndarray],
    statistic,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float] | None:
    """Percentile interval of ``statistic(*resampled_columns)`` (each column (B, n) -> (B,)).

    Rows with a NaN in any column are dropped first. Returns None with fewer than 2 rows.
    """
    data = np.column_stack([np.asarray(c, dtype=np.float64) for c in columns])
    data = data[np.isfinite(data).all(axis=1)]
    n = len(data)
    if n < 2:
        return None
    rng = np.random.default_rng(seed)
    block = max(1, min(n_boot, _BLOCK_CELLS // n))
    stats = []
    for start in range(0, n_boot, block):
        b = min(block, n_boot - start)
        idx = rng.integers(0, n, size=(b, n))
        sample = data[idx]  # (b, n, k)
        stats.append(statistic(*(sample[..., j] for j in range(data.shape[1]))))
    values = np.concatenate(stats)
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return None
    alpha = (1 - level) / 2
    lo, hi = np.quantile(values, [alpha, 1 - alpha])
    return float(lo), float(hi)


def mean_ci(x: np.ndarray, n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> tuple[float, float] | None:
    """Interval of the mean of ``x``."""
    return bootstrap_ci([x], lambda a: a.mean(axis=1), n_boot, level, seed)


def ratio_ci(num: np.ndarray, den: np.ndarray, n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> tuple[float, float] | None:
    """Interval of mean(num) / mean(den), resampling (num, den) pairs together (lift = mass/area)."""

    def ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        d = b.mean(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(d > 0, a.mean(axis=1) / d, np.nan)

    return bootstrap_ci([num, den], ratio, n_boot, level, seed)


def finite(value: Any) -> float | None:
    """A finite float, or None for None/NaN/inf/booleans/non-numbers (JSON null, a dash in the report)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def interval(value: Any) -> tuple[float, float] | None:
    """An interval [lo, hi] as two finite floats in order, or None when missing or malformed."""
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        return None
    lo, hi = finite(value[0]), finite(value[1])
    if lo is None or hi is None:
        return None
    return (lo, hi) if lo <= hi else (hi, lo)
