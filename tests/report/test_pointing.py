"""The pointing-game section: sentences and table from a real summary, misses drawn from a real
photo with the annotation outlined, the page in headless Chromium without console errors."""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd

from auditors.audit.finalize import summarise
from auditors.measure.gallery import GalleryItem
from auditors.report.pointing import build_pointing
from auditors.report.render import render_report, write_report
from tests.browser import console_errors, open_file
from tests.conftest import SCENETEXT
from tests.report.builders import RUN_ID, audit_config, image_rows, make_errors, validation_result

#: (n, hits, annotated area, chance with the tolerance) per class
PLAN = {"horror": (20, 17, 0.12, 0.18), "comedy": (20, 4, 0.15, 0.20), "drama": (10, 9, 0.7, 0.8)}


def _images() -> pd.DataFrame:
    rows = []
    for cls, (n, hits, area, chance) in PLAN.items():
        for i, r in enumerate(image_rows(cls, n, 0.2, 0.1, degenerate=0)):
            hit = float(i < hits)
            mass = 0.6 if hit else 0.02
            rows.append({**r, "expected_hit": hit, "expected_mass": mass, "expected_area": area,
                         "expected_lift": mass / area, "expected_hit_area": chance})
    return pd.DataFrame(rows)


def _summary():
    cfg = audit_config(regions={"expected": {"enabled": True, "source": "coco", "annotations": "ann/instances.json"}},
                       cam={"pointing_tolerance": 3})
    images = _images()
    summary = summarise(cfg, images, make_errors(), list(PLAN), "label", validation_result(), run_id=RUN_ID,
                        target_layer="layer4", device="cpu")
    return summary, images


def _misses(n: int = 3) -> list[GalleryItem]:
    photo = cv2.imread(str(SCENETEXT / "scenetext01.jpg"))[:, :, ::-1]
    img = np.ascontiguousarray(cv2.resize(photo, (224, 168)))
    yy, xx = np.mgrid[:168, :224]
    items = []
    for i in range(n):
        mask = np.zeros((168, 224), bool)
        mask[30 + 10 * i:90, 40:120] = True
        cam = np.exp(-((xx - 190) ** 2 + (yy - 140) ** 2) / 400.0).astype(np.float32)  # the peak far from it
        items.append(GalleryItem(path=f"horror/miss_{i}.jpg", label="horror", pred="comedy", confidence=0.8,
                                 score=0.95 - 0.1 * i, metrics={"expected_mass": 0.05 + 0.1 * i, "expected_area": 0.2,
                                                                "expected_lift": 0.25}, image=img, cam=cam,
                                 regions={"expected": mask}))
    return items


def test_sentences_rows_and_versus_chance():
    summary, _ = _summary()
    section = build_pointing(summary, _misses())
    assert "The model points at the annotated object in 85% of horror images (chance 18%, 20 images)." in section["sentences"]
    assert section["sentences"][0].startswith("The model points at the annotated object in 90% of drama images")
    words = {r["name"]: r["words"] for r in section["rows"]}
    assert words["horror"] == "above chance" and words["comedy"] in ("below chance", "not distinguishable from chance")
    assert words["drama"] == "not distinguishable from chance"  # 90% hits but 80% of the image counts as a hit
    assert section["tolerance"] == 3 and len(section["misses"]) == 3
    assert [m["caption"] for m in section["misses"][0]["panels"]] == ["Annotated region", "Grad-CAM", "Grad-CAM, annotation outlined"]
    assert build_pointing(summary.model_copy(update={"pointing": None})) is None


def test_section_absent_for_runs_without_expected():
    from tests.report.builders import realistic_summary

    summary, images = realistic_summary()
    html = render_report(summary, images, [], validation_result(), make_errors())
    assert 'id="pointing"' not in html and "Human attention (pointing game)" not in html


def test_pointing_section_in_chromium(driver, tmp_path):
    summary, images = _summary()
    report = write_report(tmp_path, summary, images, [], validation_result(), make_errors(), pointing_misses=_misses())
    open_file(driver, report)
    driver.get_log("browser")
    section = driver.find_element("id", "pointing")
    assert section.is_displayed()
    assert "85% of horror images (chance 18%" in section.text
    assert driver.find_element("css selector", "nav.toc a[href='#pointing']").text == "Pointing game"
    assert len(driver.find_elements("css selector", "#pointing-table tbody tr")) == 3
    imgs = driver.find_elements("css selector", ".pointing-misses img")
    assert len(imgs) == 9 and all(i.get_property("naturalWidth") > 0 for i in imgs)
    driver.find_element("css selector", "#pointing-table th[data-col='2']").click()  # sorting works on the new table
    first = driver.find_element("css selector", "#pointing-table tbody tr th").text
    assert first in ("comedy", "drama")
    assert console_errors(driver) == []
