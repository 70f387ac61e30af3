"""The report of a guided Grad-CAM audit with cam.layers, from a real flow run, in headless Chromium."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from auditors.config import config_from_dict
from auditors.report.variants import depth_panel
from tests.browser import chromium_driver, console_errors, full_page_png, open_file
from tests.conftest import build_tiny_cnn, draw_word

LAYERS = ["features.0", "features.3", "features"]


@pytest.fixture(scope="module")
def guided_run(tmp_path_factory, prefect_server):
    from flows.audit import run_audit

    tmp_path = tmp_path_factory.mktemp("guided")
    root = tmp_path / "data"
    rng = np.random.default_rng(1)
    for ci, cls in enumerate(["alpha", "beta", "gamma"]):
        (root / cls).mkdir(parents=True)
        for i in range(3):
            img = np.full((120, 120, 3), 235, np.uint8)
            img[:, :, ci] = rng.integers(120, 200)
            draw_word(img, ["SALE", "HELLO", "OPEN"][ci], (10, 40 + 25 * i))
            cv2.imwrite(str(root / cls / f"{i}.png"), img[:, :, ::-1])
    ckpt = tmp_path / "tiny.pt"
    torch.save(build_tiny_cnn().state_dict(), ckpt)
    cfg = config_from_dict({
        "name": "guided",
        "dataset": {"root": str(root)},
        "model": {"factory": "tests.conftest:build_tiny_cnn", "checkpoint": str(ckpt), "input_size": [64, 64]},
        "cam": {"batch_size": 5, "method": "guided_gradcam", "layers": LAYERS},
        "output": {"dir": str(tmp_path / "out"), "cache_dir": str(tmp_path / "cache"), "gallery_size": 3},
        "sanity": {"enabled": False},
        "tokens": {"enabled": False},
    })
    return run_audit(cfg)


@pytest.fixture(scope="module")
def page(guided_run):
    with chromium_driver(width=1280, height=900) as d:
        open_file(d, guided_run.report)
        yield d


@pytest.mark.slow
def test_report_loads_cleanly_with_depth_and_guided_sections(page, guided_run, tmp_path):
    assert console_errors(page) == []
    summary = guided_run.summary
    # the per-layer panel: one line per class + the overall line, values as in summary.json
    lines = page.find_elements("css selector", "#depth svg.depth-plot polyline")
    assert sorted(e.get_attribute("data-series") for e in lines) == ["alpha", "beta", "gamma", "overall"]
    rows = page.find_elements("css selector", "#depth-table tbody tr")
    overall = [c.text for c in rows[0].find_elements("css selector", "td")]
    assert overall == [f"{summary['layers']['overall'][n]['text_lift']:.2f}" for n in LAYERS]
    assert page.find_element("css selector", "#depth svg").size["width"] > 300
    # the gallery says which map it shows
    captions = [e.text for e in page.find_elements("css selector", ".gallery .panel-caption")]
    assert "Guided Grad-CAM" in captions and "Grad-CAM" not in captions
    files = page.find_element("id", "methods").text
    assert "regions.parquet" in files and "cams.npz" not in files  # save_cams is off in this run
    png = full_page_png(page)
    shots = Path(os.environ.get("CAMAUDIT_SCREENSHOT_DIR") or guided_run.run_dir)  # keep one for the docs
    shots.mkdir(parents=True, exist_ok=True)
    (shots / "report-variants.png").write_bytes(png)
    img = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None and img.std() > 20


def test_depth_panel_absent_without_layers_and_escapes_names():
    assert depth_panel({"regions": ["text"], "layers": None}) is None
    hostile = '<script>alert(1)</script>'
    panel = depth_panel({
        "regions": ["text"],
        "layers": {"names": ["a", "b"], "overall": {"a": {"text_lift": 1.5}, "b": {"text_lift": 2.5, "text_lift_ci": [2.0, 3.0]}},
                   "classes": {hostile: {"a": {"text_lift": 0.5}, "b": {"text_lift": None}}}},
    })
    assert "<script>" not in str(panel["svg"]) and "&lt;script&gt;" in str(panel["svg"])
    assert panel["rows"][1]["values"] == ["0.50", "—"]
