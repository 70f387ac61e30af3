"""The gallery and its image panels: overlays, text boxes, counterfactual edits, odd inputs."""

from __future__ import annotations

import base64
import math

import cv2
import numpy as np

from auditors.report import render_report
from auditors.report.images import png_data_uri
from tests.report.builders import cf_summary, summary_v01
from tests.report.html_text import visible_text
from tests.report.galleries import make_cf_gallery, make_gallery


def test_gallery_images_loaded(page):
    sizes = page.execute_script(
        "return Array.from(document.querySelectorAll('.gallery img'))"
        ".map(i => [i.complete, i.naturalWidth, i.naturalHeight, i.getBoundingClientRect().width]);")
    assert len(sizes) == 4 * 3
    assert all(ok and w == 224 and h == 224 and shown > 50 for ok, w, h, shown in sizes)


def test_edit_panels_images_load(cf_page):
    cards = cf_page.execute_script("""
        return Array.from(document.querySelectorAll('.gallery .card')).map(card =>
          Array.from(card.querySelectorAll('.panels.edits img'))
            .map(i => [i.complete, i.naturalWidth, i.getBoundingClientRect().width]));""")
    assert len(cards) == 3 and all(len(c) == 2 for c in cards)
    assert all(ok and w == 224 and shown > 50 for c in cards for ok, w, shown in c)
    note = cf_page.find_element("css selector", ".gallery .card .panel-note").text
    assert "before" in note.lower() and "comedy (horror 21%)" in note and "horror 95%" in note


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
    html = render_report(summary_v01(), None, [grey, floats, missing, big], {}, None)
    assert html.count("<img") == 9 and "Image not available" in html
    assert "Text boxes (1)" in html


def test_gallery_edit_rows():
    html = render_report(cf_summary(), None, make_cf_gallery(2), {}, None)
    assert html.count("<img") == 2 * 5
    text = " ".join(visible_text(html).split())
    assert "Prediction before \u2192 after Original horror 97% Text removed \u2192 comedy (horror 21%)" in text
    assert "Placebo \u2192 horror 95%" in text and "Placebo (outlined)" in text
    item = make_cf_gallery(1)[0]
    item.edits = {"text_removed": {"image": None, "pred": None, "confidence": float("nan")}, "junk": 3}
    html = render_report(cf_summary(), None, [item], {}, None)
    assert html.count("<img") == 3 and "Text removed" in visible_text(html)
