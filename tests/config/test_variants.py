"""Config keys of the CAM variants: schema, and the plan's checks against the real model."""

from __future__ import annotations

import pytest

from auditors.audit.plan import make_plan
from auditors.config import config_from_dict
from auditors.errors import ConfigError


def _cfg(root, tmp_path, cam=None, model=None, output=None):
    return config_from_dict({
        "name": "v",
        "dataset": {"root": str(root)},
        "model": {"factory": "tests.conftest:build_tiny_cnn", "input_size": [32, 32], **(model or {})},
        "cam": cam or {},
        "output": {"dir": str(tmp_path / "out"), **(output or {})},
    })


def test_defaults_keep_one_layer_and_the_predicted_target(poster_folder, tmp_path):
    cfg = _cfg(poster_folder, tmp_path)
    assert (cfg.cam.layers, cfg.cam.target, cfg.model.reshape, cfg.output.save_cams) == (None, "predicted", "auto", False)
    from auditors.audit.tables import row_columns

    assert not any("@" in c or c == "target_rank" for c in row_columns(cfg))


@pytest.mark.parametrize(
    "cam,model,match",
    [
        ({"layers": ["features", "features"]}, {}, "lists a layer twice"),
        ({"layers": []}, {}, "at least 1"),
        ({"method": "guided"}, {}, "guided_gradcam"),
        ({"k": 0}, {}, "greater than or equal to 1"),
        ({}, {"reshape": "tokens"}, "'auto', 'none', 'vit' or 'swin'"),
    ],
)
def test_schema_rejects_bad_values(poster_folder, tmp_path, cam, model, match):
    with pytest.raises(ConfigError, match=match):
        _cfg(poster_folder, tmp_path, cam, model)


def test_plan_checks_layers_and_k_against_the_model(poster_folder, tmp_path):
    plan = make_plan(_cfg(poster_folder, tmp_path, {"target": "topk", "k": 3, "layers": ["features.0", "features"],
                                                    "method": "guided_gradcam"}))
    assert plan.target_layer == "features"
    with pytest.raises(ConfigError, match="cam.k: 4 exceeds the number of classes"):
        make_plan(_cfg(poster_folder, tmp_path, {"target": "topk", "k": 4}))
    with pytest.raises(ConfigError, match="cam.layers: no module named 'feature'"):
        make_plan(_cfg(poster_folder, tmp_path, {"layers": ["feature"]}))
    with pytest.raises(ConfigError, match="reshape: vit"):
        make_plan(_cfg(poster_folder, tmp_path, model={"reshape": "vit", "target_layer": "features"}))
