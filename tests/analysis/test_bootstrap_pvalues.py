"""Grid p-values from the bootstrap resamples themselves (issue 10), not a normal approximation
recovered from the interval: exact where the bootstrap distribution is known, right on a skewed
ratio of means, and what the gate's grid actually uses."""

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binom

from auditors.analysis.aggregate import class_stats
from auditors.analysis.gate import apply_gate
from auditors.analysis.pvalues import bootstrap_pvalue, grid_pvalue, mean_test, ratio_test
from auditors.analysis.stats import interval_pvalue, mean_ci, ratio_ci
from auditors.config import config_from_dict
from auditors.config.schema import GateConfig


def _flips(n: int, k: int) -> np.ndarray:
    return np.r_[np.ones(k), np.zeros(n - k)]


def test_pvalue_counts_the_null_side_with_the_plus_one():
    assert bootstrap_pvalue(np.array([0.1, 0.2, 0.3, np.nan]), 0.2) == pytest.approx(3 / 4)
    assert bootstrap_pvalue(np.array([0.5] * 9), 0.2) == pytest.approx(1 / 10)


def test_bootstrap_pvalue_is_exact_where_the_bootstrap_distribution_is_known():
    """A flip rate of 36/40: the resampled mean is exactly Binomial(40, 0.9) / 40, a left-skewed
    distribution. At threshold 0.75 its exact tail is 0.0051; the bootstrap p-value finds it, the
    normal approximation from the 95% interval says 0.0010 (five times too significant)."""
    x, t = _flips(40, 36), 0.75
    exact = float(binom.cdf(np.floor(t * 40 + 1e-9), 40, 0.9))
    ci, p = mean_test(x, t, n_boot=20_000, seed=1)
    assert p == pytest.approx(exact, abs=0.0015), (p, exact)
    assert ci == mean_ci(x, 20_000, 0.95, 1), "interval and p-value come from the same resamples"
    normal = interval_pvalue(mean_ci(x, 1000, 0.95, 1), t, 0.95)
    assert normal < exact / 3, (normal, exact)
    for t in (0.7, 0.8, 0.85):  # the whole lower tail, not one point
        exact = float(binom.cdf(np.floor(t * 40 + 1e-9), 40, 0.9))
        assert mean_test(x, t, n_boot=20_000, seed=2)[1] == pytest.approx(exact, rel=0.25, abs=0.002), t


def test_skewed_ratio_of_means_matches_a_large_independent_simulation():
    """Lift = mean(mass) / mean(area) with heavy-tailed mass: the bootstrap p-value agrees with
    400,000 resamples drawn here independently; the normal approximation does not."""
    rng = np.random.default_rng(7)
    n = 30
    area = rng.uniform(0.02, 0.2, n)
    mass = np.clip(area * rng.lognormal(0.3, 1.3, n), 0, 1)
    lift = mass.mean() / area.mean()
    ci = ratio_ci(mass, area, 1000, 0.95, 3)
    t = ci[0] - 0.35 * (lift - ci[0])  # in the lower tail, beyond the interval
    sim = np.random.default_rng(11)
    below = total = 0
    for _ in range(40):
        idx = sim.integers(0, n, size=(10_000, n))
        r = mass[idx].mean(axis=1) / area[idx].mean(axis=1)
        below += int((r <= t).sum())
        total += len(r)
    reference = below / total
    _, p = ratio_test(mass, area, t, n_boot=1000, seed=3)
    assert 0.0005 < reference < 0.02, reference
    assert p == pytest.approx(reference, rel=0.35), (p, reference)
    normal = interval_pvalue(ci, t, 0.95)
    assert abs(np.log(normal / reference)) > abs(np.log(p / reference)) + 0.5, (normal, p, reference)


def test_tail_is_refined_so_a_clear_cell_survives_a_large_grid():
    """B = 200 alone floors p at 1/201; BH over 400 cells needs p <= 0.025 / 400. The tail is
    resampled further (bounded), so one clear failure among 399 clean cells is still found."""
    rng = np.random.default_rng(0)
    clear = rng.normal(0.3, 0.05, 30)
    _, p = mean_test(clear, 0.05, n_boot=200, seed=0)
    assert p < 0.025 / 400 and p >= 1 / (200 * 100 + 1), p
    gate = GateConfig(max_text_effect=0.05)
    per_class = {}
    for i in range(400):
        x = clear if i == 0 else rng.normal(0.0, 0.05, 30)
        ci, p = mean_test(x, 0.05, n_boot=200, seed=i)
        per_class[f"c{i}"] = {"n": 30, "text_effect": float(x.mean()), "text_effect_ci": ci,
                              "text_effect_p_value": p, "text_effect_p_threshold": 0.05}
    res = apply_gate(per_class, gate, [], ["text"])
    assert res["n_tests"] == 400 and [f["class"] for f in res["failures"]] == ["c0"], res["failures"][:3]


def _cfg(tmp_path, **gate):
    return config_from_dict({"name": "p", "dataset": {"root": str(tmp_path)}, "model": {"arch": "resnet18"},
                             "regions": {"border": {"enabled": False}}, "counterfactual": {"enabled": True, "regions": ["text"]},
                             "gate": {"min_images_per_class": 10, **gate}, "stats": {"bootstrap": 2000}})


def _class(effect: np.ndarray) -> pd.DataFrame:
    n = len(effect)
    conf = np.full(n, 0.9)
    return pd.DataFrame({"label": "a", "pred": "a", "confidence": conf, "text_area": 0.1, "text_mass": 0.1, "text_hit": 0.0,
                         "text_removed_conf": conf - effect, "text_placebo_conf": conf, "text_effect": effect,
                         "text_removed_flip": 0.0, "text_placebo_flip": 0.0, "text_removed_pred": "a", "text_placebo_pred": "a"})


def test_gate_grid_uses_the_bootstrap_pvalue_and_decides_as_the_exact_answer(tmp_path):
    """Five classes, two rules each (m = 10, BH's first step 0.0025). Class "a": effect 0.2 on
    36 of 40 images, threshold 0.15: exact bootstrap tail 0.0051, not significant after BH. The
    normal approximation (0.0010) would have failed the gate; the bootstrap p-value does not."""
    cfg = _cfg(tmp_path, max_text_effect=0.15)
    rng = np.random.default_rng(1)
    per_class = {"a": class_stats(_class(0.2 * _flips(40, 36)), cfg, ["text"], "class:a")}
    for c in "bcde":
        per_class[c] = class_stats(_class(rng.normal(0.0, 0.05, 40)), cfg, ["text"], f"class:{c}")
    a = per_class["a"]
    exact = float(binom.cdf(30, 40, 0.9))
    assert a["text_effect_p_threshold"] == 0.15 and a["text_effect_p_value"] == pytest.approx(exact, abs=0.002)
    assert "text_lift_p_value" in a and "text_mass_p_value" not in a, "only the gate's statistics get p-values"
    normal = interval_pvalue(a["text_effect_ci"], 0.15, cfg.stats.ci)
    assert normal < 0.0025 < exact, (normal, exact)
    res = apply_gate(per_class, cfg.gate, ["text"], ["text"], level=cfg.stats.ci)
    assert res["n_tests"] == 10 and res["passed"], res["failures"]
    # the same grid with the p-values stripped (a summary from before): the approximation fails it
    old = {c: {k: v for k, v in s.items() if not k.endswith(("_p_value", "_p_threshold"))} for c, s in per_class.items()}
    res_old = apply_gate(old, cfg.gate, ["text"], ["text"], level=cfg.stats.ci)
    assert not res_old["passed"] and res_old["failures"][0]["p_source"] == "interval"
    # a clearly larger effect still fails, through the bootstrap p-value
    per_class["a"] = class_stats(_class(0.3 * _flips(40, 39)), cfg, ["text"], "class:a")
    res = apply_gate(per_class, cfg.gate, ["text"], ["text"], level=cfg.stats.ci)
    assert not res["passed"] and res["failures"][0]["p_source"] == "bootstrap"
    assert res["failures"][0]["p_value"] == per_class["a"]["text_effect_p_value"]


def test_a_stale_threshold_falls_back_to_the_interval():
    stats = {"x_ci": [0.5, 0.9], "x_p_value": 0.001, "x_p_threshold": 0.2}
    assert grid_pvalue(stats, "x", 0.2, 0.95) == (0.001, "bootstrap")
    p, source = grid_pvalue(stats, "x", 0.4, 0.95)
    assert source == "interval" and p == interval_pvalue([0.5, 0.9], 0.4, 0.95)
