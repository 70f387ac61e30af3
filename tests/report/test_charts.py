"""The inline SVG chart each mark sits where its value says, the lift = 1 line is where lift is 1,
the SVG is well-formed and escaped, dot counts stay bounded, and the section renders in Chromium."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np
import pandas as pd
import pytest

from auditors.report.charts import (
    CHART_W, LEFT, MAX_DOTS_PER_CLASS, RIGHT, build_charts, flip_chart, lift_chart, scatter_chart,
)
from tests.browser import console_errors
from tests.report.builders import HOSTILE_CLASS, cf_summary, realistic_summary

NS: dict[str, str] = {}  # inline SVG in HTML needs no xmlns (and the report has no URLs at all)


def _tree(chart: dict) -> ET.Element:
    return ET.fromstring(str(chart["svg"]))  # raises on malformed SVG or an unescaped class name


def _table(lifts: dict[str, list[float]], area: float = 0.1) -> pd.DataFrame:
    rows = [{"path": f"{c}/{i}.jpg", "label": c, "cam_status": "ok", "text_area": area, "text_mass": v * area,
             "text_lift": v} for c, vals in lifts.items() for i, v in enumerate(vals)]
    return pd.DataFrame(rows)


def test_lift_dots_box_and_reference_line_map_the_data():
    lifts = {"a": [0.5, 1.0, 1.5, 2.0, 2.5], "b": [3.0, 3.0, 4.0, 4.0, 4.0]}
    chart = lift_chart(_table(lifts), "text", "label", ["a", "b"])
    svg = _tree(chart)
    hi = chart["axis_max"]
    assert hi == pytest.approx(max(2.0, float(np.quantile(sum(lifts.values(), []), 0.98)) * 1.1))
    to_x = lambda v: LEFT + v / hi * (CHART_W - RIGHT - LEFT)  # noqa: E731
    ref = svg.find(".//line[@class='ref']", NS)
    assert float(ref.get("x1")) == pytest.approx(to_x(1.0), abs=0.06)
    assert ref.get("x1") == ref.get("x2")
    dots = svg.findall(".//circle[@class='dot']", NS)
    assert sorted(float(d.get("data-value")) for d in dots) == sorted(sum(lifts.values(), []))
    for d in dots:
        assert float(d.get("cx")) == pytest.approx(to_x(float(d.get("data-value"))), abs=0.06)
    boxes = {g.get("data-class"): g for g in svg.findall(".//g[@class='box']", NS)}
    assert float(boxes["a"].get("data-median")) == 1.5 and float(boxes["b"].get("data-median")) == 4.0
    med_a = boxes["a"].find("line[@class='median']", NS)
    assert float(med_a.get("x1")) == pytest.approx(to_x(1.5), abs=0.06)
    # Class 'a' straddles lift 1, class 'b' lies entirely to its right.
    b_dots = [float(d.get("cx")) for d in dots if float(d.get("data-value")) >= 3.0]
    assert min(b_dots) > float(ref.get("x1"))
    # Rows are in class order: a above b.
    assert float(boxes["a"].find("rect", NS).get("y")) < float(boxes["b"].find("rect", NS).get("y"))
    desc = svg.find("desc", NS).text
    assert "a: median 1.50" in desc and "b: median 4.00" in desc


def test_lift_outlier_is_clipped_to_the_edge_and_said_so():
    chart = lift_chart(_table({"a": [1.0] * 60 + [40.0]}), "text", "label", ["a"])
    assert chart["axis_max"] < 40 and chart["n_clipped"] == 1
    dots = _tree(chart).findall(".//circle[@class='dot']", NS)
    assert max(float(d.get("cx")) for d in dots) == pytest.approx(CHART_W - RIGHT)
    assert "1 images with lift above" in _tree(chart).find("desc", NS).text


def test_dot_count_is_bounded_and_keeps_the_extremes():
    rng = np.random.default_rng(0)
    vals = list(rng.gamma(2.0, 0.6, size=5000))
    chart = lift_chart(_table({"a": vals}), "text", "label", ["a"])
    dots = [float(d.get("data-value")) for d in _tree(chart).findall(".//circle[@class='dot']", NS)]
    assert len(dots) == MAX_DOTS_PER_CLASS
    assert min(dots) == pytest.approx(min(vals), rel=1e-5) and max(dots) == pytest.approx(max(vals), rel=1e-5)
    assert len(str(chart["svg"])) < 40_000


def test_scatter_puts_points_above_the_diagonal_exactly_when_mass_exceeds_area():
    table = pd.DataFrame({"path": ["p1", "p2", "p3"], "label": ["a", "a", "b"], "cam_status": "ok",
                          "text_area": [0.1, 0.3, 0.2], "text_mass": [0.4, 0.1, 0.2]})
    chart = scatter_chart(table, "text", "label", ["a", "b"])
    svg = _tree(chart)
    ref = svg.find(".//line[@class='ref']", NS)
    x1, y1, x2, y2 = (float(ref.get(k)) for k in ("x1", "y1", "x2", "y2"))
    assert chart["axis_max"] == pytest.approx(0.42)

    def side(cx: float, cy: float) -> float:  # > 0 above the line (SVG y grows downwards)
        return (x2 - x1) * (y1 - cy) - (y1 - y2) * (cx - x1)

    for d in svg.findall(".//circle[@class='dot']", NS):
        mass, area = float(d.get("data-mass")), float(d.get("data-area"))
        s = side(float(d.get("cx")), float(d.get("cy")))
        if mass > area:
            assert s > 0
        elif mass < area:
            assert s < 0
        else:
            assert abs(s) / np.hypot(x2 - x1, y2 - y1) < 0.5  # on the line, up to 0.1 px rounding
        assert float(d.get("cx")) == pytest.approx(LEFT + area / 0.42 * 300, abs=0.06)
    assert "1 of the 3 shown" in svg.find("desc", NS).text


def test_flip_bars_are_proportional_and_named():
    summary = cf_summary()
    chart = flip_chart(summary, "text")
    bars = _tree(chart).findall(".//rect[@data-value]", NS)
    assert {b.get("data-class") for b in bars} == {"comedy", "drama", "horror", "western"}
    for b in bars:
        assert float(b.get("width")) == pytest.approx(float(b.get("data-value")) * (CHART_W - RIGHT - LEFT), abs=0.11)
    horror = {b.get("class"): float(b.get("data-value")) for b in bars if b.get("data-class") == "horror"}
    assert horror == {"bar bar-removed": 0.45, "bar bar-placebo": 0.02}


def test_hostile_class_name_is_escaped_in_the_svg():
    table = _table({HOSTILE_CLASS: [1.0, 2.0, 3.0]})
    for chart in (lift_chart(table, "text", "label", [HOSTILE_CLASS]),
                  scatter_chart(table, "text", "label", [HOSTILE_CLASS])):
        text = str(chart["svg"])
        assert "<script>" not in text and "&lt;script&gt;" in text
        _tree(chart)


def test_no_charts_without_data():
    summary, _ = realistic_summary(classes={})
    assert build_charts(summary, None) is None
    assert build_charts(summary, pd.DataFrame(columns=["path", "label", "text_lift"])) is None


def test_chart_section_renders_in_chromium(page):
    assert console_errors(page) == []
    section = page.find_element("id", "charts")
    assert section.is_displayed()
    sizes = page.execute_script("""
        return Array.from(document.querySelectorAll('#charts svg.chart')).map(s => {
          const r = s.getBoundingClientRect();
          return {id: s.id, w: r.width, h: r.height, dots: s.querySelectorAll('circle.dot').length,
                  title: s.querySelector('title').textContent};
        });""")
    ids = [s["id"] for s in sizes]
    assert ids == ["chart-lift-text", "chart-lift-border", "chart-scatter-text", "chart-scatter-border"]
    assert all(s["w"] > 300 and s["h"] > 100 and s["dots"] > 0 for s in sizes)
    assert sizes[0]["title"] == "Text lift per image, by class"
    assert page.find_element("css selector", "nav.toc a[href='#charts']")


def test_flip_chart_renders_in_counterfactual_report(cf_page):
    assert console_errors(cf_page) == []
    bars = cf_page.execute_script("""
        return Array.from(document.querySelectorAll('#chart-flip-text rect.bar')).map(b => b.getBoundingClientRect().width);""")
    assert len(bars) == 8 and all(w >= 0 for w in bars) and max(bars) > 100
