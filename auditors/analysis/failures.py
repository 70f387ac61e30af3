"""Failure analysis in numbers: do the model's mistakes lean on a region more than its correct calls?

For every region, the share of mistakes whose predicted-class heatmap has lift > 1 on it (more
attention than its area explains) next to the same share among correct predictions, each with a
percentile-bootstrap interval over images. A shortcut the model uses when it is wrong shows as
a clearly higher share among errors.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from auditors.analysis.stats import mean_ci
from auditors.config.schema import StatsConfig

__all__ = ["failure_summary"]


def _share(lifts: pd.Series, stats: StatsConfig) -> dict[str, Any]:
    v = pd.to_numeric(lifts, errors="coerce").to_numpy(float)
    v = v[np.isfinite(v)]
    leans = (v > 1.0).astype(float)
    ci = mean_ci(leans, stats.bootstrap, stats.ci, stats.seed) if len(v) else None
    return {"n": int(len(v)), "share_lift_above_1": float(leans.mean()) if len(v) else None,
            "share_ci": list(ci) if ci else None}


def failure_summary(images: pd.DataFrame, failures: pd.DataFrame | None, regions: list[str],
                    stats: StatsConfig) -> dict[str, Any] | None:
    """The summary's ``failures`` section; None when the run has no labels or no failure table.

    Errors are read from failures.parquet (the predicted-class map of each mistake); correct
    predictions from images.parquet rows whose CAM target was the predicted (= true) class.
    """
    if failures is None or "label" not in images.columns or images["label"].isna().all():
        return None
    labelled = images[images["label"].notna()]
    correct = labelled[(labelled["pred"] == labelled["label"]) & (labelled["target"] == labelled["pred"])]
    n_labelled = int(len(labelled))
    out: dict[str, Any] = {
        "n_labelled": n_labelled,
        "n_errors": int(len(failures)),
        "error_rate": float(len(failures) / n_labelled) if n_labelled else None,
        "leaned_on": {str(k): int(v) for k, v in failures["leaned_on"].value_counts().sort_index().items()},
        "errors_by_class": {str(k): int(v) for k, v in failures["label"].value_counts().sort_index().items()},
        "regions": {},
    }
    for r in regions:
        if f"{r}_lift_pred" not in failures.columns or f"{r}_lift" not in images.columns:
            continue
        out["regions"][r] = {"errors": _share(failures[f"{r}_lift_pred"], stats),
                             "correct": _share(correct[f"{r}_lift"], stats)}
    return out
