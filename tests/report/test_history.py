"""The "Since the last run" section and the regression finding, from two runs summarised by the
real builder on disk (no Prefect); the class table of a many-class model lists audited classes only."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from auditors.audit.finalize import summarise
from auditors.audit.summary import Summary
from auditors.report import render_report
from auditors.report.classes import MAX_EMPTY_CLASS_ROWS, build_class_table
from auditors.report.history import build_history
from auditors.report.verdict import build_verdict
from tests.report.builders import audit_config, image_rows, make_errors, validation_result
from tests.report.html_text import visible_text

CLASSES = ["comedy", "drama"]


def _run(tmp_path: Path, run_id: str, horror_like_mass: float, **gate) -> Summary:
    """One run of the audit 'nightly': its images.parquet and summary.json under tmp_path."""
    cfg = audit_config(name="nightly", model={"classes": CLASSES}, output={"dir": str(tmp_path)},
                       stats={"bootstrap": 300, "seed": 0}, gate={"max_text_lift": 100.0, **gate})
    images = pd.DataFrame([*image_rows("comedy", 30, horror_like_mass, 0.1, spread=0.2),
                           *image_rows("drama", 30, 0.1, 0.1, spread=0.2)])
    summary = summarise(cfg, images, make_errors(0), CLASSES, "label", validation_result(), run_id=run_id,
                        target_layer="layer4", device="cpu", compare_history=True)
    folder = tmp_path / "nightly" / run_id
    folder.mkdir(parents=True)
    images.to_parquet(folder / "images.parquet", index=False)
    (folder / "summary.json").write_text(json.dumps(summary.to_dict()))
    return summary


def test_regression_against_the_previous_run_is_shown_and_named(tmp_path):
    gate = {"baseline": "previous", "max_lift_increase": 0.5}
    first = _run(tmp_path, "20260101T000000Z-a", 0.1, **gate)
    assert first.history is not None and first.history.previous is None and first.passed
    assert build_history(first)["first"] is True

    second = _run(tmp_path, "20260102T000000Z-b", 0.4, **gate)  # comedy: text lift 1.0 -> 4.0
    assert not second.passed
    assert [(f.class_, f.rule) for f in second.gate.failures] == [("comedy", "regression_text_lift")]
    assert second.gate.regression.baseline_run == "20260101T000000Z-a"
    change = second.history.previous.classes["comedy"].text_lift
    assert change.method == "bootstrap" and change.delta_ci[0] > 0.5
    # Typed fields round-trip through summary.json.
    d = second.to_dict()
    assert Summary.model_validate_json(json.dumps(d)).to_dict() == d

    section = build_history(second)
    assert [b["title"] for b in section["blocks"]] == ["Since the previous run"]
    cells = {r["name"]: r["cells"][0] for r in section["blocks"][0]["rows"]}
    assert cells["comedy"]["cls"] == "bad" and cells["drama"]["cls"] in ("", "muted")
    findings = [f["sentence"] for f in build_verdict(second).findings]
    assert len(findings) == 1 and "text lift rose from 1.00 to 4.00 since run 20260101T000000Z-a" in findings[0]
    text = visible_text(render_report(second, None, [], validation_result(), make_errors(0)))
    assert "Since the last run" in text and "worse than allowed" in text


def test_a_summary_without_history_renders_without_the_section(tmp_path):
    summary = _run(tmp_path, "20260101T000000Z-a", 0.1)
    old = Summary.model_validate({k: v for k, v in summary.to_dict().items() if k != "history"})
    assert build_history(old) is None
    assert 'id="history"' not in render_report(old, None, [], validation_result(), make_errors(0))


def test_many_class_models_list_only_audited_classes():
    many = [f"c{i:03d}" for i in range(MAX_EMPTY_CLASS_ROWS + 10)]
    cfg = audit_config(model={"classes": many})
    images = pd.DataFrame([*image_rows("c001", 10, 0.2, 0.1), *image_rows("c007", 10, 0.2, 0.1)])
    summary = summarise(cfg, images, make_errors(0), many, "label", validation_result(), run_id="r",
                        target_layer="layer4", device="cpu")
    table = build_class_table(summary)
    assert [r["name"] for r in table["rows"]] == ["c001", "c007"] and table["hidden_empty"] == len(many) - 2
    assert len(summary.classes) == len(many), "summary.json keeps every class"
    few = summarise(audit_config(), images.assign(label="comedy", pred="comedy"), make_errors(0),
                    ["comedy", "drama", "horror", "western"], "label", validation_result(), run_id="r",
                    target_layer="layer4", device="cpu")
    assert build_class_table(few)["hidden_empty"] == 0 and len(build_class_table(few)["rows"]) == 4
