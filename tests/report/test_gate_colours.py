"""The report's colours say what the gate decided, never what an interval alone suggests (issue 10).

The gate fails a (class, region, rule) cell when its Benjamini-Hochberg q-value across the whole
grid is at most ``gate.fdr``. An interval over the limit is therefore not a failure by itself: a
red cell must be one the gate failed (listed in ``gate.failures``), and a failed cell must be red.
Summaries come from the real builder with the real gate (:func:`tests.report.builders.cf_summary`
-> :func:`auditors.analysis.gate.decide`); token runs from the real token rules and
:func:`auditors.audit.finalize.summarise`.
"""

from __future__ import annotations

import re

import pandas as pd

from auditors.audit.finalize import summarise
from auditors.audit.summary import Summary
from auditors.report import render_report, write_report
from auditors.report.classes import build_class_table
from auditors.report.counterfactual import build_counterfactual
from auditors.report.verdict import build_verdict
from tests.browser import console_errors, open_file
from tests.report.builders import (
    RUN_ID, audit_config, cf_summary, decided, image_rows, make_errors, token_entry, validation_result,
)
from tests.report.html_text import visible_text

GATED = ("lift", "norm")
#: Nine tested cells: text lift, text effect and border lift for the three classes with >= 5 images.
MORE_CELLS = {"gate": {"max_lift": {"border": 3.0}}}
#: comedy: text lift and text effect just over their limits (each p ~ 0.02 on its own, which the
#: interval rule alone would flag); horror made clean; western: far over, but only 2 images.
BORDERLINE = {
    "horror": {"text_lift": 1.5, "text_lift_ci": [1.2, 1.8], "text_effect": 0.01, "text_effect_ci": [-0.01, 0.03]},
    "comedy": {"text_lift": 2.5, "text_lift_ci": [2.01, 2.99], "text_effect": 0.09, "text_effect_ci": [0.051, 0.129]},
    "western": {"text_lift": 5.0, "text_lift_ci": [4.0, 6.0]},
}


def _failed(summary: Summary) -> set[tuple[str, str]]:
    return {(str(f.class_), f.rule[4:]) for f in summary.gate.failures if f.class_ and f.rule.startswith("max_")}


def class_cells(summary: Summary) -> dict[tuple[str, str], dict]:
    """{(class, statistic): cell} of the gated (lift, norm. lift) columns of the class table."""
    table = build_class_table(summary)
    cols = [c for c in table["columns"] if c["kind"] == "num"]
    return {(r["name"], c["key"]): cell for r in table["rows"] for c, cell in zip(cols, r["cells"]) if c["fmt"] in GATED}


def effect_rows(summary: Summary) -> dict[str, dict]:
    return {r["name"]: r for b in build_counterfactual(summary)["blocks"] for r in b["rows"]}


def assert_red_exactly_where_the_gate_failed(summary: Summary) -> None:
    """Every gated cell of both tables: red (lift-bad) <=> the gate's failures list it."""
    failed = _failed(summary)
    for key, cell in class_cells(summary).items():
        assert ("lift-bad" in cell["cls"]) == (key in failed), (key, cell["cls"], failed)
    for name, row in effect_rows(summary).items():
        assert (row["status"] == "bad") == ((name, "text_effect") in failed), (name, row["status"])
        assert ("lift-bad" in row["cells"][-1]["cls"]) == ((name, "text_effect") in failed)


def test_over_the_limit_but_not_significant_after_fdr_is_amber_not_red_and_the_gate_passes():
    summary = cf_summary(update=BORDERLINE, **MORE_CELLS)
    cells = {(c["class"], c["rule"]): c for c in summary.gate.get("cells")}
    # The premise: comedy's intervals lie wholly above their limits, but BH across the 9 cells does not flag them.
    assert summary.gate.n_tests == 9 and len(cells) == 9
    lift_cell, effect_cell = cells[("comedy", "max_text_lift")], cells[("comedy", "max_text_effect")]
    assert lift_cell["p_value"] < 0.025 and effect_cell["p_value"] < 0.025
    assert lift_cell["q_value"] > summary.gate.fdr and not lift_cell["failed"] and not effect_cell["failed"]
    assert summary.gate.passed and summary.gate.failures == [] and not summary.classes["comedy"].flagged

    table = class_cells(summary)
    comedy, western = table[("comedy", "text_lift")], table[("western", "text_lift")]
    assert "lift-over" in comedy["cls"] and "lift-bad" not in comedy["cls"] and comedy["level"] == "over"
    assert comedy["fired"] == "n.s. after FDR"
    assert re.fullmatch(r"Over the limit by its interval, but not a gate failure: not significant after Benjamini-Hochberg "
                        r"false-discovery-rate control across the 9 tested cells \(q 0\.\d+ > gate\.fdr 0\.025\)\.",
                        comedy["title"]), comedy["title"]
    assert f"q {lift_cell['q_value']:.2g}" in comedy["title"]
    assert "lift-over" in western["cls"] and western["fired"] == "not gated"
    assert "fewer than gate.min_images_per_class (5), so it is not tested" in western["title"]
    assert "lift-ok" in table[("drama", "text_lift")]["cls"] and "lift-ok" in table[("horror", "text_lift")]["cls"]
    effects = effect_rows(summary)
    assert effects["comedy"]["status"] == "over" and effects["comedy"]["tag"]["text"] == "not significant"
    assert "lift-over" in effects["comedy"]["cells"][-1]["cls"] and effects["western"]["status"] != "bad"
    assert_red_exactly_where_the_gate_failed(summary)

    html = render_report(summary, None, [], validation_result(), make_errors(0))
    assert "lift-bad" not in re.search(r'<table class="data sortable" id="class-table">.*?</table>', html, re.S).group(0)
    text = " ".join(visible_text(html).split())
    assert ("Lift colours follow the gate's decision, not the interval alone: the gate tests every class \u00d7 region "
            "\u00d7 rule cell and fails a cell when its q-value after Benjamini-Hochberg false-discovery-rate control "
            "across the 9 tested cells is at most gate.fdr (0.025)") in text
    assert "over the limit, not significant after FDR (or not tested): not a failure" in text
    assert build_verdict(summary).title == "PASS"


def test_a_cell_bh_flags_is_red_and_listed_in_the_gate_failures():
    clear = {**BORDERLINE, "comedy": {**BORDERLINE["comedy"], "text_lift": 4.0, "text_lift_ci": [3.0, 5.0]}}
    summary = cf_summary(update=clear, **MORE_CELLS)
    assert not summary.gate.passed
    assert [(f.class_, f.rule) for f in summary.gate.failures] == [("comedy", "max_text_lift")]
    lift = class_cells(summary)[("comedy", "text_lift")]
    assert "lift-bad" in lift["cls"] and "fired" in lift["cls"] and lift["fired"] == "\u2691 text lift rule"
    assert lift["title"].startswith("The gate fails this class by rule max_text_lift: lower bound 3.000 > 2.0, q ")
    # comedy's effect (p ~ 0.02) is still not significant: its q is now smaller but above 0.025.
    cell = {(c["class"], c["rule"]): c for c in summary.gate.get("cells")}[("comedy", "max_text_effect")]
    assert not cell["failed"] and effect_rows(summary)["comedy"]["status"] == "over"
    assert_red_exactly_where_the_gate_failed(summary)
    assert build_verdict(summary).title == "FAIL"


def test_a_failed_cell_is_red_even_where_its_interval_reaches_below_the_limit():
    """With gate.fdr above the interval's one-sided level, BH can fail a cell whose 95% interval
    straddles the limit; the gate's decision wins over the interval's colour."""
    straddle = {**BORDERLINE, "comedy": {"text_lift": 2.3, "text_lift_ci": [1.95, 2.65]},
                "horror": {}}  # horror keeps its clear lift and effect failures
    summary = cf_summary(update=straddle, gate={"fdr": 0.2, "max_lift": {"border": 3.0}})
    assert ("comedy", "max_text_lift") in {(f.class_, f.rule) for f in summary.gate.failures}
    lift = class_cells(summary)[("comedy", "text_lift")]
    assert lift["sub"] == "[1.95, 2.65]" and "lift-bad" in lift["cls"] and "lower bound 1.950 > 2.0" in lift["title"]
    assert_red_exactly_where_the_gate_failed(summary)


def test_the_all_images_row_is_never_red():
    summary = cf_summary(update=BORDERLINE, **MORE_CELLS)
    overall = build_class_table(summary.model_copy(update={"overall": summary.classes["western"]}))["overall"]
    lift = [c for c in overall["cells"] if c.get("level")][0]
    assert "lift-over" in lift["cls"] and "all images together are not gated" in lift["title"]


def _token_run(fail_on_association: bool) -> Summary:
    """Three tokens decided by the real token rules: BADGE needed by the model but balanced across
    classes (dependence), LOGO tied to horror and attended but not needed (association +
    attention), STUDIO tied to horror, neither attended nor needed (association alone)."""
    tokens = decided([
        token_entry("text:badge", 40, "drama", 0.36, 0.62, 1.3, 0.21, [0.15, 0.27], (0.4, 0.02),
                    example_text="BADGE", risk=20.0, effect_p_value=1e-6),
        token_entry("text:logo", 30, "horror", 0.9, 1e-9, 3.2, 0.01, [-0.01, 0.03], (0.0, 0.0),
                    example_text="LOGO", risk=12.0, effect_p_value=0.7),
        token_entry("text:studio", 30, "horror", 0.9, 1e-9, 1.1, 0.0, [-0.02, 0.02], (0.0, 0.0),
                    example_text="STUDIO", risk=10.0, effect_p_value=0.6),
    ], {"fail_on_association": fail_on_association})
    cfg = audit_config(tokens={"enabled": True, "min_images": 3, "max_lift": 2.0, "max_effect": 0.05,
                               "max_p_value": 0.01, "fail_on_association": fail_on_association})
    images = pd.DataFrame(image_rows("horror", 12, 0.05, 0.05) + image_rows("drama", 12, 0.05, 0.05))
    return summarise(cfg, images, make_errors(0), ["drama", "horror"], "label", validation_result(),
                     run_id=RUN_ID, target_layer="layer4", device="cpu", tokens=tokens)


def test_token_failures_carry_the_finding_that_failed():
    summary = _token_run(fail_on_association=False)
    fails = {f.token: f for f in summary.gate.failures if f.rule == "token"}
    assert {k: f.fails_on for k, f in fails.items()} == {"text:badge": ["dependence"], "text:logo": ["association"]}
    assert summary.to_dict()["gate"]["failures"][0]["fails_on"] == ["dependence"]  # summary.json, additively
    on = _token_run(fail_on_association=True)
    assert {f.token: f.fails_on for f in on.gate.failures if f.rule == "token"} == {
        "text:badge": ["dependence"], "text:logo": ["association"], "text:studio": ["association"]}
    # The glossary states the rule the gate applied under each config (it once said association was required).
    off_text = " ".join(visible_text(render_report(summary, None, [], {}, None)).split())
    on_text = " ".join(visible_text(render_report(on, None, [], {}, None)).split())
    assert "Model dependence fails on its own" in off_text and "alone it is reported, not failed" in off_text
    assert "or on its own ( tokens.fail_on_association is on)" in on_text


def test_verdict_names_the_finding_of_each_token():
    sentences = {f["token"]: f["sentence"] for f in build_verdict(_token_run(fail_on_association=True)).findings
                 if f.get("token")}
    assert sentences["text:badge"] == (
        "The model depends on token 'BADGE' (on 40 images): removing it lowers confidence by 0.21 more than a placebo "
        "(95% interval 0.15\u20130.27; q = 3e-06); the model attends to it 1.3\u00d7 its area.")
    assert sentences["text:logo"] == (
        "Token 'LOGO' (on 30 images) is over-represented in class 'horror' (90% of its images, q = 1.5e-09) and the "
        "model attends to it 3.2\u00d7 its area, so the config fails on association (data association + attention); "
        "removing just this text lowers confidence by 0.010 more than a placebo (95% interval \u22120.010\u20130.030), "
        "not shown to exceed tokens.max_effect.")
    assert sentences["text:studio"].startswith(
        "Token 'STUDIO' (on 30 images) is over-represented in class 'horror' (90% of its images, q = 1.5e-09) and the "
        "config fails on association alone (tokens.fail_on_association)")


def test_legend_and_colours_render_in_chromium(driver, tmp_path):
    """One report with a red cell (horror, failed) and an amber one (comedy, n.s. after FDR)."""
    update = {**BORDERLINE, "horror": {}}
    summary = cf_summary(update=update, **MORE_CELLS)
    assert {(f.class_, f.rule) for f in summary.gate.failures} == {("horror", "max_text_lift"), ("horror", "max_text_effect")}
    path = write_report(tmp_path, summary, None, [], validation_result(), make_errors(0))
    open_file(driver, path)
    assert console_errors(driver) == []
    legend = driver.find_element("id", "class-legend")
    assert legend.is_displayed() and "not significant after FDR" in legend.text
    style = ("const s = getComputedStyle(arguments[0]); return [s.backgroundColor, s.backgroundImage, s.color, "
             "s.outlineStyle];")
    red = driver.find_elements("css selector", "#class-table tbody td.lift-bad")
    amber = driver.find_elements("css selector", "#class-table tbody td.lift-over")
    assert [c.text.split()[0] for c in red] == ["3.41"] and red[0].is_displayed()
    assert [c.text.split()[0] for c in amber] == ["2.50", "5.00"] and all(c.is_displayed() for c in amber)
    r_bg, r_img, r_fg, _ = driver.execute_script(style, red[0])
    a_bg, a_img, a_fg, a_outline = driver.execute_script(style, amber[0])
    assert r_bg == "rgb(253, 236, 234)" and r_fg == "rgb(180, 35, 24)" and r_img == "none"
    assert "repeating-linear-gradient" in a_img and a_fg == "rgb(161, 92, 0)" and a_outline == "dashed"
    chip = driver.find_element("css selector", "#class-legend .chip.lift-over")
    assert "repeating-linear-gradient" in driver.execute_script(style, chip)[1]
    assert "n.s. after FDR" in amber[0].text and "q 0." in amber[0].get_attribute("title")
