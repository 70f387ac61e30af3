"""The per-class attention table: rows, sorting, interval colours, grouping by region."""

from __future__ import annotations

import pytest

from auditors.audit.summary import Summary
from auditors.report import render_report
from auditors.report.classes import build_class_table
from auditors.report.verdict import build_verdict
from tests.browser import console_errors
from tests.report.builders import cf_summary, images_v01, make_errors, summary_v01, validation_result
from tests.report.html_text import visible_text
from tests.report.galleries import make_gallery


def class_column(driver, col: int) -> list[str]:
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('#class-table tbody tr'))"
        ".map(r => r.cells[arguments[0]].getAttribute('data-sort'));", col)


def header(driver, key: str):
    return driver.find_element("css selector", f"#class-table th[data-key='{key}']")


def test_class_table_rows(page):
    names = [e.text for e in page.find_elements("css selector", "#class-table tbody .cname")]
    assert names == ["comedy", "drama", "horror", "western"]
    assert page.find_element("css selector", "#class-table tfoot .cname").text == "All images"
    horror = page.find_element("xpath", "//table[@id='class-table']//tbody/tr[3]")
    assert "flagged" in horror.text and "status-flagged" in horror.get_attribute("class")
    bad = page.find_elements("css selector", "#class-table td.lift-bad")
    assert [c.text.split() for c in bad] == [["3.70", "[3.64,", "3.75]", "\u2691", "text", "lift", "rule"]]  # the rule that fired
    western = page.find_element("xpath", "//table[@id='class-table']//tbody/tr[4]")
    assert "too few" in western.text


def test_clicking_header_sorts(page):
    lift = header(page, "text_lift")
    col = int(lift.get_attribute("data-col"))
    lift.click()
    asc = [float(v) for v in class_column(page, col)]
    assert asc == sorted(asc) and lift.get_attribute("aria-sort") == "ascending"
    lift.click()
    desc = [float(v) for v in class_column(page, col)]
    assert desc == sorted(desc, reverse=True) and desc[0] == pytest.approx(0.34 / 0.092)
    header(page, "name").click()
    names = [e.text for e in page.find_elements("css selector", "#class-table tbody .cname")]
    assert names == ["comedy", "drama", "horror", "western"]
    assert console_errors(page) == []


def test_mass_and_area_intervals_toggle(cf_page):
    extra = cf_page.find_element("css selector", "#class-table td .ci-extra")
    assert not extra.is_displayed()
    cf_page.find_element("css selector", "label[for='show-ci']").click()
    assert extra.is_displayed() and extra.text.startswith("[")
    lift = cf_page.find_element("xpath", "//table[@id='class-table']//tbody/tr[3]/td[contains(@class,'lift')]")
    assert lift.text.split() == ["3.41", "[2.90,", "3.95]", "\u2691", "text", "lift", "rule"] and "lift-bad" in lift.get_attribute("class")


def test_lift_colour_follows_the_interval_lower_bound():
    # comedy: point estimate above the limit, but the interval reaches below it: amber, not red.
    summary = cf_summary(update={"comedy": {"text_lift": 2.2, "text_lift_ci": [1.8, 2.6]}})
    assert not summary.classes["comedy"].flagged and summary.classes["horror"].flagged
    table = build_class_table(summary)
    col = [c["key"] for c in table["columns"] if c["kind"] == "num"].index("text_lift")
    lift = {r["name"]: r["cells"][col] for r in table["rows"]}
    assert (lift["horror"]["text"], lift["horror"]["sub"]) == ("3.41", "[2.90, 3.95]")
    assert "lift-bad" in lift["horror"]["cls"] and "lift-warn" in lift["comedy"]["cls"]
    assert "lift-ok" in lift["drama"]["cls"]
    hit = [c["key"] for c in table["columns"] if c["kind"] == "num"].index("text_hit_rate")
    assert table["rows"][2]["cells"][hit]["sub"] == "exp. 9.2%"
    assert table["has_extra"] and table["has_intervals"]
    assert [g["label"] for g in table["groups"] if g["heuristic"]] == ["Background"]
    assert table["rows"][2]["why"] == "text lift, text effect"


def test_run_without_regions_or_gate_config():
    summary = summary_v01()
    summary.update(regions=[], gate=None, config={})
    html = render_report(summary, images_v01(summary), make_gallery(1), validation_result(), make_errors())
    assert 'class="group-row"' not in html and 'data-key="text_lift"' not in html
    assert "No lift limit is configured" in visible_text(html)
    assert build_verdict(Summary.model_validate(summary)).title == "FLAGGED"  # horror is flagged, no gate result
