"""Issue 10 end to end: the badge is named whether or not it is read, and whether or not the audited
data is biased. Real Prefect flow, real EasyOCR (CRAFT), the demo's CNNs trained in the session."""

import numpy as np
import pandas as pd
import pytest

from auditors.config import config_from_dict
from auditors.demo.assets import demo_config, prepare_demo, save_audit_set
from auditors.demo.posters import BADGE_CLASS, render_split
from flows.audit import run_audit

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    return prepare_demo(tmp_path_factory.mktemp("demo-assets"))


def _audit(assets, tmp_path, name: str, root=None, read: bool = True):
    data = demo_config(assets, "shortcut", tmp_path / "reports")
    data["name"] = name
    data["regions"]["text"]["read"] = read
    data["output"]["cache_dir"] = str(tmp_path / "cache")
    if root is not None:
        data["dataset"]["root"] = str(root)
    return run_audit(config_from_dict(data, source=name), progress=False)


def test_badge_is_one_top_flagged_token_without_recognition(assets, tmp_path):
    """Unread, the badge's crops used to split 33/6/3; now one visual token holds every badge image."""
    res = _audit(assets, tmp_path, "demo-unread", read=False)
    tokens = res.summary["tokens"]
    top = tokens[0]
    assert top["kind"] == "visual" and top["flagged"] and top["dependent"], tokens[:3]
    assert top["top_class"] == BADGE_CLASS and top["associated"]
    assert [t["token"] for t in tokens if t["flagged"]] == [top["token"]]
    instances = pd.read_parquet(res.run_dir / "text_instances.parquet")
    badge_images = instances.loc[instances["token"] == top["token"], "path"].nunique()
    assert top["n_images"] == badge_images == 42, "every poster with the badge (38 horror + 2 + 2) in one token"


def test_model_dependence_is_flagged_when_the_badge_is_balanced_across_classes(assets, tmp_path):
    """Audit data with the badge on 35% of every genre: no association, but the shortcut model
    still needs the badge, and that alone fails the gate."""
    posters = render_split(np.random.default_rng(123), "control", 40)
    save_audit_set(posters, tmp_path / "balanced")
    res = _audit(assets, tmp_path, "demo-balanced", root=tmp_path / "balanced")
    badge = next(t for t in res.summary["tokens"] if t["token"] == "text:new")
    assert badge["p_value"] > 0.5 and not badge["associated"], badge
    assert badge["dependent"] and badge["flagged"] and badge["finding"] == "model dependence", badge
    assert badge["effect_ci"][0] > 0.3 and badge["flip_rate_removed"] > badge["flip_rate_placebo"] + 0.5, badge
    assert not res.passed and any(f.get("token") == "text:new" for f in res.summary["gate"]["failures"])
