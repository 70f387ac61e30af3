"""How each class changed against an earlier run of the same audit, with an interval.

The interval is a percentile bootstrap of the *difference* (current - reference): the images
of both runs are resampled independently and each class statistic is recomputed exactly as
the aggregates define it (text lift = mean mass / mean area, text effect = mean per-image
effect). Independent resampling ignores that two nightly runs share most images, so the
interval is wider than a paired one would be: a regression it calls significant is real.

When the reference run's images.parquet is gone, the fallback is the honest, conservative
interval difference ``[cur_lo - ref_hi, cur_hi - ref_lo]`` from the two summaries.
"""

from __future__ import annotations

import zlib
from typing import Any, Callable

import numpy as np
import pandas as pd

from auditors.analysis.stats import finite
from auditors.config.schema import AuditConfig
from auditors.history.runs import RunRecord, audit_dir, load_runs, reference_run

__all__ = ["METRICS", "compare_runs", "compare_with_history"]

#: Compared statistics: name -> (columns of images.parquet, statistic over resampled (B, n) columns).
_ratio = lambda m, a: m.mean(axis=1) / a.mean(axis=1)  # noqa: E731
_mean = lambda x: x.mean(axis=1)  # noqa: E731
METRICS: dict[str, tuple[tuple[str, ...], Callable[..., np.ndarray]]] = {
    "text_lift": (("text_mass", "text_area"), _ratio),
    "text_effect": (("text_effect",), _mean),
}
_BLOCK_CELLS = 2_000_000
BOOTSTRAP = "percentile bootstrap of the difference, images of both runs resampled independently"
INTERVALS = "interval difference [current lower - reference upper, current upper - reference lower] (reference images.parquet missing)"


def _replicates(data: np.ndarray, stat: Callable[..., np.ndarray], n_boot: int, rng: np.random.Generator) -> np.ndarray:
    n = len(data)
    block = max(1, min(n_boot, _BLOCK_CELLS // max(n, 1)))
    out = []
    for start in range(0, n_boot, block):
        idx = rng.integers(0, n, size=(min(block, n_boot - start), n))
        sample = data[idx]
        out.append(stat(*(sample[..., j] for j in range(data.shape[1]))))
    return np.concatenate(out)


def _rows(df: pd.DataFrame | None, cols: tuple[str, ...]) -> np.ndarray | None:
    if df is None or any(c not in df.columns for c in cols):
        return None
    data = df[list(cols)].to_numpy(np.float64)
    data = data[np.isfinite(data).all(axis=1)]
    return data if len(data) >= 2 else None


def _diff_ci(cur: np.ndarray, ref: np.ndarray, stat: Callable[..., np.ndarray], n_boot: int, level: float,
             seed: int) -> list[float] | None:
    rng = np.random.default_rng(seed)
    d = _replicates(cur, stat, n_boot, rng) - _replicates(ref, stat, n_boot, rng)
    d = d[np.isfinite(d)]
    if len(d) == 0:
        return None
    alpha = (1 - level) / 2
    lo, hi = np.quantile(d, [alpha, 1 - alpha])
    return [float(lo), float(hi)]


def _interval_gap(cur: dict, ref: dict, key: str) -> list[float] | None:
    c, r = cur.get(f"{key}_ci"), ref.get(f"{key}_ci")
    if not c or not r or None in (*c, *r):
        return None
    return [float(c[0]) - float(r[1]), float(c[1]) - float(r[0])]


def _load_images(run: RunRecord, by: str) -> pd.DataFrame | None:
    path = run.dir / "images.parquet"
    wanted = {by, "cam_status", *(c for cols, _ in METRICS.values() for c in cols)}
    try:
        import pyarrow.parquet as pq

        present = set(pq.read_schema(path).names)
        df = pd.read_parquet(path, columns=sorted(wanted & present))  # a 1M-row table: only what is compared
    except Exception:  # missing or unreadable: fall back to the summary intervals
        return None
    if by not in df.columns or "cam_status" not in df.columns:
        return None
    return df[df["cam_status"] == "ok"]


def compare_runs(
    current: dict[str, dict], current_images: pd.DataFrame | None, reference: RunRecord, by: str, cfg: AuditConfig,
    pinned: bool = False,
) -> dict[str, Any]:
    """Per class and metric: current, reference, delta and the delta's interval."""
    ref_images = _load_images(reference, by) if current_images is not None else None
    cur_ok = current_images[current_images["cam_status"] == "ok"] if current_images is not None else None
    classes: dict[str, dict[str, Any]] = {}
    for cls, cur in current.items():
        ref = reference.classes.get(cls)
        if not isinstance(ref, dict):
            continue
        entry: dict[str, Any] = {"n": cur.get("n"), "n_reference": ref.get("n")}
        for key, (cols, stat) in METRICS.items():
            c, r = finite(cur.get(key)), finite(ref.get(key))
            if c is None or r is None:
                continue
            ci, method = None, "intervals"
            if cur_ok is not None and ref_images is not None:
                a = _rows(cur_ok[cur_ok[by] == cls], cols)
                b = _rows(ref_images[ref_images[by] == cls], cols)
                if a is not None and b is not None:
                    seed = (cfg.stats.seed * 1_000_003 + zlib.crc32(f"history|{cls}|{key}".encode())) & 0x7FFFFFFF
                    ci, method = _diff_ci(a, b, stat, cfg.stats.bootstrap, cfg.stats.ci, seed), "bootstrap"
            if ci is None:
                ci, method = _interval_gap(cur, ref, key), "intervals"
            entry[key] = {"current": c, "reference": r, "delta": c - r, "delta_ci": ci, "method": method}
        classes[cls] = entry
    return {
        "run_id": reference.run_id,
        "created_at": reference.created_at,
        "passed": reference.passed,
        "pinned": pinned,
        "classes": classes,
        "methods": {"bootstrap": BOOTSTRAP, "intervals": INTERVALS},
        "ci": cfg.stats.ci,
    }


def compare_with_history(
    cfg: AuditConfig, run_id: str, per_class: dict[str, dict], images: pd.DataFrame | None, by: str
) -> dict[str, Any]:
    """``{"previous": ..., "baseline": ..., "n_runs": ...}`` for summary.json (``None`` where there is none).

    ``baseline`` is set only when ``gate.baseline`` is configured; it is what the regression rule reads.
    """
    runs, problems = load_runs(audit_dir(cfg), cfg.name)
    runs = [r for r in runs if r.run_id != run_id]
    previous = reference_run(runs, "previous", run_id)
    out: dict[str, Any] = {"previous": None, "baseline": None, "n_earlier_runs": len(runs), "problems": problems[:20]}
    if previous is not None:
        out["previous"] = compare_runs(per_class, images, previous, by, cfg)
    which = cfg.gate.baseline
    if which is not None:
        base = reference_run(runs, which, run_id)
        if base is not None:
            same = previous is not None and base.run_id == previous.run_id
            out["baseline"] = {**out["previous"], "pinned": which != "previous"} if same else \
                compare_runs(per_class, images, base, by, cfg, pinned=which != "previous")
    return out
