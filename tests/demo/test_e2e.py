"""The embedded demo end to end: a planted shortcut must be caught, the control must not be.

Trains the two demo CNNs (cached for the session), runs both audits through the real Prefect
flow with real EasyOCR and Great Expectations, and checks the verdicts of issues #2, #5 and #6.
"""

import json

import pandas as pd
import pytest

from auditors.demo.posters import BADGE_CLASS
from flows.demo import run_demo

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]


@pytest.fixture(scope="module")
def demo_runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("demo")
    shortcut, control = run_demo(base / "reports", progress=False, demo_dir=base / "assets", cache_dir=base / "cache")
    return shortcut, control


def test_shortcut_badge_class_is_flagged_and_control_is_not(demo_runs):
    shortcut, control = demo_runs
    s, c = shortcut.summary, control.summary
    assert s["name"] == "demo-shortcut" and c["name"] == "demo-control"
    assert BADGE_CLASS in s["flagged_classes"], s["gate"]
    assert not shortcut.passed and control.passed, c["gate"]
    lift = s["classes"][BADGE_CLASS]["text_lift"]
    assert s["classes"][BADGE_CLASS]["text_lift_ci"][0] > 2.0
    assert all(v["text_lift"] < 2.0 for v in c["classes"].values())
    assert lift > max(v["text_lift"] for v in c["classes"].values())
    for run in demo_runs:
        assert (run.run_dir / "report.html").stat().st_size > 10_000
        assert json.loads((run.run_dir / "validation.json").read_text())["success"]


def test_text_effect_separates_shortcut_from_control(demo_runs):
    """Issue #5: removing the text matters beyond a matched placebo for the shortcut only."""
    shortcut, control = demo_runs
    s = shortcut.summary["classes"][BADGE_CLASS]
    assert s["text_effect_ci"][0] > 0, s
    assert s["flip_rate_text_removed"] > s["flip_rate_placebo"] + 0.2, s
    c = control.summary["classes"][BADGE_CLASS]
    lo, hi = c["text_effect_ci"]
    # No evidence that the control needs the text: the interval does not reach the 0.05 threshold
    # and starts at or below zero (measured: slightly negative, the placebo costs a bit more).
    assert lo <= 0 and hi < 0.05, c
    assert c["flip_rate_text_removed"] < s["flip_rate_text_removed"]
    images = pd.read_parquet(shortcut.run_dir / "images.parquet")
    assert {"text_removed_pred", "text_placebo_pred", "text_effect", "text_placebo_overlap"} <= set(images.columns)


def test_badge_token_ranks_first_and_titles_are_not_flagged(demo_runs):
    """Issue #6: the recurring badge is the top, flagged token; title words are not flagged."""
    shortcut, control = demo_runs
    tokens = shortcut.summary["tokens"]
    top = tokens[0]
    assert top["top_class"] == BADGE_CLASS and top["flagged"], tokens[:3]
    # issue 10: both findings, kept apart; the misreads of the badge are the same token
    assert top["token"] == "text:new" and top["associated"] and top["dependent"], top
    assert top["finding"] == "model dependence; data association + attention" and top["effect_q_value"] < 0.025
    assert top["effect_ci"] is not None and top["effect_ci"][0] > 0
    assert all(not t["flagged"] for t in tokens[1:]), [t for t in tokens[1:] if t["flagged"]]
    assert shortcut.summary["flagged_tokens"] == [top["token"]]
    instances = pd.read_parquet(shortcut.run_dir / "text_instances.parquet")
    assert {"path", "instance", "polygon", "score", "mass", "lift", "token"} <= set(instances.columns)
    assert not any(t["flagged"] for t in control.summary["tokens"])
