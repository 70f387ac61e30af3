"""History: three real audit runs, the index page, the change against earlier runs and the
regression rule (a model that moves its attention onto the text fails it)."""

from __future__ import annotations

import json
import re

import pytest
import torch

from auditors.config import config_from_dict
from auditors.errors import ConfigError
from flows.audit import run_audit
from tests.browser import chromium_driver, console_errors, open_file

pytestmark = [pytest.mark.usefixtures("prefect_server"), pytest.mark.slow]


class _Detector(torch.nn.Module):
    """One 3x3 conv that responds to dark (sign=-1: printed text) or bright (sign=+1: background)
    pixels, GAP, and a head with positive weights: the Grad-CAM of every class is that map."""

    def __init__(self, sign: float):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 1, 3, padding=1)
        self.fc = torch.nn.Linear(1, 3)
        with torch.no_grad():
            self.conv.weight.fill_(sign / 27.0)
            self.conv.bias.zero_()
            self.fc.weight.copy_(torch.tensor([[1.0], [2.0], [3.0]]))
            self.fc.bias.copy_(torch.tensor([0.0, -0.5, -1.0]))

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))


def build_background_model() -> torch.nn.Module:
    return _Detector(+1.0)


def build_text_model() -> torch.nn.Module:
    return _Detector(-1.0)


def _config(root, tmp_path, factory: str, **gate):
    return config_from_dict({
        "name": "nightly",
        "dataset": {"root": str(root)},
        "model": {"factory": f"tests.history.test_history_flow:{factory}", "input_size": [64, 64], "classes": ["alpha", "beta", "gamma"]},
        "cam": {"batch_size": 6},
        "tokens": {"enabled": False},
        "sanity": {"enabled": False},
        "stats": {"bootstrap": 400},
        # 4 posters per class: below the default class floor (issue 10), which this regression test is not about
        "gate": {"max_text_lift": 1000.0, "baseline": "previous", "max_lift_increase": 0.5, "min_images_per_class": 1, **gate},
        "output": {"dir": str(tmp_path / "out"), "cache_dir": str(tmp_path / "cache"), "gallery_size": 2},
        "run": {"chunk_size": 12, "cache": False},
    })


def test_three_runs_index_trends_and_regression_rule(poster_folder, tmp_path):
    first = run_audit(_config(poster_folder, tmp_path, "build_background_model"))
    assert first.passed, first.summary["gate"]
    assert first.summary["history"]["previous"] is None and first.summary["history"]["n_earlier_runs"] == 0
    assert first.summary["gate"]["regression"]["baseline_run"] is None

    second = run_audit(_config(poster_folder, tmp_path, "build_background_model"))
    prev = second.summary["history"]["previous"]
    assert prev["run_id"] == first.run_dir.name
    for cls, change in prev["classes"].items():
        lift = change["text_lift"]
        assert lift["method"] == "bootstrap"
        assert lift["delta"] == pytest.approx(0.0, abs=1e-9), "same model, same images"
        lo, hi = lift["delta_ci"]
        assert lo <= 0.0 <= hi
    assert second.passed, second.summary["gate"]["failures"]

    # The "worse" model attends to the printed words: its text lift is far above the previous run's.
    third = run_audit(_config(poster_folder, tmp_path, "build_text_model"))
    assert not third.passed
    regress = [f for f in third.summary["gate"]["failures"] if f["rule"] == "regression_text_lift"]
    assert {f["class"] for f in regress} == {"alpha", "beta", "gamma"}
    for f in regress:
        assert f["baseline_run"] == second.run_dir.name and f["lower"] > 0.5
        assert f["current_value"] > 1.0 > f["baseline_value"]
    assert all(f["rule"].startswith("regression_") for f in third.summary["gate"]["failures"]), "only the regression rule fails"
    assert set(third.summary["flagged_classes"]) == {"alpha", "beta", "gamma"}
    on_disk = json.loads((third.run_dir / "summary.json").read_text())
    assert on_disk["history"]["baseline"]["run_id"] == second.run_dir.name

    # The report shows the change, the verdict names the regression.
    report = third.report.read_text()
    assert 'id="history"' in report and second.run_dir.name in report
    assert "rose from" in report and "since run " + second.run_dir.name in report

    # index.html lists all three runs, newest first, with a trend SVG per class.
    index = (tmp_path / "out" / "nightly" / "index.html")
    html = index.read_text()
    ids = re.findall(r'<tr class="run" data-run="([^"]+)"', html)
    assert ids == [third.run_dir.name, second.run_dir.name, first.run_dir.name]
    assert html.count('<tr class="trend-row">') == 3
    assert html.count('<svg class="trend"') == 3  # text lift only: no counterfactuals, no effect column
    assert html.count('<circle class="pt"') == 9  # 3 classes x 3 runs
    assert "http://" not in html.replace("http://www.w3.org/2000/svg", "") and "https://" not in html
    assert "script-src &#39;none&#39;" in html  # the CSP meta: no script may run at all
    assert ">failed<" in html and ">passed<" in html

    with chromium_driver() as driver:
        open_file(driver, index)
        assert console_errors(driver) == []
        rows = driver.find_elements("css selector", "tr.run")
        assert len(rows) == 3
        svg = driver.find_element("css selector", "svg.trend")
        assert svg.size["width"] == 240 and svg.size["height"] == 64
        link = driver.find_element("css selector", "tr.run a")
        assert link.get_attribute("href").endswith(f"{third.run_dir.name}/report.html")
        open_file(driver, third.report)
        assert console_errors(driver) == []
        assert driver.find_element("css selector", "#history").is_displayed()

    # A pinned baseline: compare against the first run by id.
    pinned = run_audit(_config(poster_folder, tmp_path, "build_text_model", baseline=first.run_dir.name))
    base = pinned.summary["history"]["baseline"]
    assert base["run_id"] == first.run_dir.name and base["pinned"] is True
    assert pinned.summary["history"]["previous"]["run_id"] == third.run_dir.name
    assert not pinned.passed and {f["baseline_run"] for f in pinned.summary["gate"]["failures"]} == {first.run_dir.name}


def test_pinned_baseline_that_does_not_exist_stops_before_the_run(poster_folder, tmp_path):
    from auditors.audit.plan import make_plan

    cfg = _config(poster_folder, tmp_path, "build_background_model", baseline="20990101T000000Z-beef")
    with pytest.raises(ConfigError, match=r"gate.baseline: run '20990101T000000Z-beef' not found"):
        make_plan(cfg)
    assert not (tmp_path / "out" / "nightly").exists()
