"""History without flows: reading run folders, the difference interval, the regression rule."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from auditors.analysis.gate import apply_regression_rule
from auditors.config import config_from_dict
from auditors.config.schema import GateConfig
from auditors.history import compare_runs, load_runs, reference_run
from auditors.history.trend import TrendPoint, trend_svg


def _cfg(tmp_path, **gate):
    return config_from_dict({"name": "a", "dataset": {"root": str(tmp_path)}, "model": {"arch": "resnet18"},
                             "stats": {"bootstrap": 500}, "gate": gate, "output": {"dir": str(tmp_path)}})


def _images(rng, n, mass_mean, cls="c"):
    area = rng.uniform(0.05, 0.15, n)
    return pd.DataFrame({"label": cls, "cam_status": "ok", "text_area": area,
                         "text_mass": np.clip(area * rng.normal(mass_mean, 0.3, n), 0, 1)})


def _write_run(folder, run_id, images, name="a"):
    d = folder / name / run_id
    d.mkdir(parents=True)
    lift = images.text_mass.mean() / images.text_area.mean()
    (d / "summary.json").write_text(json.dumps({"name": name, "run_id": run_id, "gate": {"passed": True},
                                                "classes": {"c": {"n": len(images), "text_lift": lift,
                                                                  "text_lift_ci": [lift - 0.1, lift + 0.1]}}}))
    images.to_parquet(d / "images.parquet")
    return d


def test_load_runs_skips_unfinished_broken_and_foreign(tmp_path):
    rng = np.random.default_rng(0)
    _write_run(tmp_path, "20260101T000000Z-0001", _images(rng, 20, 1.0))
    _write_run(tmp_path, "20260102T000000Z-0002", _images(rng, 20, 1.0))
    (tmp_path / "a" / "20260103T000000Z-0003").mkdir()  # interrupted: no summary
    bad = tmp_path / "a" / "20260104T000000Z-0004"
    bad.mkdir()
    (bad / "summary.json").write_text("{not json")
    foreign = _write_run(tmp_path, "20260105T000000Z-0005", _images(rng, 5, 1.0), name="b")
    foreign.rename(tmp_path / "a" / foreign.name)  # another audit's run copied in by hand
    (tmp_path / "a" / "20260105T000000Z-0005").rename(tmp_path / "a" / "20260106T000000Z-0006") if False else None
    runs, problems = load_runs(tmp_path / "a", "a")
    assert [r.run_id for r in runs] == ["20260101T000000Z-0001", "20260102T000000Z-0002"]
    assert len(problems) == 2 and "unreadable summary" in problems[0] and "belongs to audit 'b'" in problems[1]
    assert reference_run(runs, "previous", "20260102T000000Z-0002").run_id == "20260101T000000Z-0001"
    assert reference_run(runs, "previous", "20260101T000000Z-0001") is None
    assert reference_run(runs, "20260102T000000Z-0002", "z").run_id == "20260102T000000Z-0002"


def test_difference_interval_separates_a_real_increase_from_noise(tmp_path):
    rng = np.random.default_rng(1)
    cfg = _cfg(tmp_path)
    _write_run(tmp_path, "r1", _images(rng, 60, 1.0))
    ref = load_runs(tmp_path / "a", "a")[0][0]
    same = _images(rng, 60, 1.0)
    worse = _images(rng, 60, 2.5)
    for df, expect_sig in ((same, False), (worse, True)):
        lift = df.text_mass.mean() / df.text_area.mean()
        comp = compare_runs({"c": {"n": 60, "text_lift": lift}}, df, ref, "label", cfg)
        ch = comp["classes"]["c"]["text_lift"]
        assert ch["method"] == "bootstrap" and ch["delta_ci"][0] < ch["delta"] < ch["delta_ci"][1]
        assert (ch["delta_ci"][0] > 0) is expect_sig, ch


def test_fallback_interval_when_reference_images_are_gone(tmp_path):
    rng = np.random.default_rng(2)
    d = _write_run(tmp_path, "r1", _images(rng, 30, 1.0))
    (d / "images.parquet").unlink()
    ref = load_runs(tmp_path / "a", "a")[0][0]
    cur = {"c": {"n": 30, "text_lift": 3.0, "text_lift_ci": [2.5, 3.5]}}
    ch = compare_runs(cur, _images(rng, 30, 3.0), ref, "label", _cfg(tmp_path))["classes"]["c"]["text_lift"]
    r = ref.classes["c"]
    assert ch["method"] == "intervals"
    assert ch["delta_ci"] == pytest.approx([2.5 - r["text_lift_ci"][1], 3.5 - r["text_lift_ci"][0]])


def test_regression_rule_uses_the_lower_bound_and_the_allowed_increase():
    base = {"run_id": "r0", "classes": {
        "up": {"text_lift": {"current": 3.0, "reference": 1.0, "delta": 2.0, "delta_ci": [1.2, 2.8], "method": "bootstrap"}},
        "noisy": {"text_lift": {"current": 3.0, "reference": 1.0, "delta": 2.0, "delta_ci": [0.3, 3.7], "method": "bootstrap"}},
        "effect": {"text_effect": {"current": 0.3, "reference": 0.0, "delta": 0.3, "delta_ci": [0.1, 0.5], "method": "bootstrap"}},
    }}
    per_class = {k: {"n": 10, "flagged": False, "flag_reasons": []} for k in base["classes"]}
    gate = {"passed": True, "failures": []}
    out = apply_regression_rule(gate, per_class, base, GateConfig(baseline="previous", max_lift_increase=1.0, max_effect_increase=0.05))
    assert not out["passed"]
    assert {(f["class"], f["rule"]) for f in out["failures"]} == {("up", "regression_text_lift"), ("effect", "regression_text_effect")}
    assert per_class["up"]["flagged"] and not per_class["noisy"]["flagged"]
    # Off by default: nothing changes.
    gate2 = {"passed": True, "failures": []}
    assert apply_regression_rule(gate2, per_class, base, GateConfig()) == {"passed": True, "failures": []}


def test_trend_svg_is_static_and_escapes_labels():
    svg = str(trend_svg([TrendPoint("r1", 1.0, (0.8, 1.2)), TrendPoint("r2", None), TrendPoint("r3", 2.0)],
                        "<script>x</script>", limit=1.5))
    assert svg.startswith("<svg") and "<script>" not in svg and "&lt;script&gt;" in svg
    assert svg.count("<circle") == 2 and 'class="limit"' in svg and svg.count('class="ci"') == 1
    assert "\u2014" in str(trend_svg([TrendPoint("r1", None)], "x"))
