"""The whole report: self-containment, escaping, missing values, older summaries, and how it
behaves in headless Chromium (tests/browser.py; it fails, not skips, without Chromium)."""

from __future__ import annotations

import re

import cv2
import numpy as np
import pandas as pd
import pytest

from auditors.audit.summary import Summary
from auditors.report import render_report, write_report
from tests.browser import console_errors, full_page_png, open_file
from tests.report.builders import (
    HOSTILE_CLASS, HOSTILE_PATH, cf_report, cf_summary, class_stats, empty_report, images_v01, make_errors,
    realistic_report, realistic_summary, summary_v01, token_report, validation_result, with_effect, with_intervals,
)
from tests.report.html_text import parse, visible_text
from tests.report.galleries import make_cf_gallery, make_gallery


# --------------------------------------------------------------------------- browser


def test_page_loads_without_console_errors(driver, report_path):
    open_file(driver, report_path)
    assert console_errors(driver) == []
    assert driver.title.startswith("FAIL")


def test_nothing_loaded_from_network(page):
    names = page.execute_script("return performance.getEntriesByType('resource').map(e => e.name);")
    assert all(n.startswith(("data:", "file:")) for n in names), names


def test_screenshot_not_blank(page, tmp_path):
    png = full_page_png(page)
    (tmp_path / "shot.png").write_bytes(png)
    img = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None and img.shape[1] == 1280 and img.shape[0] > 1500  # whole page, not the viewport
    assert img.std() > 20
    assert len(np.unique(img.reshape(-1, 3)[::97], axis=0)) > 100
    # The top of the page is the dark header; the verdict banner below it is red-tinted.
    assert img[:60].mean() < 80


def hostile_summary() -> tuple[Summary, pd.DataFrame]:
    """A flagged class and a run whose names are script tags."""
    summary, images = realistic_summary(classes={HOSTILE_CLASS: (5, 0.5, 0.1)}, name=HOSTILE_CLASS)
    assert summary.classes[HOSTILE_CLASS].flagged
    return summary, images


def test_hostile_strings_do_not_inject_in_browser(driver, tmp_path):
    summary, images = hostile_summary()
    gallery = make_gallery(1, path=HOSTILE_PATH)
    errors = pd.DataFrame([{"path": HOSTILE_PATH, "stage": "<b>decode</b>", "reason": HOSTILE_CLASS}])
    out = write_report(tmp_path, summary, images, gallery, validation_result(), errors)
    open_file(driver, out)
    assert driver.execute_script("return window.__pwned === undefined;")
    assert driver.find_elements("id", "injected") == []
    assert driver.find_element("id", "audit-name").text == HOSTILE_CLASS
    assert driver.find_element("css selector", "#class-table tbody .cname").text == HOSTILE_CLASS
    assert HOSTILE_PATH in driver.find_element("css selector", ".card-path").text
    assert console_errors(driver) == []


@pytest.mark.parametrize("builder", [empty_report, realistic_report])
def test_empty_and_full_reports_load_cleanly(driver, tmp_path, builder):
    open_file(driver, builder(tmp_path))
    assert console_errors(driver) == []
    assert driver.find_element("id", "verdict-status").text in {"NO DATA", "FAIL"}


# --------------------------------------------------------------------------- static


def test_write_report_returns_path_and_leaves_no_temp(tmp_path):
    out = realistic_report(tmp_path / "run")
    assert out == tmp_path / "run" / "report.html"
    assert sorted(p.name for p in out.parent.iterdir()) == ["report.html"]


def test_hostile_strings_are_escaped():
    summary, images = hostile_summary()
    errors = pd.DataFrame([{"path": HOSTILE_PATH, "stage": "decode", "reason": HOSTILE_CLASS}])
    html = render_report(summary, images, make_gallery(1, path=HOSTILE_PATH), validation_result(), errors)
    assert "<script>window" not in html
    assert '<img id="injected"' not in html
    doc = parse(html)
    assert [t for t, _ in doc.tags].count("script") == 1
    assert all(a.get("id") != "injected" for _, a in doc.tags)
    assert all((a.get("src") or "").startswith("data:image/png;base64,") for t, a in doc.tags if t == "img")
    assert HOSTILE_CLASS in visible_text(html) and HOSTILE_PATH in visible_text(html)


@pytest.mark.parametrize("builder", [realistic_report, cf_report, token_report])
def test_no_external_references(tmp_path, builder):
    html = builder(tmp_path).read_text(encoding="utf-8")
    assert not re.search(r"https?:|ftp:|//[a-z0-9.-]+\.[a-z]{2,}", html, re.I)
    doc = parse(html)
    for tag, attrs in doc.tags:
        for name in ("src", "srcset", "poster", "data", "action", "formaction", "background"):
            value = attrs.get(name)
            assert value is None or value.startswith("data:"), (tag, name, value[:80])
        if tag == "link":
            pytest.fail(f"unexpected <link> {attrs}")
        href = attrs.get("href")
        if href is not None:
            assert href.startswith("#") or re.fullmatch(r"[\w.-]+", href), href
    css = "".join(doc.raw_blocks)
    assert "@import" not in css and not re.search(r"url\(\s*['\"]?(?!data:)", css)
    csp = next(a["content"] for t, a in doc.tags if t == "meta" and a.get("http-equiv") == "Content-Security-Policy")
    assert "default-src 'none'" in csp and "img-src data:" in csp


def test_links_to_run_files_are_relative(tmp_path):
    html = realistic_report(tmp_path).read_text(encoding="utf-8")
    hrefs = {a.get("href") for _, a in parse(html).tags}
    assert {"summary.json", "images.parquet", "errors.csv", "validation.json"} <= hrefs


def test_nan_and_none_values_render_as_dash():
    nan = float("nan")
    classes = {
        "a": class_stats(3, 0.2, 0.1, text_lift=nan, text_hit_rate=None, border_mass=nan),
        "b": {"n": 0, "flagged": False},  # a class with almost nothing in it
    }
    summary = summary_v01(classes=classes)
    summary.update(overall={"n": 3, "text_mass": nan}, timing=None, cam=None, created_at=None,
                   gate={"passed": None}, n_degenerate=None, config={"model": "not-a-dict"})
    images = images_v01(summary).assign(confidence=nan)
    item = make_gallery(1)[0]
    item.confidence, item.metrics = nan, {"text_mass": None, "text_lift": nan}
    errors = pd.DataFrame([{"path": None, "stage": nan, "reason": None}])
    validation = {"success": None, "suites": {"s": {"results": [{"expectation_config": None}, {}]}}}
    html = render_report(summary, images, [item], validation, errors)
    text = visible_text(html)
    assert not re.search(r"\bnan\b|\bNone\b|\binf\b", text, re.I)
    assert text.count("\u2014") > 10
    assert "NO GATE" in text


def test_empty_run_renders(tmp_path):
    html = empty_report(tmp_path).read_text(encoding="utf-8")
    text = visible_text(html)
    assert "NO DATA" in text and "No images were audited" in text
    assert "No classes to report" in text and "No gallery images" in text
    assert "No validation results were recorded" in text and "None: every image was read" in text
    assert "<img" not in html


def test_older_summaries_render_without_new_sections():
    summary = summary_v01()  # 0.1 format: no intervals, counterfactual, stats, sanity or sources
    html = render_report(summary, images_v01(summary), make_gallery(1), validation_result(), make_errors())
    assert 'id="counterfactual"' not in html and 'id="sanity"' not in html and 'id="tokens"' not in html
    assert 'href="#tokens"' not in html
    assert 'id="show-ci"' not in html and 'id="sanity-warning"' not in html and "heuristic" not in visible_text(html)
    assert "Placebo" not in visible_text(html) and "within 25% of the limit" in visible_text(html)


def test_a_summary_json_round_trip_renders_the_same():
    """summary.json is the typed summary's dump: loading it back gives the same report."""
    summary = cf_summary()
    again = Summary.model_validate_json(__import__("json").dumps(summary.to_dict()))
    assert again.to_dict() == summary.to_dict()
    assert render_report(again, None, [], {}, None) == render_report(summary, None, [], {}, None)


def test_hostile_strings_in_new_sections_are_escaped():
    summary = cf_summary(update={HOSTILE_CLASS: with_effect(with_intervals(class_stats(5, 0.5, 0.1)), 0.3)})
    summary.classes = {HOSTILE_CLASS: summary.classes[HOSTILE_CLASS]}
    summary.gate.failures = [f for f in summary.gate.failures if f.class_ == HOSTILE_CLASS]
    assert [f.rule for f in summary.gate.failures] == ["max_text_lift", "max_text_effect"]
    summary.region_sources["background"].source = HOSTILE_PATH
    summary.sanity.model_sensitive, summary.sanity.verdict = None, HOSTILE_CLASS
    summary.sanity.randomized_layers = [HOSTILE_CLASS]
    summary.counterfactual.method = HOSTILE_CLASS
    item = make_cf_gallery(1)[0]
    item.edits["text_removed"]["pred"] = HOSTILE_PATH
    html = render_report(summary, None, [item], {}, None)
    assert "<script>window" not in html and '<img id="injected"' not in html
    assert [t for t, _ in parse(html).tags].count("script") == 1
    assert HOSTILE_CLASS in visible_text(html) and HOSTILE_PATH in visible_text(html)
