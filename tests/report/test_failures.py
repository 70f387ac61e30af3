"""The "Where the model goes wrong" section from a summary's ``failures`` and the kept mistakes."""

from __future__ import annotations

import numpy as np

from auditors.measure.failures import FailureItem
from auditors.report import render_report
from auditors.report.failures import build_failures
from tests.report.builders import HOSTILE_PATH, make_errors, realistic_summary, validation_result
from tests.report.html_text import visible_text

FAILURES = {
    "n_labelled": 180, "n_errors": 12, "error_rate": 12 / 180, "leaned_on": {"none": 4, "text": 8},
    "errors_by_class": {"drama": 12},
    "regions": {"text": {"errors": {"n": 12, "share_lift_above_1": 0.75, "share_ci": [0.5, 0.9167]},
                         "correct": {"n": 160, "share_lift_above_1": 0.2, "share_ci": [0.1375, 0.2625]}}},
}


def _item(path: str, conf: float) -> FailureItem:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (48, 32, 3), dtype=np.uint8)
    cam = np.zeros((48, 32), np.float32)
    cam[:10] = 1.0
    metrics = {"text_mass_pred": 0.4, "text_lift_pred": 4.0, "text_mass_true": 0.05, "text_lift_true": 0.5,
               "border_mass_pred": 0.1, "border_lift_pred": 0.5, "border_mass_true": 0.2, "border_lift_true": 1.0,
               "leaned_on": "text"}
    return FailureItem(path=path, label="drama", pred="horror", confidence=conf, true_prob=1 - conf, image=img,
                       cam_pred=cam, cam_true=1 - cam, metrics=metrics)


def test_section_states_the_comparison_and_shows_both_maps():
    summary, images = realistic_summary()
    summary.failures = FAILURES
    items = [_item(HOSTILE_PATH, 0.97), _item("drama/001.jpg", 0.9)]
    section = build_failures(summary, items)
    assert section["sentences"] == ["The predicted-class map leans on text (lift > 1) in 75% of 12 mistakes (95% "
                                    "interval 50%\u201392%), against 20% of 160 correct predictions (95% interval "
                                    "14%\u201326%)."]
    card = section["groups"][0]["cards"][0]
    assert [p["caption"] for p in card["panels"]] == ["Input", "Map for predicted 'horror'", "Map for true 'drama'"]
    assert card["panels"][1]["src"] != card["panels"][2]["src"]
    assert card["leaned"] == "text" and card["rows"][0]["leaned"] and not card["rows"][1]["leaned"]
    html = render_report(summary, images, [], validation_result(), make_errors(), failures=items)
    assert 'id="injected"' not in html and "failures.parquet" in html
    text = " ".join(visible_text(html).split())
    assert "12 of 180 labelled images are misclassified (6.7%)" in text
    assert "Map for predicted 'horror'" in text and "Lift (true)" in text


def test_no_section_without_failure_analysis():
    summary, images = realistic_summary()
    assert build_failures(summary, None) is None
    html = render_report(summary, images, [], validation_result(), make_errors())
    assert 'id="failures"' not in html and "failures.parquet" not in html
