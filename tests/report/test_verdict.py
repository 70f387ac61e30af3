"""The verdict banner: status, headline and one plain sentence per gate finding."""

from __future__ import annotations

from auditors.audit.summary import Summary
from auditors.report.verdict import build_verdict
from tests.report.builders import (
    MARK_SENTENCE, NEW_SENTENCE, cf_summary, class_stats, summary_v01, token_summary, validation_result,
)


def load(summary: dict) -> Summary:
    """A summary.json as an older release wrote it."""
    return Summary.model_validate(summary)


def test_verdict_banner_in_browser(page):
    assert page.find_element("id", "verdict-status").text == "FAIL"
    findings = page.find_element("id", "findings").text
    assert ("Class 'horror': 34% of the heatmap falls on text covering 9% of the image "
            "(lift 3.70, 95% interval 3.64\u20133.75; limit 2.0)") in findings
    assert "max_text_lift" in findings


def test_verdicts():
    failing = build_verdict(load(summary_v01()))
    assert (failing.status, failing.title) == ("fail", "FAIL")
    assert failing.findings[0]["sentence"] == (
        "Class 'horror': 34% of the heatmap falls on text covering 9% of the image (lift 3.70 > 2.0)."
    )
    passing = build_verdict(load(summary_v01(classes={"drama": class_stats(10, 0.08, 0.1)})))
    assert (passing.status, passing.title, passing.findings) == ("pass", "PASS", [])
    flagged_only = summary_v01()
    flagged_only["gate"] = {"passed": True, "failures": []}
    v = build_verdict(load(flagged_only))
    assert v.title == "FLAGGED" and v.findings[0]["sentence"] == "Class 'horror': text_lift 3.70 > 2.0."
    bad_validation = summary_v01()
    bad_validation["validation"] = {"success": False, "n_expectations": 12, "n_failed": 2}
    assert "2 of 12 expectations" in build_verdict(load(bad_validation)).notes[0]
    other_rule = summary_v01()
    other_rule["gate"]["failures"] = [{"class": None, "rule": "max_failed_fraction", "value": 0.3, "threshold": 0.1}]
    assert build_verdict(load(other_rule)).findings[0]["sentence"] == "Whole run: max failed fraction is 0.30 (limit 0.1)."


def test_verdict_sentences_for_interval_rules():
    summary = cf_summary()
    v = build_verdict(summary)
    assert (v.title, len(v.findings)) == ("FAIL", 2)
    assert v.findings[0]["sentence"] == (
        "Class 'horror': 31% of the heatmap falls on text covering 9% of the image "
        "(lift 3.41, 95% interval 2.90\u20133.95; limit 2.0)."
    )
    assert v.findings[1]["sentence"] == (
        "Class 'horror': removing the text lowers confidence by 0.31 more than removing an equal-area placebo "
        "region (95% interval 0.22\u20130.40; threshold 0.05)."
    )
    assert v.rule.startswith("a class is flagged when a statistic exceeds its threshold significantly")
    # Small effects keep three decimals so they stay comparable with a 0.05 threshold; rules on
    # other regions and a failed validation, all decided by the real gate.
    summary = cf_summary(
        update={"comedy": {"text_effect": 0.106, "text_effect_ci": [0.085, 0.126]},
                "drama": {"border_lift": 1.9, "border_lift_ci": [1.6, 2.2],
                          "background_effect": 0.2, "background_effect_ci": [0.12, 0.28]}},
        validation=dict(validation_result(False), n_expectations=17, n_failed=2),
        gate={"max_lift": {"border": 1.5}, "max_effect": {"background": 0.1}},
        counterfactual={"regions": ["text", "background"]},
    )
    assert [(f.class_, f.rule) for f in summary.gate.failures] == [
        ("comedy", "max_text_effect"), ("drama", "max_border_lift"), ("drama", "max_background_effect"),
        ("horror", "max_text_lift"), ("horror", "max_text_effect"), (None, "validation")]
    summary.classes["drama"].border_lift_ci = None  # only the failures' lower bounds are known
    summary.classes["drama"].background_effect_ci = None
    v = build_verdict(summary)
    sentences = [f["sentence"] for f in v.findings]
    assert sentences[0] == ("Class 'comedy': removing the text lowers confidence by 0.106 more than removing an "
                            "equal-area placebo region (95% interval 0.085\u20130.126; threshold 0.05).")
    assert "(lift 1.90, lower bound 1.60 > 1.5)" in sentences[1] and "the image border" in sentences[1]
    assert sentences[2] == ("Class 'drama': removing the background lowers confidence by 0.20 more than removing "
                            "an equal-area placebo region (interval lower bound 0.12; threshold 0.1).")
    assert sentences[5].startswith("Data validation: 2 of 17 expectations on the result tables did not hold")
    assert v.notes == []  # the validation finding replaces the separate note


def test_pass_headline_names_both_limits():
    summary = cf_summary(model_sensitive=True, update={"horror": {
        "text_lift": 1.5, "text_lift_ci": [1.2, 1.8], "text_effect": 0.01, "text_effect_ci": [-0.01, 0.03]}})
    assert summary.gate.passed and summary.flagged_classes == []
    v = build_verdict(summary)
    assert v.title == "PASS" and v.warnings == []
    assert v.headline == "Every class passed the release gate (limits: text lift 2.0, text effect 0.05)."


def test_token_verdict_sentences():
    v = build_verdict(token_summary())
    assert v.title == "FAIL" and v.headline == "4 findings blocked the release gate."
    sentences = [f["sentence"] for f in v.findings]
    assert sentences[2:] == [NEW_SENTENCE, MARK_SENTENCE]
    assert [f["rule"] for f in v.findings[2:]] == ["token", "token"]
    # A summary.json whose gate did not list the flagged tokens: they still show, with their own numbers.
    older = token_summary().to_dict()
    older["gate"] = {"passed": True, "failures": []}
    for st in older["classes"].values():
        st.update(flagged=False, flag_reasons=[])
    older["flagged_classes"] = []
    v = build_verdict(load(older))
    assert v.title == "FLAGGED" and v.headline == "2 findings flagged for review."
    assert [f["sentence"] for f in v.findings] == [NEW_SENTENCE, MARK_SENTENCE]
    # Failures for tokens the table does not list read from the failure itself.
    older["tokens"], older["flagged_tokens"] = [], []
    older["gate"] = {"passed": False, "failures": [
        {"class": "horror", "rule": "token", "token": "text:new", "value": 3.04, "effect": None, "lower": None,
         "threshold": None},
        {"class": "horror", "rule": "token", "token": "visual:00ff", "value": None, "effect": -0.02,
         "lower": None, "threshold": None},
    ]}
    assert [f["sentence"] for f in build_verdict(load(older)).findings] == [
        "Token 'new' (mostly in class 'horror'): the model attends to it 3.0\u00d7 its area.",
        "An unreadable mark #00ff (mostly in class 'horror'): removing just this mark raises confidence by 0.020 "
        "more than a placebo.",
    ]
