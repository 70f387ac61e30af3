from pathlib import Path

import pytest

from auditors.config import apply_overrides, config_from_dict, load_config
from auditors.errors import ConfigError

MINIMAL = {"name": "t", "dataset": {"root": "data"}, "model": {"arch": "resnet18"}}


def test_minimal_config_gets_documented_defaults():
    cfg = config_from_dict(MINIMAL)
    assert cfg.cam.method == "gradcam" and cfg.cam.target == "predicted" and cfg.cam.batch_size == 32
    assert cfg.regions.text.enabled and cfg.regions.border.width == 0.05
    assert cfg.gate.max_text_lift == 2.0 and cfg.counterfactual.enabled is False
    assert cfg.model.input_size == (224, 224)


@pytest.mark.parametrize(
    "patch, key",
    [
        ({"cam": {"batchsize": 3}}, "cam.batchsize"),
        ({"regions": {"text": {"enabled": True, "colour": 1}}}, "regions.text.colour"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_unknown_keys_are_errors_naming_the_key(patch, key):
    data = {**MINIMAL, **patch}
    with pytest.raises(ConfigError) as err:
        config_from_dict(data)
    assert f"{key}: unknown key" in str(err.value)


def test_invalid_values_name_the_key():
    with pytest.raises(ConfigError, match=r"cam\.batch_size"):
        config_from_dict({**MINIMAL, "cam": {"batch_size": 0}})
    with pytest.raises(ConfigError, match=r"cam\.device"):
        config_from_dict({**MINIMAL, "cam": {"device": "tpu"}})
    with pytest.raises(ConfigError, match=r"dataset: required key is missing"):
        config_from_dict({"name": "t", "model": {"arch": "resnet18"}})


def test_model_needs_exactly_one_source():
    with pytest.raises(ConfigError, match="exactly one of model.arch"):
        config_from_dict({**MINIMAL, "model": {"arch": "resnet18", "factory": "a:b"}})
    with pytest.raises(ConfigError, match="exactly one of model.arch"):
        config_from_dict({**MINIMAL, "model": {"classes": ["a"]}})


def test_overrides_parse_yaml_values_and_create_nested_keys():
    data = apply_overrides(MINIMAL, ["cam.batch_size=8", "regions.border.enabled=false", "model.classes=[a, b]"])
    cfg = config_from_dict(data)
    assert cfg.cam.batch_size == 8 and cfg.regions.border.enabled is False and cfg.model.classes == ["a", "b"]
    assert MINIMAL["model"] == {"arch": "resnet18"}, "overrides must not mutate the input"
    with pytest.raises(ConfigError, match="expected key.path=value"):
        apply_overrides(MINIMAL, ["cam.batch_size"])


def test_load_config_resolves_relative_paths_against_cwd(tmp_path, monkeypatch):
    cfg_file = tmp_path / "a.yaml"
    cfg_file.write_text("name: x\ndataset: {root: imgs}\nmodel: {arch: resnet18, checkpoint: w.pt}\n")
    monkeypatch.chdir(tmp_path)
    cfg = load_config(cfg_file)
    assert cfg.dataset.root == tmp_path / "imgs" and cfg.model.checkpoint == tmp_path / "w.pt"


def test_load_config_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match=str(bad)):
        load_config(bad)


@pytest.mark.parametrize("name", ["demo.yaml", "example.yaml"])
def test_shipped_configs_are_valid(name, monkeypatch, tmp_path):
    monkeypatch.setenv("CAMAUDIT_DEMO_DIR", str(tmp_path))
    load_config(Path(__file__).resolve().parents[2] / "configs" / name)


def test_demo_yaml_matches_what_camaudit_demo_runs(monkeypatch, tmp_path):
    """configs/demo.yaml documents the demo: it must not drift from the code that runs it."""
    from auditors.config import config_from_dict
    from auditors.demo.assets import DemoAssets, demo_config

    monkeypatch.setenv("CAMAUDIT_DEMO_DIR", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    from_file = load_config(Path(__file__).resolve().parents[2] / "configs" / "demo.yaml")
    assets = DemoAssets(tmp_path, tmp_path / "audit", tmp_path / "shortcut.pt", tmp_path / "control.pt")
    from_code = config_from_dict(demo_config(assets, "shortcut", Path("reports"))).resolve_paths(tmp_path)
    assert from_file == from_code


def test_environment_variables_expand_and_missing_ones_name_the_key(tmp_path, monkeypatch):
    f = tmp_path / "c.yaml"
    f.write_text("name: x\ndataset: {root: '${AUDIT_DATA}/imgs'}\nmodel: {arch: resnet18}\n")
    monkeypatch.setenv("AUDIT_DATA", str(tmp_path))
    assert load_config(f).dataset.root == tmp_path / "imgs"
    monkeypatch.delenv("AUDIT_DATA")
    with pytest.raises(ConfigError, match=r"dataset.root: environment variable AUDIT_DATA is not set"):
        load_config(f)
