"""Pointing-game statistics: planted hits and chance rates, tolerance, who is judged."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from auditors.analysis.pointing import pointing_stats
from auditors.config.schema import AuditConfig
from auditors.measure.metrics import region_metrics


def _cfg(enabled: bool = True) -> AuditConfig:
    return AuditConfig.model_validate({
        "name": "t", "dataset": {"root": "."}, "model": {"arch": "resnet18"}, "cam": {"pointing_tolerance": 1},
        "stats": {"bootstrap": 400},
        "regions": {"expected": {"enabled": enabled, "source": "coco", "annotations": "x.json"}},
    })


def test_chance_rate_is_the_dilated_area():
    s = torch.zeros(1, 10, 10)
    s[0, 5, 7] = 1.0  # peak one pixel right of the box
    box = torch.zeros(1, 1, 10, 10, dtype=torch.bool)
    box[0, 0, 4:7, 4:7] = True  # 3x3
    exact, near = region_metrics(s, box), region_metrics(s, box, tolerance=1)
    assert exact["hit"].item() == 0.0 and exact["hit_area"].item() == pytest.approx(0.09)
    assert near["hit"].item() == 1.0 and near["hit_area"].item() == pytest.approx(0.25)  # 5x5 after dilation


def _rows(cls: str, hits: list[float], area: float = 0.1, hit_area: float = 0.15) -> list[dict]:
    return [{"path": f"{cls}/{i}", "label": cls, "cam_status": "ok", "expected_hit": h, "expected_mass": 0.5 if h else 0.05,
             "expected_area": area, "expected_lift": (0.5 if h else 0.05) / area, "expected_hit_area": hit_area}
            for i, h in enumerate(hits)]


def test_planted_hit_rates_against_chance_and_who_is_judged():
    rows = _rows("horror", [1.0] * 17 + [0.0] * 3) + _rows("comedy", [1.0] * 3 + [0.0] * 17)
    rows += [{**_rows("comedy", [1.0])[0], "path": "comedy/empty", "expected_area": 0.0, "expected_hit": 0.0}]  # no annotation
    rows += [{**_rows("comedy", [1.0])[0], "path": "comedy/flat", "cam_status": "zero"}]  # degenerate map
    rows += [{**_rows("comedy", [1.0])[0], "path": "comedy/failed", "expected_hit": np.nan, "expected_area": np.nan}]
    p = pointing_stats(pd.DataFrame(rows), _cfg(), ["horror", "comedy", "drama"], "label")
    assert p["n_judged"] == 40 and p["n_unannotated"] == 2 and p["tolerance_px"] == 1
    h, c = p["classes"]["horror"], p["classes"]["comedy"]
    assert (h["n"], h["hits"], h["hit_rate"], h["chance"]) == (20, 17, 0.85, pytest.approx(0.15))
    assert h["hit_rate_ci"][0] > h["chance"]  # clearly above chance
    assert (c["n"], c["hit_rate"]) == (20, 0.15) and c["hit_rate_ci"][0] <= c["chance"] <= c["hit_rate_ci"][1]
    assert p["classes"]["drama"] == {"n": 0, "hits": 0, "hit_rate": None, "hit_rate_ci": None, "chance": None,
                                     "mass": None, "lift": None, "lift_ci": None}
    assert p["overall"]["n"] == 40 and p["overall"]["hit_rate"] == 0.5
    assert h["lift"] == pytest.approx((17 * 0.5 + 3 * 0.05) / 20 / 0.1)


def test_off_without_regions_expected():
    assert pointing_stats(pd.DataFrame(_rows("a", [1.0])), _cfg(enabled=False), ["a"], "label") is None
