"""The header settings and the methods section: where the regions come from, how intervals are made."""

from __future__ import annotations

import re

from auditors.report.settings import build_methods, build_settings
from tests.report.builders import cf_summary
from tests.report.test_counterfactual import cf_text


def test_region_sources_in_legend_and_methods():
    text = cf_text(cf_summary())
    assert "Background is estimated by grabcut, not detected (complement of an OpenCV GrabCut" in text
    assert "Where the regions come from" in text
    assert re.search(r"Text ?: easyocr-craft \u2014 EasyOCR CRAFT detector, canvas 1024", text)
    assert "complement_of_foreground" not in text and "True" not in text


def test_settings_and_methods_read_the_typed_summary():
    summary = cf_summary()
    settings = {s["label"]: s["value"] for s in build_settings(summary)}
    assert settings["Model"] == "resnet18 \u00b7 posters.pt" and settings["Input"] == "224\u00d7224 (stretch)"
    assert settings["Gate"] == "text lift \u2264 2.0 \u00b7 effect \u2264 0.05 (lower bound)"
    assert settings["Counterfactual"] == "remove text vs placebo"
    assert settings["Intervals"] == "95% bootstrap \u00d7 1,000"
    methods = build_methods(summary)
    assert methods["rule"].startswith("a class is flagged when a statistic exceeds its threshold significantly")  # issue 10: BH
    assert [s["label"] for s in methods["sources"]] == ["Text", "Border", "Background"]
    assert [s["heuristic"] for s in methods["sources"]] == [False, False, True]
