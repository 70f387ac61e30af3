"""The counterfactual section: removal vs placebo per class, interval plots, accuracy on edits."""

from __future__ import annotations

import re

from auditors.audit.summary import Summary
from auditors.report import render_report
from auditors.report.counterfactual import build_counterfactual
from auditors.report.sanity import build_sanity
from tests.browser import console_errors
from tests.report.builders import cf_summary, images_for, make_errors, validation_result
from tests.report.html_text import visible_text
from tests.report.galleries import make_cf_gallery


def cf_html(summary: Summary, gallery: list | None = None) -> str:
    return render_report(summary, images_for(summary), gallery or [], validation_result(), make_errors())


def cf_text(summary: Summary, gallery: list | None = None) -> str:
    text = visible_text(cf_html(summary, gallery))
    assert not re.search(r"\bnan\b|\bNone\b|\binf\b", text, re.I), "raw missing value leaked"
    return " ".join(text.split())


def test_cf_report_loads_cleanly_and_offline(cf_page):
    assert console_errors(cf_page) == []
    names = cf_page.execute_script("return performance.getEntriesByType('resource').map(e => e.name);")
    assert all(n.startswith(("data:", "file:")) for n in names), names
    findings = cf_page.find_element("id", "findings").text
    assert ("Class 'horror': removing the text lowers confidence by 0.31 more than removing an equal-area "
            "placebo region (95% interval 0.22\u20130.40; threshold 0.05).") in findings
    assert "lift 3.41, 95% interval 2.90\u20133.95; limit 2.0" in findings


def test_counterfactual_section_and_interval_plot_render(cf_page):
    section = cf_page.find_element("id", "counterfactual")
    assert section.is_displayed() and "placebo" in section.text.lower()
    rows = cf_page.find_elements("css selector", "#cf-table-text tbody tr")
    assert [r.find_element("css selector", ".cname").text for r in rows] == ["comedy", "drama", "horror", "western"]
    assert "above limit" in rows[2].text and "0.310" in rows[2].text and "[0.220, 0.400]" in rows[2].text
    assert "below limit" in rows[1].text and "inconclusive" in rows[0].text
    # Every class and the overall row has a drawn interval plot, laid out at its full size.
    boxes = cf_page.execute_script("""
        return Array.from(document.querySelectorAll('#cf-table-text svg.effect-plot')).map(svg => {
          const r = svg.getBoundingClientRect();
          const x = sel => { const e = svg.querySelector(sel); return e ? e.getBoundingClientRect() : null; };
          const est = x('.est'), ci = x('.ci'), lim = x('.limit'), zero = x('.zero');
          return {w: r.width, h: r.height, est: est && est.left + est.width / 2, ciw: ci && ci.width,
                  lim: lim && lim.left, zero: zero && zero.left};
        });""")
    assert len(boxes) == 5
    assert all(b["w"] >= 200 and b["h"] >= 20 and b["ciw"] > 0 and b["lim"] and b["zero"] for b in boxes)
    comedy, drama, horror = boxes[0], boxes[1], boxes[2]
    assert horror["est"] > horror["lim"] > horror["zero"]  # effect 0.31, beyond the 0.05 limit
    assert drama["est"] < drama["lim"] and comedy["est"] < comedy["lim"]
    axis = cf_page.find_element("css selector", "#cf-table-text svg.axis").text
    assert "0" in axis and "0.05" in axis
    # Sorting by effect puts horror first.
    eff = cf_page.find_element("css selector", "#cf-table-text th[data-col='6']")
    eff.click(), eff.click()
    assert cf_page.find_element("css selector", "#cf-table-text tbody tr .cname").text == "horror"
    assert console_errors(cf_page) == []


def test_counterfactual_section_content():
    summary = cf_summary()
    text = cf_text(summary)
    assert "Counterfactual test: does the model need the text?" in text
    assert "placebo" in text and "equal-area patch" in text and "Telea inpainting, margin 2 px" in text
    assert "horror 60 of 60 45.0% 2.0% 0.320 0.010 0.310 [0.220, 0.400]" in text
    assert "drama 58 of 58 3.0% 2.0% 0.006 0.010 \u22120.004 [\u22120.016, 0.008]" in text
    assert "Accuracy on edited copies" in text and "horror 90.0% 67.5% 89.0% +22.5 pts" in text
    assert "Flip rate" in text and "Effect" in text and "Expected hit rate" in text
    assert "95% intervals by percentile bootstrap over images (1,000 resamples, seed 0)" in text
    # The flip rates moved out of the attention table into the counterfactual section.
    html = render_report(summary, None, [], {}, None)
    assert 'data-key="flip_rate_text_removed"' not in html and 'id="cf-table-text"' in html
    # Plot geometry: every mark inside the plot, zero left of the limit, horror's interval beyond it.
    block = build_counterfactual(summary)["blocks"][0]
    plots = {r["name"]: r["plot"] for r in block["rows"]}
    for pl in plots.values():
        assert all(0 <= pl[k] <= pl["w"] for k in ("x0", "xt", "xlo", "xhi", "xv"))
    assert plots["horror"]["xlo"] > plots["horror"]["xt"] > plots["horror"]["x0"]
    assert plots["drama"]["xhi"] < plots["drama"]["xt"] and plots["horror"]["level"] == "bad"
    labels = [t["label"] for t in block["axis"]["ticks"]]
    assert "0" in labels and block["axis"]["t_label"] == "0.05"
    spans = sorted((t["x"], t["label"]) for t in block["axis"]["ticks"])
    assert all(b[0] - a[0] >= 6 * (len(a[1]) + len(b[1])) / 2 for a, b in zip(spans, spans[1:]))


def test_counterfactual_missing_values_and_disabled():
    summary = cf_summary(model_sensitive=None, update={"comedy": {"text_effect_ci": None}})
    summary.classes["drama"] = type(summary.classes["drama"]).model_validate(
        {"n": 0, "flagged": False, "accuracy": None, "text_effect": None, "text_effect_ci": None,
         "n_text_edited": 0, "text_lift_ci": [None, None]})  # a class no image was audited in
    summary.overall.accuracy = None
    summary.sanity.rank_correlation_mean = summary.sanity.rank_correlation_median = None
    summary.sanity.randomized_layers = None
    text = cf_text(summary, make_cf_gallery(1))
    assert "not determined" in text and "Do not rely on these heatmaps" not in text
    off = cf_summary(counterfactual={"enabled": False})
    text = cf_text(off)
    assert "Counterfactual test" in text and "Not run for this audit" in text
    assert "Accuracy on edited copies" not in text
    off.sanity = None
    assert "The top layers are re-initialised" in cf_text(off)
    assert build_sanity(off)["ran"] is False
