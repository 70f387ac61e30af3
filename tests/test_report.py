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

from auditors.measure.gallery import GalleryItem
from auditors.report.render import (
    MAX_ERROR_ROWS,
    build_class_table,
    build_counterfactual,
    build_sanity,
    build_tokens,
    build_verdict,
    png_data_uri,
    render_report,
    write_report,
)

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


# ----------------------------------------------------------------- counterfactual-era summaries


def with_intervals(stats: dict, regions: tuple[str, ...] = ("text", "border"), width: float = 0.15) -> dict:
    """Add the interval keys aggregate.py writes (<r>_mass_ci, _area_ci, _lift_ci, _hit_expected)."""
    out = dict(stats)
    for r in regions:
        mass, area, lift = out.get(f"{r}_mass"), out.get(f"{r}_area"), out.get(f"{r}_lift")
        out[f"{r}_hit_expected"] = area
        out[f"{r}_mass_ci"] = None if mass is None else [mass * (1 - width / 2), mass * (1 + width / 2)]
        out[f"{r}_area_ci"] = None if area is None else [area * 0.95, area * 1.05]
        out[f"{r}_lift_ci"] = None if lift is None else [lift * (1 - width), lift * (1 + width)]
    return out


def with_effect(stats: dict, effect: float | None, half: float = 0.05, placebo_drop: float = 0.01,
                flip_removed: float = 0.2, accuracy: float | None = 0.8, region: str = "text") -> dict:
    """Add the counterfactual keys aggregate.py writes for ``region``."""
    out = dict(stats)
    r = region
    out.update({
        f"n_{r}_edited": out.get("n"),
        f"flip_rate_{r}_removed": flip_removed, f"flip_rate_{r}_placebo": 0.02,
        f"conf_drop_{r}_removed": None if effect is None else effect + placebo_drop,
        f"conf_drop_{r}_placebo": placebo_drop,
        f"{r}_effect": effect,
        f"{r}_effect_ci": None if effect is None else [effect - half, effect + half],
    })
    if r == "text":
        out["flip_rate_text_removed"], out["flip_rate_placebo"] = flip_removed, 0.02
    if accuracy is not None:
        out["accuracy"] = {"original": accuracy, f"{r}_removed": accuracy - flip_removed / 2,
                           f"{r}_placebo": accuracy - 0.01, f"{r}_gap": flip_removed / 2}
    else:
        out["accuracy"] = None
    return out


def make_cf_summary(model_sensitive: bool | None = True) -> dict:
    """The summary of a run with counterfactuals, intervals, the sanity check and a heuristic region.

    horror: text lift 3.41 [2.90, 3.95] fails the lift gate, and its text effect 0.31 [0.22, 0.40]
    fails the effect gate. comedy: lift interval straddles 2.0 (amber), effect inconclusive.
    drama: fine. western: too few images to be flagged.
    """
    classes = {
        "comedy": with_effect(with_intervals(class_stats(60, 0.21, 0.12)), 0.04, half=0.03),
        "drama": with_effect(with_intervals(class_stats(58, 0.08, 0.10)), -0.004, half=0.012, flip_removed=0.03),
        "horror": with_effect(with_intervals(class_stats(60, 0.3137, 0.092)), 0.31, half=0.09, flip_removed=0.45,
                              accuracy=0.9),
        "western": with_effect(with_intervals(class_stats(2, 0.02, 0.05)), 0.12, half=0.2, accuracy=0.5),
    }
    horror = classes["horror"]
    horror["text_lift"], horror["text_lift_ci"] = 3.41, [2.90, 3.95]
    horror["text_effect_ci"] = [0.22, 0.40]
    for name, st in classes.items():
        st["background_mass"], st["background_area"], st["background_lift"] = 0.35, 0.5, 0.7
        st["background_hit_rate"], st["background_hit_expected"] = 0.3, 0.5
        st["background_lift_ci"] = [0.6, 0.8]
    horror["flagged"] = True
    horror["flag_reasons"] = ["text_lift 3.41 (interval lower bound 2.9) > 2.0",
                              "text_effect 0.31 (interval lower bound 0.22) > 0.05"]
    summary = make_summary(classes=classes)
    overall = with_effect(with_intervals(class_stats(180, 0.21, 0.105)), 0.11, half=0.04)
    overall.pop("flagged"), overall.pop("flag_reasons")
    overall.update({k: v for k, v in horror.items() if k.startswith("background_")})
    summary.update(
        regions=["text", "border", "background"],
        overall=overall,
        flagged_classes=["horror"],
        gate={
            "passed": False,
            "failures": [
                {"class": "horror", "rule": "max_text_lift", "value": 3.41, "lower": 2.90, "threshold": 2.0},
                {"class": "horror", "rule": "max_text_effect", "value": 0.31, "lower": 0.22, "threshold": 0.05},
            ],
            "max_text_lift": 2.0, "max_text_effect": 0.05,
            "rule": "a class is flagged when the lower bound of its interval exceeds the threshold",
        },
        counterfactual={"enabled": True, "regions": ["text"], "method": "telea", "margin": 2},
        stats={"bootstrap": 1000, "ci": 0.95, "seed": 0, "interval": "percentile bootstrap over images"},
        sanity={
            "n_images": 16, "randomized_layers": ["layer4", "fc"],
            "rank_correlation_mean": 0.33 if model_sensitive is not False else 0.93,
            "rank_correlation_median": 0.40 if model_sensitive is not False else 0.95,
            "max_rank_correlation": 0.8, "model_sensitive": model_sensitive,
            "verdict": {True: "explanations are model-sensitive", False: "explanations not model-sensitive",
                        None: "not determined (all maps constant)"}[model_sensitive],
        },
        region_sources={  # the shape regions/build.py writes
            "text": {"source": "easyocr-craft", "from": "EasyOCR CRAFT detector, canvas 1024, min_score 0.5",
                     "heuristic": False},
            "border": {"source": "frame", "from": "outer 5% of width and height", "heuristic": False},
            "background": {"source": "grabcut", "heuristic": True, "complement_of_foreground": True,
                           "from": "complement of an OpenCV GrabCut foreground from a centred rectangle "
                                   "(margin 0.1); a guess, not ground truth"},
        },
    )
    summary["config"]["gate"].update(max_text_effect=0.05, max_lift={}, max_effect={})
    summary["config"]["counterfactual"] = summary["counterfactual"]
    return summary


def _inpaint(img: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return cv2.inpaint(img, mask.astype(np.uint8), 3, cv2.INPAINT_TELEA)


def make_cf_gallery(n: int = 3) -> list[GalleryItem]:
    """Gallery items with text-removed and placebo views, as pipeline._counterfactuals builds them."""
    items = make_gallery(n)
    for i, item in enumerate(items):
        mask = item.regions["text"]
        placebo = np.roll(mask, 110, axis=0)  # same area, lower in the image, off the title
        flipped = i == 0
        item.edits = {
            "text_removed": {"image": _inpaint(item.image, mask), "mask": mask,
                             "pred": "comedy" if flipped else item.pred, "confidence": 0.21 if flipped else 0.6},
            "text_placebo": {"image": _inpaint(item.image, placebo), "mask": placebo,
                             "pred": item.pred, "confidence": float(item.confidence) - 0.02},
        }
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


def cf_report(tmp_path: Path, model_sensitive: bool | None = False) -> Path:
    """A counterfactual-era run: intervals, effects, a failed sanity check, edited gallery views."""
    summary = make_cf_summary(model_sensitive=model_sensitive)
    return write_report(tmp_path, summary, make_images(summary), make_cf_gallery(), make_validation(), make_errors())


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


@pytest.mark.parametrize("builder", [realistic_report, cf_report, "token_report"])
def test_no_external_references(tmp_path, builder):
    builder = globals()[builder] if isinstance(builder, str) else builder  # defined further down
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


# --------------------------------------------------------------------------- counterfactual era: browser


@pytest.fixture(scope="module")
def cf_report_path(tmp_path_factory) -> Path:
    return cf_report(tmp_path_factory.mktemp("cf-run"))


@pytest.fixture()
def cf_page(driver, cf_report_path):
    open_file(driver, cf_report_path)
    return driver


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


def test_sanity_warning_near_verdict(cf_page):
    warning = cf_page.find_element("id", "sanity-warning")
    assert warning.is_displayed()
    assert "not model-sensitive" in warning.text and "do not trust the mass metrics" in warning.text
    verdict_bottom = cf_page.find_element("id", "verdict").rect
    assert 0 <= warning.rect["y"] - (verdict_bottom["y"] + verdict_bottom["height"]) < 40  # right below the banner
    assert cf_page.find_element("id", "sanity-status").text == "not model-sensitive"


def test_edit_panels_images_load(cf_page):
    cards = cf_page.execute_script("""
        return Array.from(document.querySelectorAll('.gallery .card')).map(card =>
          Array.from(card.querySelectorAll('.panels.edits img'))
            .map(i => [i.complete, i.naturalWidth, i.getBoundingClientRect().width]));""")
    assert len(cards) == 3 and all(len(c) == 2 for c in cards)
    assert all(ok and w == 224 and shown > 50 for c in cards for ok, w, shown in c)
    note = cf_page.find_element("css selector", ".gallery .card .panel-note").text
    assert "before" in note.lower() and "comedy (horror 21%)" in note and "horror 95%" in note


def test_mass_and_area_intervals_toggle(cf_page):
    extra = cf_page.find_element("css selector", "#class-table td .ci-extra")
    assert not extra.is_displayed()
    cf_page.find_element("css selector", "label[for='show-ci']").click()
    assert extra.is_displayed() and extra.text.startswith("[")
    lift = cf_page.find_element("xpath", "//table[@id='class-table']//tbody/tr[3]/td[contains(@class,'lift')]")
    assert lift.text.split() == ["3.41", "[2.90,", "3.95]"] and "lift-bad" in lift.get_attribute("class")


# --------------------------------------------------------------------------- counterfactual era: static


def cf_html(summary: dict, gallery: list | None = None) -> str:
    return render_report(summary, make_images(summary), gallery or [], make_validation(), make_errors())


def cf_text(summary: dict, gallery: list | None = None) -> str:
    html = render_report(summary, make_images(summary), gallery or [], make_validation(), make_errors())
    text = visible_text(html)
    assert not re.search(r"\bnan\b|\bNone\b|\binf\b", text, re.I), "raw missing value leaked"
    return " ".join(text.split())


def test_verdict_sentences_for_interval_rules():
    summary = make_cf_summary()
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
    assert v.rule.startswith("a class is flagged when the lower bound")
    # Small effects keep three decimals so they stay comparable with a 0.05 threshold.
    summary["classes"]["comedy"].update(text_effect=0.106, text_effect_ci=[0.085, 0.126])
    summary["gate"]["failures"] = [
        {"class": "comedy", "rule": "max_text_effect", "value": 0.106, "lower": 0.085, "threshold": 0.05},
        {"class": "drama", "rule": "max_border_lift", "value": 1.9, "lower": 1.6, "threshold": 1.5},
        {"class": "drama", "rule": "max_background_effect", "value": 0.2, "lower": 0.12, "threshold": 0.1},
        {"class": None, "rule": "validation", "value": 2, "threshold": 0},
    ]
    summary["validation"] = {"success": False, "n_expectations": 17, "n_failed": 2}
    summary["classes"]["drama"]["border_lift_ci"] = None  # only the failure's lower bound is known
    v = build_verdict(summary)
    sentences = [f["sentence"] for f in v.findings]
    assert sentences[0] == ("Class 'comedy': removing the text lowers confidence by 0.106 more than removing an "
                            "equal-area placebo region (95% interval 0.085\u20130.126; threshold 0.05).")
    assert "(lift 1.90, lower bound 1.60 > 1.5)" in sentences[1] and "the image border" in sentences[1]
    assert sentences[2] == ("Class 'drama': removing the background lowers confidence by 0.20 more than removing "
                            "an equal-area placebo region (interval lower bound 0.12; threshold 0.1).")
    assert sentences[3].startswith("Data validation: 2 of 17 expectations on the result tables did not hold")
    assert v.notes == []  # the validation finding replaces the separate note


def test_pass_headline_names_both_limits():
    summary = make_cf_summary(model_sensitive=True)
    for st in summary["classes"].values():
        st.update(flagged=False, flag_reasons=[])
    summary.update(flagged_classes=[])
    summary["gate"].update(passed=True, failures=[])
    v = build_verdict(summary)
    assert v.title == "PASS" and v.warnings == []
    assert v.headline == "Every class passed the release gate (limits: text lift 2.0, text effect 0.05)."


def test_lift_colour_follows_the_interval_lower_bound():
    summary = make_cf_summary()
    # Point estimate above the limit, but the interval reaches below it: amber, not red.
    summary["classes"]["comedy"].update(text_lift=2.2, text_lift_ci=[1.8, 2.6])
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


def test_counterfactual_section_content():
    summary = make_cf_summary()
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
    summary = make_cf_summary(model_sensitive=None)
    summary["classes"]["drama"] = {"n": 0, "flagged": False, "accuracy": None, "text_effect": None,
                                   "text_effect_ci": None, "n_text_edited": 0, "text_lift_ci": [None, None]}
    summary["classes"]["comedy"]["text_effect_ci"] = None
    summary["overall"]["accuracy"] = None
    summary["sanity"].update(rank_correlation_mean=None, rank_correlation_median=None, randomized_layers=None)
    text = cf_text(summary, make_cf_gallery(1))
    assert "not determined" in text and "Do not rely on these heatmaps" not in text
    off = make_cf_summary()
    off["counterfactual"] = {"enabled": False, "regions": []}
    text = cf_text(off)
    assert "Counterfactual test" in text and "Not run for this audit" in text
    assert "Accuracy on edited copies" not in text
    off["sanity"] = None
    assert "The top layers are re-initialised" in cf_text(off)
    assert build_sanity(off)["ran"] is False


def test_older_summaries_render_without_new_sections():
    summary = make_summary()  # 0.1 format: no intervals, counterfactual, stats, sanity or sources
    html = render_report(summary, make_images(summary), make_gallery(1), make_validation(), make_errors())
    assert 'id="counterfactual"' not in html and 'id="sanity"' not in html and 'id="tokens"' not in html
    assert 'href="#tokens"' not in html
    assert 'id="show-ci"' not in html and 'id="sanity-warning"' not in html and "heuristic" not in visible_text(html)
    assert "Placebo" not in visible_text(html) and "within 25% of the limit" in visible_text(html)
    assert build_verdict(summary).warnings == [] and build_verdict(summary).rule == ""


def test_sanity_panel_and_warning():
    bad = make_cf_summary(model_sensitive=False)
    v = build_verdict(bad)
    assert v.warnings == [
        "Explanations not model-sensitive: heatmaps barely change when the top layers are re-initialised "
        "(mean rank correlation with the randomised model 0.93, limit 0.8) \u2014 do not trust the mass metrics."
    ]
    panel = build_sanity(bad)
    assert (panel["status"], panel["tag"]) == ("bad", "not model-sensitive")
    assert {f["label"]: f["value"] for f in panel["facts"]}["Re-initialised layers"] == "layer4, fc"
    good = build_sanity(make_cf_summary(model_sensitive=True))
    assert good["status"] == "ok" and "0.33 \u2264 0.8" in good["verdict"]


def test_region_sources_in_legend_and_methods():
    text = cf_text(make_cf_summary())
    assert "Background is estimated by grabcut, not detected (complement of an OpenCV GrabCut" in text
    assert "Where the regions come from" in text
    assert re.search(r"Text ?: easyocr-craft \u2014 EasyOCR CRAFT detector, canvas 1024", text)
    assert "complement_of_foreground" not in text and "True" not in text


def test_gallery_edit_rows():
    html = render_report(make_cf_summary(), None, make_cf_gallery(2), {}, None)
    assert html.count("<img") == 2 * 5
    text = " ".join(visible_text(html).split())
    assert "Prediction before \u2192 after Original horror 97% Text removed \u2192 comedy (horror 21%)" in text
    assert "Placebo \u2192 horror 95%" in text and "Placebo (outlined)" in text
    item = make_cf_gallery(1)[0]
    item.edits = {"text_removed": {"image": None, "pred": None, "confidence": float("nan")}, "junk": 3}
    html = render_report(make_cf_summary(), None, [item], {}, None)
    assert html.count("<img") == 3 and "Text removed" in visible_text(html)


def test_hostile_strings_in_new_sections_are_escaped():
    summary = make_cf_summary()
    summary["classes"] = {HOSTILE_CLASS: with_effect(with_intervals(class_stats(5, 0.5, 0.1)), 0.3)}
    summary["gate"]["failures"] = [{"class": HOSTILE_CLASS, "rule": "max_text_effect", "value": 0.3,
                                    "lower": 0.25, "threshold": 0.05}]
    summary["region_sources"]["background"]["source"] = HOSTILE_PATH
    summary["sanity"].update(model_sensitive=None, verdict=HOSTILE_CLASS, randomized_layers=[HOSTILE_CLASS])
    summary["counterfactual"]["method"] = HOSTILE_CLASS
    item = make_cf_gallery(1)[0]
    item.edits["text_removed"]["pred"] = HOSTILE_PATH
    html = render_report(summary, None, [item], {}, None)
    assert "<script>window" not in html and '<img id="injected"' not in html
    assert [t for t, _ in parse(html).tags].count("script") == 1
    assert HOSTILE_CLASS in visible_text(html) and HOSTILE_PATH in visible_text(html)


# --------------------------------------------------------------------------- text tokens

HOSTILE_TOKEN = "<img src=x onerror=alert(1)>"


def token_entry(token: str, n: int, top: str, share: float, p: float, lift: float, effect: float | None = None,
                ci: list | None = None, flips: tuple = (None, None), flagged: bool = False, **extra) -> dict:
    """One entry of summary["tokens"] as token_stage.analyse_tokens writes it."""
    others = [c for c in ("comedy", "drama", "horror", "western") if c != top]
    rest = round(1 - share, 4)
    shares = {top: share, **({others[0]: round(rest * 0.7, 4), others[1]: round(rest * 0.3, 4)} if rest > 0 else {})}
    area = 0.04
    entry = {
        "token": token, "kind": token.split(":", 1)[0], "example_text": None, "n_images": n, "n_instances": n + n // 5,
        "top_class": top, "class_share": share, "class_shares": shares, "p_value": p,
        "mass": lift * area, "area": area, "lift": lift, "effect": effect, "effect_ci": ci,
        "flip_rate_removed": flips[0], "flip_rate_placebo": flips[1], "risk": 0.0, "flagged": flagged,
    }
    entry.update(extra)
    return entry


def make_token_summary() -> dict:
    """A counterfactual-era summary with tokens: 'NEW' and an unreadable mark are flagged horror
    shortcuts; 'Studio' is attended and needed but spread over classes; a hostile string, an
    untested year and a token with missing numbers are fine."""
    summary = make_cf_summary(model_sensitive=True)
    tokens = [
        token_entry("text:new", 38, "horror", 0.95, 3.2e-12, 4.1, 0.31, [0.22, 0.40], (0.42, 0.03), True,
                    example_text="NEW", risk=183.4),
        token_entry("visual:9f3a7c21e0b4d855", 24, "horror", 0.875, 1.1e-6, 2.6, 0.12, [0.07, 0.18], (0.17, 0.04),
                    True, risk=61.2),
        token_entry("text:studio", 61, "comedy", 0.36, 0.41, 2.4, 0.08, [0.06, 0.10], (0.05, 0.02),
                    example_text="Studio", risk=9.87),
        token_entry("text:imgsrcxonerroralert1", 12, "comedy", 0.5, 0.21, 1.3, 0.01, [-0.02, 0.04], (0.0, 0.0),
                    example_text=HOSTILE_TOKEN, risk=3.1),
        token_entry("text:2026", 15, "drama", 0.4, 0.5, 0.9, risk=1.2, example_text="2026"),
        token_entry("text:x", 3, "drama", float("nan"), None, float("nan"), risk=None, class_shares=None,
                    n_instances=None),
    ]
    summary["tokens"] = tokens
    summary["flagged_tokens"] = ["text:new", "visual:9f3a7c21e0b4d855"]
    summary["gate"]["failures"] += [
        {"class": "horror", "rule": "token", "token": "text:new", "value": 4.1, "effect": 0.31, "lower": 0.22,
         "threshold": None},
        {"class": "horror", "rule": "token", "token": "visual:9f3a7c21e0b4d855", "value": 2.6, "effect": 0.12,
         "lower": 0.07, "threshold": None},
    ]
    summary["config"]["tokens"] = {"enabled": True, "min_images": 3, "min_text_length": 2, "min_text_conf": 0.4,
                                   "max_hamming": 6, "top_n": 20, "effect_tokens": 4, "max_effect_images": 64,
                                   "max_lift": 2.0, "max_effect": 0.05, "max_p_value": 0.01}
    return summary


def _badge(text: str, fg=(255, 255, 255), bg=(200, 30, 30), h: int = 30) -> np.ndarray:
    """A sticker-like crop (RGB) with ``text`` on it, sized to the text."""
    (w, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.7, 2)
    img = np.full((h, w + 12, 3), bg, np.uint8)
    cv2.putText(img, text, (6, (h + th) // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.7, fg, 2, cv2.LINE_AA)
    return img


def _mark(size: int = 34) -> np.ndarray:
    img = np.full((size, size, 3), 245, np.uint8)
    cv2.circle(img, (size // 2, size // 2), size // 2 - 3, (20, 60, 140), -1, cv2.LINE_AA)
    cv2.line(img, (8, size - 9), (size - 8, 9), (250, 210, 40), 3, cv2.LINE_AA)
    return img


def make_token_crops() -> dict[str, list[np.ndarray]]:
    rng = np.random.default_rng(3)
    new = [_badge("NEW", bg=tuple(int(v) for v in rng.integers(150, 230, 3) * [1, 0.2, 0.2])) for _ in range(4)]
    return {
        "text:new": new,
        "visual:9f3a7c21e0b4d855": [_mark(34), _mark(40), _mark(28)],
        "text:studio": [_badge("Studio", fg=(30, 30, 30), bg=(230, 230, 220)), _badge("STUDIO", bg=(40, 40, 40))],
        "text:imgsrcxonerroralert1": [_badge("<img>", bg=(60, 90, 60))],
        "text:2026": [np.zeros((0, 5, 3), np.uint8), None, _badge("2026", bg=(90, 90, 90), h=120)],  # broken ones skipped
    }


def make_token_examples(token: str = "text:new", n: int = 3) -> list[GalleryItem]:
    """Before/after examples as token_effects.token_effect builds them: the token is a badge."""
    items = []
    for i in range(n):
        img, _, cam = make_poster(10 + i)
        badge = _badge("NEW", h=26) if token.startswith("text:") else cv2.resize(_mark(30), (30, 30))
        y, x = 180, 150
        img[y:y + badge.shape[0], x:x + badge.shape[1]] = badge[:, : 224 - x]
        poly = np.array([[x, y], [x + badge.shape[1], y], [x + badge.shape[1], y + badge.shape[0]], [x, y + badge.shape[0]]],
                        np.float64)
        mask = np.zeros(img.shape[:2], bool)
        mask[y - 2:y + badge.shape[0] + 2, x - 2:min(224, x + badge.shape[1] + 2)] = True
        yy, xx = np.mgrid[0:224, 0:224]
        cam = np.maximum(0.4 * cam, np.exp(-(((xx - x - 20) / 22.0) ** 2 + ((yy - y - 13) / 16.0) ** 2))).astype(np.float32)
        placebo = np.roll(mask, (-120, -110), axis=(0, 1))
        flipped = i == 0
        items.append(GalleryItem(
            path=f"horror/poster_{i + 10:03d}.jpg", label="horror", pred="horror", confidence=0.93 - 0.05 * i,
            score=0.3, metrics={"token_effect": 0.3 - 0.05 * i}, image=img, cam=cam,
            regions={"token": mask}, text_polygons=[poly],
            edits={
                "token_removed": {"image": _inpaint(img, mask), "mask": mask,
                                  "pred": "comedy" if flipped else "horror", "confidence": 0.31 + 0.1 * i},
                "token_placebo": {"image": _inpaint(img, placebo), "mask": placebo, "pred": "horror",
                                  "confidence": 0.9 - 0.05 * i},
            },
        ))
    return items


def token_report(tmp_path: Path) -> Path:
    summary = make_token_summary()
    examples = {"text:new": make_token_examples("text:new"),
                "visual:9f3a7c21e0b4d855": make_token_examples("visual:9f3a7c21e0b4d855", 2)}
    return write_report(tmp_path, summary, make_images(summary), make_cf_gallery(2), make_validation(), make_errors(),
                        token_examples=examples, token_crops=make_token_crops())



# --------------------------------------------------------------------------- text tokens: static

NEW_SENTENCE = ("Token 'NEW' (on 38 images, 95% in class 'horror'): removing just this text lowers confidence by "
                "0.31 more than a placebo (95% interval 0.22\u20130.40); the model attends to it 4.1\u00d7 its area.")
MARK_SENTENCE = ("An unreadable mark #9f3a7c21 (on 24 images, 88% in class 'horror'): removing just this mark lowers "
                 "confidence by 0.120 more than a placebo (95% interval 0.070\u20130.180); the model attends to it "
                 "2.6\u00d7 its area.")


def test_token_table_rows_in_rank_order():
    section = build_tokens(make_token_summary(), crops=make_token_crops())
    rows = section["rows"]
    assert [r["key"] for r in rows] == ["text:new", "visual:9f3a7c21e0b4d855", "text:studio",
                                        "text:imgsrcxonerroralert1", "text:2026", "text:x"]
    assert [r["rank"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert [r["status"] for r in rows] == ["flagged", "flagged", "spread", "ok", "ok", "ok"]
    new, mark, studio, hostile, year, empty = rows
    assert (new["label"], new["kind"], new["why"]) == ("NEW", "text", "lift, effect")
    assert (mark["label"], mark["kind"], mark["hash"]) == ("unreadable mark", "visual", "9f3a7c21")
    assert hostile["label"] == HOSTILE_TOKEN
    assert new["p"]["text"] == "3.2\u00d710\u207b\u00b9\u00b2" and "assoc" in new["p"]["cls"]
    assert studio["p"]["text"] == "0.41" and "assoc" not in studio["p"]["cls"]
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


def test_token_verdict_sentences():
    v = build_verdict(make_token_summary())
    assert v.title == "FAIL" and v.headline == "4 findings blocked the release gate."
    sentences = [f["sentence"] for f in v.findings]
    assert sentences[2:] == [NEW_SENTENCE, MARK_SENTENCE]
    assert [f["rule"] for f in v.findings[2:]] == ["token", "token"]
    # Flagged tokens the gate did not list still show; a failure for an unlisted token uses its own numbers.
    summary = make_token_summary()
    summary["gate"] = {"passed": True, "failures": []}
    for st in summary["classes"].values():
        st.update(flagged=False, flag_reasons=[])
    summary["flagged_classes"] = []
    v = build_verdict(summary)
    assert v.title == "FLAGGED" and v.headline == "2 findings flagged for review."
    assert [f["sentence"] for f in v.findings] == [NEW_SENTENCE, MARK_SENTENCE]
    summary["tokens"], summary["flagged_tokens"] = [], []
    summary["gate"] = {"passed": False, "failures": [
        {"class": "horror", "rule": "token", "token": "text:new", "value": 3.04, "effect": None, "lower": None,
         "threshold": None},
        {"class": "horror", "rule": "token", "token": "visual:00ff", "value": None, "effect": -0.02,
         "lower": None, "threshold": None},
    ]}
    assert [f["sentence"] for f in build_verdict(summary).findings] == [
        "Token 'new' (mostly in class 'horror'): the model attends to it 3.0\u00d7 its area.",
        "An unreadable mark #00ff (mostly in class 'horror'): removing just this mark raises confidence by 0.020 "
        "more than a placebo.",
    ]


def test_token_section_content_and_gallery():
    summary = make_token_summary()
    examples = {"text:new": make_token_examples("text:new", 2)}
    html = render_report(summary, None, [], {}, None, token_examples=examples, token_crops=make_token_crops())
    text = " ".join(visible_text(html).split())
    assert "Text the model uses" in text and 'href="#tokens"' in html
    assert "treat all the text in an image as one region" in text and "token" in text
    assert "3.2\u00d710\u207b\u00b9\u00b2" in text and "not tested" in text and "not class-specific" in text
    assert "p < 0.01" in text and "more than 2.0\u00d7 its area" in text and "above 0.05" in text
    assert "Removal was tested for the 4 riskiest tokens (up to 64 images each)" in text
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
    summary = make_summary()  # predates tokens: no section, even if examples are passed
    html = render_report(summary, None, [], {}, None, token_examples={"text:new": make_token_examples(n=1)},
                         token_crops={"text:new": [_badge("NEW")]})
    assert 'id="tokens"' not in html and "<img" not in html
    none_found = make_token_summary()
    none_found.update(tokens=[], flagged_tokens=[])
    assert "No text recurs on 3 or more images" in cf_text(none_found)
    off = make_token_summary()
    off.update(tokens=[], flagged_tokens=[])
    off["config"]["tokens"]["enabled"] = False
    assert re.search(r"Not run for this audit \( ?tokens\.enabled ?or text detection is off\)", cf_text(off))
    no_cf = make_token_summary()
    no_cf["counterfactual"] = {"enabled": False, "regions": []}
    for t in no_cf["tokens"]:
        t.update(effect=None, effect_ci=None, flip_rate_removed=None, flip_rate_placebo=None)
    text = cf_text(no_cf)
    assert "token effects were not measured" in text and "Token effect" not in text
    assert "vs threshold" not in text and "Flips" not in text and "riskiest tokens are tested" not in cf_html(no_cf)
    assert build_tokens(no_cf)["axis"] is None


def test_token_section_survives_malformed_input():
    nan = float("nan")
    summary = make_token_summary()
    summary["tokens"] = [
        "junk", None, {"no": "token"},
        {"token": "text:a", "n_images": nan, "class_shares": {"x": nan, "y": "z"}, "effect": nan,
         "effect_ci": [None, 1], "p_value": "?", "lift": None, "flagged": True, "risk": float("inf")},
        {"token": "visual:", "kind": "weird", "example_text": 3, "effect": 0.2, "effect_ci": [0.3, 0.1],
         "class_shares": [], "top_class": None},
    ]
    summary["flagged_tokens"] = "not-a-list"
    summary["gate"]["failures"].append({"class": None, "rule": "token", "token": None})
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
    summary = make_token_summary()
    t = summary["tokens"][0]
    t.update(token="text:" + HOSTILE_TOKEN, example_text=HOSTILE_TOKEN, top_class=HOSTILE_CLASS,
             class_shares={HOSTILE_CLASS: 0.9, HOSTILE_PATH: 0.1})
    summary["flagged_tokens"] = ["text:" + HOSTILE_TOKEN]
    summary["gate"]["failures"][2].update(token="text:" + HOSTILE_TOKEN, **{"class": HOSTILE_CLASS})
    item = make_token_examples(n=1)[0]
    item.path, item.edits["token_removed"]["pred"] = HOSTILE_PATH, HOSTILE_CLASS
    html = render_report(summary, None, [], {}, None, token_examples={"text:" + HOSTILE_TOKEN: [item]},
                         token_crops={"text:" + HOSTILE_TOKEN: [_badge("X")]})
    doc = parse(html)
    assert "<script>window" not in html and '<img id="injected"' not in html and "<img src=x" not in html
    assert [t for t, _ in doc.tags].count("script") == 1
    assert all(not k.startswith("on") for _, attrs in doc.tags for k in attrs)
    assert all((a.get("src") or "").startswith("data:image/png;base64,") for tag, a in doc.tags if tag == "img")
    text = visible_text(html)
    assert HOSTILE_TOKEN in text and HOSTILE_CLASS in text and HOSTILE_PATH in text
    assert f"Token '{HOSTILE_TOKEN}' (on 38 images, 95% in class '{HOSTILE_CLASS}')" in " ".join(text.split())


# --------------------------------------------------------------------------- text tokens: browser


@pytest.fixture(scope="module")
def token_report_path(tmp_path_factory) -> Path:
    return token_report(tmp_path_factory.mktemp("token-run"))


@pytest.fixture()
def token_page(driver, token_report_path):
    open_file(driver, token_report_path)
    driver.get_log("browser")
    return driver


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
