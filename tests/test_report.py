"""The HTML bias report: content, escaping, self-containment, and how it behaves in Chromium.

Everything is synthetic (no Prefect, EasyOCR or model). The browser tests use the system
Chromium through tests/browser.py and fail, not skip, when it is missing.
"""

from __future__ import annotations

import base64
import html as html_lib
import math
import re
from html.parser import HTMLParser
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from auditors.gallery import GalleryItem
from auditors.report import MAX_ERROR_ROWS, build_verdict, png_data_uri, render_report, write_report

try:  # tests/ is a rootdir-relative package only if someone adds tests/__init__.py
    from tests.browser import chromium_driver, console_errors, full_page_png, open_file
except ImportError:  # pytest's default rootdir-less import: tests/ itself is on sys.path
    from browser import chromium_driver, console_errors, full_page_png, open_file

HOSTILE_CLASS = '<script>window.__pwned = 1</script>'
HOSTILE_PATH = 'posters/"><img id="injected" src=x onerror="window.__pwned=2">.jpg'


# --------------------------------------------------------------------------- synthetic inputs


def class_stats(n: int, text_mass: float, text_area: float, border_mass: float = 0.1, **extra) -> dict:
    """Per-class summary entry in the shape summary.json uses."""
    stats = {
        "n": n,
        "text_mass": text_mass, "text_area": text_area, "text_lift": text_mass / text_area, "text_hit_rate": 0.4,
        "border_mass": border_mass, "border_area": 0.19, "border_lift": border_mass / 0.19, "border_hit_rate": 0.05,
        "flip_rate_text_removed": None, "flip_rate_placebo": None,
        "flagged": False, "flag_reasons": [],
    }
    stats.update(extra)
    return stats


def make_summary(classes: dict | None = None, passed: bool | None = None) -> dict:
    """A realistic summary: 'horror' fails the text-lift gate, 'comedy' is close, 'drama' is fine."""
    if classes is None:
        classes = {
            "comedy": class_stats(60, 0.21, 0.12),
            "drama": class_stats(58, 0.08, 0.10),
            "horror": class_stats(60, 0.34, 0.092, flagged=True, flag_reasons=["text_lift 3.70 > 2.0"]),
            "western": class_stats(2, 0.02, 0.05),
        }
    flagged = [c for c, s in classes.items() if s.get("flagged")]
    failures = [
        {"class": c, "rule": "max_text_lift", "value": s["text_lift"], "threshold": 2.0}
        for c, s in classes.items() if s.get("flagged")
    ]
    return {
        "name": "demo-shortcut",
        "run_id": "20261122T021000Z-1a2b",
        "created_at": "2026-11-22T02:10:00+00:00",
        "camaudit_version": "0.1.0",
        "config": {
            "name": "demo-shortcut",
            "model": {"arch": "resnet18", "checkpoint": "/models/posters.pt", "input_size": [224, 224],
                      "resize": "stretch", "target_layer": None},
            "cam": {"method": "gradcam", "target": "predicted"},
            "gate": {"max_text_lift": 2.0, "min_images_per_class": 5},
        },
        "n_images": sum(s.get("n") or 0 for s in classes.values()),
        "n_failed": 2,
        "n_degenerate": 1,
        "group_by": "label",
        "regions": ["text", "border"],
        "cam": {"method": "gradcam", "target": "predicted", "target_layer": "layer4", "device": "cpu", "amp": None},
        "classes": classes,
        "overall": {k: v for k, v in class_stats(180, 0.21, 0.105).items() if k not in ("flagged", "flag_reasons")},
        "flagged_classes": flagged,
        "gate": {"passed": (not failures) if passed is None else passed, "failures": failures, "max_text_lift": 2.0},
        "validation": {"success": True, "n_expectations": 3, "n_failed": 0},
        "timing": {"total_s": 12.3, "images_per_s": 15.1},
    }


def make_images(summary: dict) -> pd.DataFrame:
    rows = []
    for cls, stats in summary["classes"].items():
        for i in range(int(stats.get("n") or 0)):
            rows.append({
                "path": f"{cls}/{i:03d}.jpg", "label": cls, "pred": cls, "confidence": 0.9, "target": cls,
                "cam_status": "ok" if i else "zero", "width": 300, "height": 450,
                "text_mass": 0.2, "text_area": 0.1, "text_lift": 2.0, "text_hit": True,
                "border_mass": 0.1, "border_area": 0.19, "border_lift": 0.5, "border_hit": False,
            })
    return pd.DataFrame(rows)


def make_poster(seed: int, size: int = 224) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    """A poster-like image with a title, its text box and a heatmap that sits on the title."""
    rng = np.random.default_rng(seed)
    top, bottom = rng.integers(40, 220, 3), rng.integers(0, 120, 3)
    t = np.linspace(0, 1, size)[:, None, None]
    img = ((1 - t) * top + t * bottom).repeat(size, axis=1).astype(np.uint8)
    cx, cy = int(rng.integers(70, 150)), int(rng.integers(110, 170))
    cv2.circle(img, (cx, cy), 38, tuple(int(v) for v in rng.integers(120, 255, 3)), -1, cv2.LINE_AA)
    y0 = int(rng.integers(24, 60))
    cv2.putText(img, "TITLE", (30, y0 + 28), cv2.FONT_HERSHEY_DUPLEX, 1.4, (255, 255, 255), 2, cv2.LINE_AA)
    box = np.array([[24, y0], [160, y0], [160, y0 + 36], [24, y0 + 36]], dtype=np.float32)
    yy, xx = np.mgrid[0:size, 0:size]
    cam = np.exp(-(((xx - 92) / 55.0) ** 2 + ((yy - y0 - 18) / 22.0) ** 2))
    cam += 0.35 * np.exp(-(((xx - cx) / 30.0) ** 2 + ((yy - cy) / 30.0) ** 2))
    cam = (cam / cam.max()).astype(np.float32)
    return img, [box], cam


def make_gallery(n: int = 4, path: str | None = None) -> list[GalleryItem]:
    items = []
    for i in range(n):
        img, boxes, cam = make_poster(i)
        mask = np.zeros(img.shape[:2], bool)
        x0, y0 = boxes[0].min(axis=0).astype(int)
        x1, y1 = boxes[0].max(axis=0).astype(int)
        mask[y0:y1, x0:x1] = True
        items.append(GalleryItem(
            path=path or f"horror/poster_{i:03d}.jpg", label="horror", pred="horror" if i % 2 == 0 else "comedy",
            confidence=0.97 - 0.1 * i, score=0.6 - 0.05 * i,
            metrics={"text_mass": 0.6 - 0.05 * i, "text_area": 0.12, "text_lift": (0.6 - 0.05 * i) / 0.12,
                     "border_mass": 0.05, "border_lift": 0.3},
            image=img, cam=cam, regions={"text": mask}, text_polygons=boxes,
        ))
    return items


def ge_result(success: bool, type_: str, column: str | None, unexpected: int | None = None, **kwargs) -> dict:
    """One entry of ExpectationSuiteValidationResult.to_json_dict()['results']."""
    kw = dict(kwargs, batch_id="images-batch")
    if column:
        kw["column"] = column
    result = {} if unexpected is None else {
        "element_count": 180, "unexpected_count": unexpected, "unexpected_percent": 100 * unexpected / 180,
    }
    return {
        "success": success,
        "expectation_config": {"type": type_, "kwargs": kw, "meta": {}, "id": "x"},
        "result": result,
        "exception_info": {"raised_exception": False, "exception_message": None, "exception_traceback": None},
    }


def make_validation(success: bool = True) -> dict:
    results = [
        ge_result(True, "expect_column_values_to_not_be_null", "path", 0),
        ge_result(success, "expect_column_values_to_be_between", "text_mass", 0 if success else 3,
                  min_value=0.0, max_value=1.0),
        {"success": True, "expectation_config": {"type": "expect_table_row_count_to_be_between",
                                                 "kwargs": {"min_value": 1}}, "result": {"observed_value": 180}},
    ]
    return {"success": success, "suites": {"images": {
        "success": success, "results": results,
        "statistics": {"evaluated_expectations": 3, "successful_expectations": 3 if success else 2,
                       "unsuccessful_expectations": 0 if success else 1, "success_percent": 100.0},
    }}}


def make_errors(n: int = 2) -> pd.DataFrame:
    rows = [{"path": f"broken/{i:04d}.jpg", "stage": "decode" if i % 3 else "ocr",
             "reason": "cannot identify image file"} for i in range(n)]
    return pd.DataFrame(rows, columns=["path", "stage", "reason"])


def realistic_report(tmp_path: Path) -> Path:
    summary = make_summary()
    return write_report(tmp_path, summary, make_images(summary), make_gallery(), make_validation(), make_errors())


def empty_report(tmp_path: Path) -> Path:
    summary = make_summary(classes={})
    summary.update(n_images=0, n_failed=0, n_degenerate=0, overall=None, flagged_classes=[],
                   gate={"passed": True, "failures": [], "max_text_lift": 2.0})
    return write_report(tmp_path, summary, pd.DataFrame(), [], {}, pd.DataFrame(columns=["path", "stage", "reason"]))


# --------------------------------------------------------------------------- HTML helpers


class _Collector(HTMLParser):
    """Every start tag with its attributes, and the text of <script>/<style> blocks."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.raw_blocks: list[str] = []
        self._in_raw = False

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in_raw = tag in ("script", "style")

    def handle_endtag(self, tag):
        self._in_raw = False

    def handle_data(self, data):
        if self._in_raw:
            self.raw_blocks.append(data)


def parse(html: str) -> _Collector:
    c = _Collector()
    c.feed(html)
    return c


def visible_text(html: str) -> str:
    body = re.sub(r"<(script|style)\b.*?</\1>", " ", html, flags=re.S)
    return html_lib.unescape(re.sub(r"<[^>]+>", " ", body))


# --------------------------------------------------------------------------- browser tests


@pytest.fixture(scope="module")
def driver():
    with chromium_driver(width=1280, height=900) as d:
        yield d


@pytest.fixture(scope="module")
def report_path(tmp_path_factory) -> Path:
    return realistic_report(tmp_path_factory.mktemp("run"))


@pytest.fixture()
def page(driver, report_path):
    open_file(driver, report_path)
    driver.get_log("browser")  # reading the log clears it: later checks see only this test's actions
    return driver


def test_page_loads_without_console_errors(driver, report_path):
    open_file(driver, report_path)
    assert console_errors(driver) == []
    assert driver.title.startswith("FAIL")


def test_verdict_banner_in_browser(page):
    assert page.find_element("id", "verdict-status").text == "FAIL"
    findings = page.find_element("id", "findings").text
    assert "Class 'horror': 34% of the heatmap falls on text covering 9% of the image (lift 3.70 > 2.0)" in findings
    assert "max_text_lift" in findings


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
    assert [c.text for c in bad] == ["3.70"]
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


def test_gallery_images_loaded(page):
    sizes = page.execute_script(
        "return Array.from(document.querySelectorAll('.gallery img'))"
        ".map(i => [i.complete, i.naturalWidth, i.naturalHeight, i.getBoundingClientRect().width]);")
    assert len(sizes) == 4 * 3
    assert all(ok and w == 224 and h == 224 and shown > 50 for ok, w, h, shown in sizes)


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


def test_hostile_strings_do_not_inject_in_browser(driver, tmp_path):
    summary = make_summary(classes={HOSTILE_CLASS: class_stats(5, 0.5, 0.1, flagged=True, flag_reasons=[HOSTILE_CLASS])})
    summary["name"] = HOSTILE_CLASS
    gallery = make_gallery(1, path=HOSTILE_PATH)
    errors = pd.DataFrame([{"path": HOSTILE_PATH, "stage": "<b>decode</b>", "reason": HOSTILE_CLASS}])
    out = write_report(tmp_path, summary, make_images(summary), gallery, make_validation(), errors)
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


# --------------------------------------------------------------------------- static checks


def test_write_report_returns_path_and_leaves_no_temp(tmp_path):
    out = realistic_report(tmp_path / "run")
    assert out == tmp_path / "run" / "report.html"
    assert sorted(p.name for p in out.parent.iterdir()) == ["report.html"]


def test_hostile_strings_are_escaped(tmp_path):
    summary = make_summary(classes={HOSTILE_CLASS: class_stats(5, 0.5, 0.1, flagged=True, flag_reasons=[HOSTILE_CLASS])})
    summary["name"] = HOSTILE_CLASS
    errors = pd.DataFrame([{"path": HOSTILE_PATH, "stage": "decode", "reason": HOSTILE_CLASS}])
    html = render_report(summary, make_images(summary), make_gallery(1, path=HOSTILE_PATH), make_validation(), errors)
    assert "<script>window" not in html
    assert '<img id="injected"' not in html
    doc = parse(html)
    assert [t for t, _ in doc.tags].count("script") == 1
    assert all(a.get("id") != "injected" for _, a in doc.tags)
    assert all((a.get("src") or "").startswith("data:image/png;base64,") for t, a in doc.tags if t == "img")
    assert HOSTILE_CLASS in visible_text(html) and HOSTILE_PATH in visible_text(html)


def test_no_external_references(tmp_path):
    html = realistic_report(tmp_path).read_text(encoding="utf-8")
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


def test_nan_and_none_values_render_as_dash(tmp_path):
    nan = float("nan")
    classes = {
        "a": class_stats(3, 0.2, 0.1, text_lift=nan, text_hit_rate=None, border_mass=nan),
        "b": {"n": None, "flagged": None},  # a class with almost nothing in it
    }
    summary = make_summary(classes=classes)
    summary.update(overall={"n": 3, "text_mass": nan}, timing=None, cam=None, created_at=None,
                   gate={"passed": None}, n_degenerate=None, config={"model": "not-a-dict"})
    images = make_images(summary).assign(confidence=nan)
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


def test_verdicts():
    failing = build_verdict(make_summary())
    assert (failing.status, failing.title) == ("fail", "FAIL")
    assert failing.findings[0]["sentence"] == (
        "Class 'horror': 34% of the heatmap falls on text covering 9% of the image (lift 3.70 > 2.0)."
    )
    passing = build_verdict(make_summary(classes={"drama": class_stats(10, 0.08, 0.1)}))
    assert (passing.status, passing.title, passing.findings) == ("pass", "PASS", [])
    flagged_only = make_summary()
    flagged_only["gate"] = {"passed": True, "failures": []}
    v = build_verdict(flagged_only)
    assert v.title == "FLAGGED" and v.findings[0]["sentence"] == "Class 'horror': text_lift 3.70 > 2.0."
    bad_validation = make_summary()
    bad_validation["validation"] = {"success": False, "n_expectations": 12, "n_failed": 2}
    assert "2 of 12 expectations" in build_verdict(bad_validation).notes[0]
    other_rule = make_summary()
    other_rule["gate"]["failures"] = [{"class": None, "rule": "max_failed_fraction", "value": 0.3, "threshold": 0.1}]
    assert build_verdict(other_rule).findings[0]["sentence"] == "Whole run: max failed fraction is 0.30 (limit 0.1)."


def test_errors_table_is_capped(tmp_path):
    n = MAX_ERROR_ROWS + 57
    summary = make_summary()
    html = render_report(summary, make_images(summary), [], make_validation(), make_errors(n))
    assert html.count('<td class="path">') == MAX_ERROR_ROWS
    assert f"57 more in" in visible_text(html) and 'href="errors.csv"' in html


def test_validation_table(tmp_path):
    summary = make_summary()
    html = render_report(summary, make_images(summary), [], make_validation(success=False), make_errors())
    text = " ".join(visible_text(html).split())
    assert "expect_column_values_to_be_between text_mass min_value=0.0, max_value=1.0 fail 3 1.67%" in text
    assert "2 of 3 expectations met" in text
    assert "expect_table_row_count_to_be_between" in text and "180" in text


def test_png_is_rgb_in_and_out():
    red = np.zeros((4, 5, 3), np.uint8)
    red[..., 0] = 255
    uri = png_data_uri(red)
    decoded = cv2.imdecode(np.frombuffer(base64.b64decode(uri.split(",", 1)[1]), np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape == (4, 5, 3) and decoded[0, 0].tolist() == [0, 0, 255]  # BGR red


def test_odd_gallery_images_do_not_crash():
    grey = make_gallery(1)[0]
    grey.image = grey.image[..., 0]
    grey.cam = np.full((7, 7), np.nan, np.float32)  # wrong size and not finite
    floats = make_gallery(1)[0]
    floats.image = floats.image.astype(np.float32) / 255.0
    floats.text_polygons = [np.array([[1.0, 2.0]]), np.array([[math.inf, 0], [1, 1], [2, 2]])]
    missing = make_gallery(1)[0]
    missing.image = None
    big = make_gallery(1)[0]
    big.image = cv2.resize(big.image, (1000, 800))
    big.cam = cv2.resize(big.cam, (1000, 800))
    html = render_report(make_summary(), None, [grey, floats, missing, big], {}, None)
    assert html.count("<img") == 9 and "Image not available" in html
    assert "Text boxes (1)" in html


def test_run_without_regions_or_gate_config(tmp_path):
    summary = make_summary()
    summary.update(regions=[], gate=None, config={})
    html = render_report(summary, make_images(summary), make_gallery(1), make_validation(), make_errors())
    assert 'class="group-row"' not in html and 'data-key="text_lift"' not in html
    assert "No lift limit is configured" in visible_text(html)
    assert build_verdict(summary).title == "FLAGGED"  # horror is flagged, but no gate result exists
