"""The sanity-check panel and the warning it puts under the verdict when explanations fail it."""

from __future__ import annotations

from auditors.report.sanity import build_sanity
from auditors.report.verdict import build_verdict
from tests.report.builders import cf_summary


def test_sanity_warning_near_verdict(cf_page):
    warning = cf_page.find_element("id", "sanity-warning")
    assert warning.is_displayed()
    assert "not model-sensitive" in warning.text and "do not trust the mass metrics" in warning.text
    verdict_bottom = cf_page.find_element("id", "verdict").rect
    assert 0 <= warning.rect["y"] - (verdict_bottom["y"] + verdict_bottom["height"]) < 40  # right below the banner
    assert cf_page.find_element("id", "sanity-status").text == "not model-sensitive"


def test_sanity_panel_and_warning():
    bad = cf_summary(model_sensitive=False)
    v = build_verdict(bad)
    assert v.warnings == [
        "Explanations not model-sensitive: heatmaps barely change when the top layers are re-initialised "
        "(mean rank correlation with the randomised model 0.93, limit 0.8) \u2014 do not trust the mass metrics."
    ]
    panel = build_sanity(bad)
    assert (panel["status"], panel["tag"]) == ("bad", "not model-sensitive")
    assert {f["label"]: f["value"] for f in panel["facts"]}["Re-initialised layers"] == "layer4, fc"
    good = build_sanity(cf_summary(model_sensitive=True))
    assert good["status"] == "ok" and "0.33 \u2264 0.8" in good["verdict"]
