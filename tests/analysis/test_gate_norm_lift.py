"""The normalised-lift rule and its aggregate: thresholds that mean the same for every target layer."""

import numpy as np
import pandas as pd

from auditors.analysis.aggregate import class_stats
from auditors.analysis.gate import apply_gate
from auditors.config import config_from_dict


def _cfg(tmp_path, **gate):
    return config_from_dict({"name": "g", "dataset": {"root": str(tmp_path)}, "model": {"arch": "resnet18"},
                             "regions": {"border": {"enabled": False}}, "gate": {"max_text_lift": 100.0, **gate},
                             "stats": {"bootstrap": 200}})


def test_norm_lift_aggregate_and_gate(tmp_path):
    rng = np.random.default_rng(0)
    n = 40
    area = rng.uniform(0.02, 0.05, n)
    max_lift = rng.uniform(3.0, 6.0, n)  # coarse map: the badge cannot get more than ~15-30% of the mass
    reach = area * max_lift
    df = pd.DataFrame({"label": "a", "pred": "a", "text_area": area, "text_max_lift": max_lift, "text_mass": 0.8 * reach, "text_hit": 0.0})
    df["text_lift"] = df["text_mass"] / df["text_area"]
    df["text_norm_lift"] = df["text_lift"] / df["text_max_lift"]
    cfg = _cfg(tmp_path, max_norm_lift={"text": 0.6})
    stats = class_stats(df, cfg, ["text"], "class:a")
    assert np.isclose(stats["text_norm_lift"], 0.8) and stats["text_norm_lift_ci"][0] > 0.6
    assert np.isclose(stats["text_max_lift"], reach.mean() / area.mean())
    assert stats["text_lift"] < 5.0, "the raw lift stays under a typical threshold although the map is at 80% of its reach"
    per_class = {"a": stats}
    gate = apply_gate(per_class, cfg.gate, ["text"], [])
    assert not gate["passed"] and gate["failures"][0]["rule"] == "max_text_norm_lift"
    assert apply_gate({"a": dict(stats)}, _cfg(tmp_path).gate, ["text"], [])["passed"], "no rule set: no flag"
