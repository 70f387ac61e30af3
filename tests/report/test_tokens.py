"""The "Text the model uses" section: token table, crops, share bars, effect plots, example galleries."""

from __future__ import annotations

import base64
import re

import cv2
import numpy as np
import pydantic
import pytest

from auditors.audit.summary import Summary
from auditors.report import render_report
from auditors.report.tokens import build_tokens
from tests.browser import console_errors
from tests.report.builders import (
    HOSTILE_CLASS, HOSTILE_PATH, HOSTILE_TOKEN, MARK_SENTENCE, NEW_SENTENCE, make_errors, summary_v01,
    token_entries, token_entry, token_summary,
)
from tests.report.html_text import parse, visible_text
from tests.report.galleries import badge, make_token_crops, make_token_examples
from tests.report.test_counterfactual import cf_html, cf_text


def test_token_table_rows_in_rank_order():
    section = build_tokens(token_summary(), crops=make_token_crops())
    rows = section["rows"]
    assert [r["key"] for r in rows] == ["text:new", "visual:9f3a7c21e0b4d855", "text:studio",
                                        "text:imgsrcxonerroralert1", "text:2026", "text:x"]
    assert [r["rank"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert [r["status"] for r in rows] == ["flagged", "flagged", "ok", "ok", "ok", "ok"]
    new, mark, studio, hostile, year, empty = rows
    assert (new["label"], new["kind"], new["why"]) == ("NEW", "text", "model dependence; data association + attention")
    assert [r["findings"] for r in rows] == ["both", "both", "none", "none", "none", "none"]
    assert [(c["key"], c["fails"]) for c in new["finding_chips"]] == [("dependent", True), ("associated", True)]
    assert (mark["label"], mark["kind"], mark["hash"]) == ("unreadable mark", "visual", "9f3a7c21")
    assert hostile["label"] == HOSTILE_TOKEN
    # The association column shows the BH q-value across the 5 tested tokens (3.2e-12 x 5 / 1).
    assert new["p"]["text"] == "1.6\u00d710\u207b\u00b9\u00b9" and "assoc" in new["p"]["cls"] and new["p"]["sub"] == "associated"
    assert studio["p"]["text"] == "0.50" and "assoc" not in studio["p"]["cls"] and studio["p"]["sub"] == ""
    assert (new["effect"]["finding"], new["effect"]["dependent"]) == ("q 4.0\u00d710\u207b\u2075", True)
    assert (studio["effect"]["finding"], studio["effect"]["dependent"]) == ("q 0.27", False)
    assert (new["lift"]["text"], new["lift"]["sub"]) == ("4.10", "16.4% on 4.0%") and "lift-bad" in new["lift"]["cls"]
    assert (new["effect"]["text"], new["effect"]["sub"]) == ("0.310", "[0.220, 0.400]")
    assert (new["flips"]["text"], new["flips"]["sub"]) == ("42%", "placebo 3%")
    assert (new["n_images"]["text"], new["n_images"]["sub"]) == ("38", "45 instances")
    assert new["risk"]["text"] == "183.4" and studio["risk"]["text"] == "9.87"
    # Share bar: top class first and coloured, tick at horror's share of all images (60 of 180).
    bar = new["bar"]
    assert bar["segs"][0]["cls"] == "top-bad" and bar["segs"][0]["w"] == pytest.approx(0.95 * bar["w"], abs=0.1)
    assert bar["tick"] == pytest.approx(bar["w"] / 3, abs=0.1) and bar["base"] == "33%"
    assert studio["bar"]["segs"][0]["cls"] == "top"
    # Crops: up to four, broken ones skipped, never taller than they are encoded for.
    assert [len(r["crops"]) for r in rows] == [4, 3, 2, 1, 1, 0]
    decoded = cv2.imdecode(np.frombuffer(base64.b64decode(year["crops"][0]["src"].split(",", 1)[1]), np.uint8),
                           cv2.IMREAD_COLOR)
    assert decoded.shape[0] == 56  # the 120 px tall crop was shrunk
    # Untested tokens and missing numbers.
    assert not year["effect"]["tested"] and year["plot"] is None
    assert empty["p"]["text"] == empty["lift"]["text"] == empty["share"]["text"] == "\u2014" and empty["bar"] is None
    plots = {r["key"]: r["plot"] for r in rows if r["plot"]}
    assert plots["text:new"]["xlo"] > plots["text:new"]["xt"] > plots["text:new"]["x0"]
    assert all(0 <= pl[k] <= pl["w"] for pl in plots.values() for k in ("x0", "xt", "xlo", "xhi", "xv"))
    assert section["has_effects"] and section["n_tested"] == 4 and section["n_flagged"] == 2


def test_token_section_content_and_gallery():
    summary = token_summary()
    examples = {"text:new": make_token_examples("text:new", 2)}
    html = render_report(summary, None, [], {}, None, token_examples=examples, token_crops=make_token_crops())
    text = " ".join(visible_text(html).split())
    assert "Text the model uses" in text and 'href="#tokens"' in html
    assert "treat all the text in an image as one region" in text and "token" in text
    assert "1.6\u00d710\u207b\u00b9\u00b9" in text and "not tested" in text and "Data association" in text
    assert "Model dependence" in text and "tokens.fail_on_association is off" in text
    # The glossary states the gate's token rule (q-values after BH; dependence fails on its own).
    assert "q \u2264 0.01 after Benjamini-Hochberg across tokens" in text and "more than 2.0\u00d7 its area" in text
    assert "Model dependence fails on its own: removing the token lowers confidence by more than 0.05" in text
    assert "Removal was tested for 4 tokens, taken in turn from three rankings" in text and "(up to 64 images each)" in text
    # Two flagged tokens: NEW with two examples, the mark without any.
    assert html.count('class="token-gallery"') == 2 and html.count('class="token-card"') == 2
    assert 'id="token-examples-1"' in html and 'href="#token-examples-1"' in html
    assert NEW_SENTENCE in text and "No example images were kept for this token" in text
    assert ("Prediction before \u2192 after horror 93% \u00b7 Token removed \u2192 comedy (horror 31%) "
            "\u00b7 Placebo \u2192 horror 90% \u00b7 effect 0.300") in text
    for caption in ("Original", "Grad-CAM", "Token outlined", "Token removed", "Placebo (outlined)"):
        assert text.count(caption) >= 2, caption
    # 11 table crops, 4 + 3 beside the flagged tokens' headings, 5 panels per example.
    assert html.count('class="crop"') == 11 + 7 and html.count("<img") == 11 + 7 + 2 * 5
    for term in ("Token", "Class association", "Token lift", "Token effect", "Risk score", "Flagged token"):
        assert f"<dt>{term}</dt>" in html
    assert "visual:&lt;hash&gt;" in html


def test_token_section_states_and_older_summaries():
    summary = summary_v01()  # predates tokens: no section, even if examples are passed
    html = render_report(summary, None, [], {}, None, token_examples={"text:new": make_token_examples(n=1)},
                         token_crops={"text:new": [badge("NEW")]})
    assert 'id="tokens"' not in html and "<img" not in html
    none_found = token_summary(token_table=[])
    assert "No text recurs on 3 or more images" in cf_text(none_found)
    off = token_summary(token_table=[], tokens={"enabled": False})
    assert re.search(r"Not run for this audit \( ?tokens\.enabled ?or text detection is off\)", cf_text(off))
    untested = token_entries()
    for t in untested:
        t.update(effect=None, effect_ci=None, flip_rate_removed=None, flip_rate_placebo=None)
    no_cf = token_summary(token_table=untested, counterfactual={"enabled": False})
    text = cf_text(no_cf)
    assert "token effects were not measured" in text and "Token effect" not in text
    assert "vs threshold" not in text and "Flips" not in text and "tokens are tested by removal" not in cf_html(no_cf)
    assert build_tokens(no_cf)["axis"] is None


def test_malformed_token_entries_are_rejected_with_the_field_named():
    """summary.json is typed: an entry that is not a token, or a p-value that is not a number, is an
    error naming the entry and field, not something the report has to guess around."""
    raw = token_summary().to_dict()
    for bad, where in ((["junk"], "tokens.0"), ([{"no": "token"}], "tokens.0.token"),
                       ([{"token": "text:a", "p_value": "?"}], "tokens.0.p_value")):
        with pytest.raises(pydantic.ValidationError, match=re.escape(where)):
            Summary.model_validate({**raw, "tokens": bad})


def test_token_section_survives_odd_values():
    nan = float("nan")
    odd = [token_entry("text:a", 3, "horror", 0.9, 0.001, 2.5, flagged=True),
           token_entry("visual:", 3, "drama", 0.5, 0.5, 1.0, 0.2, [0.3, 0.1])]
    odd[0].update(n_images=None, class_shares={"x": nan, "y": 0.0}, effect=nan, p_value=None, lift=None,
                  risk=float("inf"))
    odd[1].update(kind="weird", example_text="3", class_shares={}, top_class=None)
    summary = token_summary(token_table=odd)
    bad_item = make_token_examples(n=1)[0]
    bad_item.image, bad_item.pred, bad_item.metrics, bad_item.edits = None, None, None, {"token_removed": None}
    examples = {"text:a": [bad_item, "junk"], "visual:": make_token_examples(n=1)[0]}
    crops = {"text:a": [np.zeros((0, 0, 3), np.uint8), np.full((5, 9), 0.5, np.float32), "junk"],
             "visual:": np.zeros((2, 6, 6, 3), np.uint8)}
    text = cf_text(summary)
    html = render_report(summary, None, [], {}, make_errors(), token_examples=examples, token_crops=crops)
    visible = visible_text(html)
    assert not re.search(r"\bnan\b|\bNone\b|\binf\b", visible, re.I)
    assert "Image not available" in visible and text
    rows = build_tokens(summary, examples, crops)["rows"]
    assert [r["key"] for r in rows] == ["text:a", "visual:"]
    assert [len(r["crops"]) for r in rows] == [1, 2]
    assert rows[1]["effect"]["sub"] == "[0.100, 0.300]" and (rows[1]["label"], rows[1]["hash"]) == ("unreadable mark", "")


def test_hostile_token_strings_are_escaped():
    table = token_entries()
    table[0].update(token="text:" + HOSTILE_TOKEN, example_text=HOSTILE_TOKEN, top_class=HOSTILE_CLASS,
                    class_shares={HOSTILE_CLASS: 0.9, HOSTILE_PATH: 0.1})
    summary = token_summary(token_table=table)
    assert summary.flagged_tokens[0] == "text:" + HOSTILE_TOKEN
    assert (summary.gate.failures[2].token, summary.gate.failures[2].class_) == ("text:" + HOSTILE_TOKEN, HOSTILE_CLASS)
    item = make_token_examples(n=1)[0]
    item.path, item.edits["token_removed"]["pred"] = HOSTILE_PATH, HOSTILE_CLASS
    html = render_report(summary, None, [], {}, None, token_examples={"text:" + HOSTILE_TOKEN: [item]},
                         token_crops={"text:" + HOSTILE_TOKEN: [badge("X")]})
    doc = parse(html)
    assert "<script>window" not in html and '<img id="injected"' not in html and "<img src=x" not in html
    assert [t for t, _ in doc.tags].count("script") == 1
    assert all(not k.startswith("on") for _, attrs in doc.tags for k in attrs)
    assert all((a.get("src") or "").startswith("data:image/png;base64,") for tag, a in doc.tags if tag == "img")
    text = visible_text(html)
    assert HOSTILE_TOKEN in text and HOSTILE_CLASS in text and HOSTILE_PATH in text
    assert (f"The model depends on token '{HOSTILE_TOKEN}' (on 38 images)" in " ".join(text.split())
            and f"over-represented in class '{HOSTILE_CLASS}' (95% of its images" in " ".join(text.split()))


# --------------------------------------------------------------------------- browser


def token_keys(driver) -> list[str]:
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('#token-table tbody tr')).map(r => r.dataset.token);")


def test_token_table_and_crops_in_browser(token_page):
    assert token_page.execute_script("return window.__pwned === undefined;")
    section = token_page.find_element("id", "tokens")
    assert section.is_displayed() and section.find_element("tag name", "h2").text == "Text the model uses"
    assert token_keys(token_page) == ["text:new", "visual:9f3a7c21e0b4d855", "text:studio",
                                      "text:imgsrcxonerroralert1", "text:2026", "text:x"]
    names = [e.text for e in token_page.find_elements("css selector", "#token-table tbody .token-name .tok")]
    assert names == ["NEW", "unreadable mark", "Studio", HOSTILE_TOKEN, "2026", "x"]
    crops = token_page.execute_script("""
        return Array.from(document.querySelectorAll('#token-table img.crop')).map(i =>
          [i.complete, i.naturalWidth, i.getBoundingClientRect().height, i.getBoundingClientRect().width]);""")
    assert len(crops) == 11 and all(ok and w > 0 and 20 <= h <= 30 and shown > 4 for ok, w, h, shown in crops)
    # The table fits the page: no horizontal scrolling at 1280 px.
    assert token_page.execute_script(
        "const t = document.getElementById('token-table'); return t.scrollWidth <= t.parentElement.clientWidth;")
    bars = token_page.find_elements("css selector", "#token-table svg.share-bar")
    assert len(bars) == 5 and all(b.size["width"] > 60 for b in bars)
    findings = token_page.find_element("id", "findings").text
    assert NEW_SENTENCE in findings and MARK_SENTENCE in findings
    # Sorting: p-value ascending puts the strongest class marker first; risk descending restores the ranking.
    p = token_page.find_element("css selector", "#token-table th[data-col='5']")
    p.click()
    assert token_keys(token_page)[:2] == ["text:new", "visual:9f3a7c21e0b4d855"]
    assert token_keys(token_page)[-1] == "text:x"  # missing p-value sorts last
    risk = token_page.find_element("css selector", "#token-table th[data-col='10']")
    risk.click(), risk.click()
    assert token_keys(token_page)[:3] == ["text:new", "visual:9f3a7c21e0b4d855", "text:studio"]
    assert console_errors(token_page) == []


def test_flagged_token_gallery_in_browser(token_page):
    galleries = token_page.find_elements("css selector", "#tokens .token-gallery")
    assert [g.get_attribute("id") for g in galleries] == ["token-examples-1", "token-examples-2"]
    panels = token_page.execute_script("""
        return Array.from(document.querySelectorAll('#tokens .token-card')).map(card =>
          Array.from(card.querySelectorAll('.panels img')).map(i => [i.complete, i.naturalWidth,
            i.getBoundingClientRect().width]));""")
    assert [len(c) for c in panels] == [5, 5, 5, 5, 5]
    assert all(ok and w == 224 and shown > 150 for c in panels for ok, w, shown in c)
    first = galleries[0]
    assert NEW_SENTENCE in first.text
    captions = [e.text for e in first.find_elements("css selector", ".token-card")[0].find_elements(
        "css selector", ".panel-caption")]
    assert captions == ["Original", "Grad-CAM", "Token outlined", "Token removed\n\u2192 comedy (horror 31%)",
                        "Placebo (outlined)\n\u2192 horror 90%"]
    change = first.find_element("css selector", ".token-card .change").text
    assert "PREDICTION BEFORE \u2192 AFTER" in change.upper() and "horror 93%" in change
    assert "Token removed \u2192 comedy (horror 31%)" in change
    # The status cell links to the gallery.
    token_page.find_element("css selector", "#token-table a.see").click()
    assert token_page.execute_script("return location.hash;") == "#token-examples-1"
    assert console_errors(token_page) == []
