"""The typed summary, built once: from real result tables to summary.json, without Prefect."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from auditors.audit.finalize import finalize_run, merge_run_tables, summarise
from auditors.audit.plan import Plan
from auditors.audit.run_folder import RunFolder
from auditors.audit.summary import Summary
from auditors.audit.tables import row_columns
from auditors.data.discovery import DatasetIndex, Entry
from tests.report.builders import CLASSES, audit_config, image_rows, make_errors, validation_result

#: The top-level keys of summary.json (README contract; extend additively, never rename).
CONTRACT = ["name", "run_id", "created_at", "camaudit_version", "config", "n_images", "n_failed", "n_region_errors",
            "n_degenerate", "group_by", "regions", "region_sources", "cam", "classes", "overall", "flagged_classes",
            "gate", "validation", "counterfactual", "stats", "sanity", "tokens", "flagged_tokens", "timing",
            "text_detection"]
#: Added by issue 13 (scale): per-image reuse, OOM batch splits, the executor that ran the chunks.
SCALE = ["incremental", "oom", "executor"]


def table(spec: dict[str, tuple]) -> pd.DataFrame:
    return pd.DataFrame([r for c, (n, m, a) in spec.items() for r in image_rows(c, n, m, a, spread=0.3)])


def test_summarise_builds_the_contract_from_a_real_table():
    cfg = audit_config()
    images = table({"comedy": (20, 0.2, 0.1), "horror": (20, 0.5, 0.1)})
    s = summarise(cfg, images, make_errors(3), CLASSES, "label", validation_result(), run_id="r1",
                  target_layer="layer4", device="cpu", run_stats={"n_degenerate": 2, "text_detected": 40})
    d = s.to_dict()
    assert list(d) == [*CONTRACT, *SCALE]
    assert (d["n_images"], d["n_failed"], d["n_degenerate"], d["text_detection"]) == (42, 3, 2, {"text_detected": 40})
    assert d["flagged_classes"] == ["horror"] and d["gate"]["passed"] is False
    assert [f["class"] for f in d["gate"]["failures"]] == ["horror"]
    assert set(d["classes"]) == set(CLASSES) and d["classes"]["drama"]["n"] == 0  # every model class appears
    assert {"flagged", "flag_reasons"} <= set(d["classes"]["comedy"]) and "flagged" not in d["overall"]
    assert d["cam"] == {"method": "gradcam", "target": "predicted", "target_layer": "layer4", "device": "cpu",
                        "layers": None, "k": None, "reshape": "auto"}
    assert d["tokens"] == [] and d["flagged_tokens"] == [] and d["sanity"] is None
    # Typed reads: declared fields and the per-region keys alike.
    assert s.classes["horror"].flagged and s.classes["horror"].get("text_lift") == d["classes"]["horror"]["text_lift"]
    assert s.gate.failures[0].class_ == "horror" and s.gate.failures[0].get("lower") is not None
    # summary.json round-trips into the same typed summary.
    assert Summary.model_validate_json(json.dumps(d)).to_dict() == d


def test_finalize_run_without_prefect_writes_the_files_and_fails_on_invalid_tables(tmp_path: Path):
    cfg = audit_config(output={"dir": str(tmp_path)}, tokens={"enabled": False})
    images = table({"comedy": (10, 0.2, 0.1), "drama": (10, 0.1, 0.1)})
    images.loc[0, "text_mass"] = 1.5  # outside [0, 1]: the result tables cannot be trusted
    folder = RunFolder(tmp_path, cfg.name, "r1")
    folder.write_part(0, images.reindex(columns=list(row_columns(cfg))).astype(row_columns(cfg)))
    merge_run_tables(cfg, folder, [{"path": "x.jpg", "stage": "decode", "reason": "broken"}])
    entries = [Entry(p, lab) for p, lab in zip(images["path"], images["label"])]
    plan = Plan(config=cfg, index=DatasetIndex(Path("posters"), entries, CLASSES, True), classes=CLASSES,
                target_layer="layer4", device="cpu", model_fingerprint="f")
    done = finalize_run(cfg, plan, folder, "r1", {"n_degenerate": 2}, None, None, "label", started=0.0)
    written = json.loads(folder.summary.read_text())
    # a whole run also says which CAM variants ran and which export files it wrote (issue 11), is
    # compared with the audit's earlier runs (issue 13; none yet: the first run), and a labelled run with
    # failure analysis on (the default) adds its 'failures' section
    assert written == done.summary.to_dict() and list(written) == [*CONTRACT, *SCALE, "layers", "targets", "exports", "history", "failures"]
    assert (written["layers"], written["targets"]) == (None, None) and written["exports"]["regions"] == "regions.parquet"
    assert written["history"]["previous"] is None and written["history"]["n_earlier_runs"] == 0
    assert written["failures"]["n_errors"] == 0 and folder.failures.is_file()
    assert json.loads(folder.validation.read_text())["success"] is False
    assert written["validation"]["success"] is False and written["n_failed"] == 1
    assert written["gate"]["passed"] is False
    assert written["gate"]["failures"][-1] == {"class": None, "rule": "validation",
                                               "value": written["validation"]["n_failed"], "threshold": 0}
