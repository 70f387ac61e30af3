"""Token models from the config: model.reshape (auto / vit / swin / none) on small torchvision ViT and Swin."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
import torchvision
from torch import nn

from auditors.audit.plan import make_plan
from auditors.cam import nhwc_to_nchw, resolve_target, vit_grid
from auditors.config import config_from_dict
from auditors.errors import ConfigError
from auditors.models.engines import engine_for

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def build_tiny_vit() -> nn.Module:
    """64 px, 16 px patches (a 4x4 grid + class token), 2 blocks; factory for test configs."""
    torch.manual_seed(0)
    model = torchvision.models.VisionTransformer(
        image_size=64, patch_size=16, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32, num_classes=3
    )
    nn.init.normal_(model.heads.head.weight, std=0.5)  # torchvision initialises the head to zeros
    return model.eval()


def _tiny_swin() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.SwinTransformer(
        patch_size=[4, 4], embed_dim=8, depths=[1, 1], num_heads=[1, 1], window_size=[2, 2], num_classes=3
    ).eval()


def _cfg(root, tmp_path, sanity=False, **cam):
    return config_from_dict({
        "name": "vit",
        "dataset": {"root": str(root)},
        "model": {"factory": "tests.cam.test_vit_config:build_tiny_vit", "input_size": [64, 64]},
        "cam": {"batch_size": 4, **cam},
        "output": {"dir": str(tmp_path / "out"), "cache_dir": str(tmp_path / "cache"), "gallery_size": 2},
        "sanity": {"enabled": sanity, "n_images": 4},
        "tokens": {"enabled": False},
    })


def test_plan_and_engine_route_a_vit_to_its_token_layer_not_conv_proj(poster_folder, tmp_path):
    cfg = _cfg(poster_folder, tmp_path)
    plan = make_plan(cfg)
    assert plan.target_layer == "encoder.layers.encoder_layer_1.ln_1"
    engine = engine_for(plan.config.model, plan.config.cam, plan.target_layer, torch.device("cpu"))
    assert engine.reshape_transform is not None and engine.gradient_source == "autograd"
    out = engine.compute(torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(0)))
    assert out.maps.shape == (3, 4, 4) and not out.degenerate.any()


def test_explicit_reshape_modes_on_a_vit():
    model = build_tiny_vit()
    name, t = resolve_target(model, (64, 64), "cpu", "encoder.layers.encoder_layer_0", "auto")
    assert name == "encoder.layers.encoder_layer_0"
    assert t(torch.zeros(2, 17, 16)).shape == (2, 16, 4, 4)  # class token dropped, 4x4 grid
    assert resolve_target(model, (64, 64), "cpu", "encoder.layers.encoder_layer_0", "none")[1] is None
    assert resolve_target(model, (64, 64), "cpu", "conv_proj", "auto") == ("conv_proj", None)  # already NCHW
    with pytest.raises(ConfigError, match="not \\(batch, tokens, channels\\)"):
        resolve_target(model, (64, 64), "cpu", "conv_proj", "vit")
    with pytest.raises(ConfigError, match="swin"):
        resolve_target(model, (64, 64), "cpu", "encoder.layers.encoder_layer_0", "swin")
    with pytest.raises(ConfigError, match="set model.target_layer"):
        resolve_target(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.LazyLinear(2)), (64, 64), "cpu", None, "vit")


def test_vit_grid_reads_class_token_and_aspect_ratio():
    assert vit_grid(1 + 2 * 3, (32, 48)) == ((2, 3), True)
    assert vit_grid(2 * 3, (32, 48)) == ((2, 3), False)
    assert vit_grid(197, (224, 224)) == ((14, 14), True)
    with pytest.raises(ConfigError, match="patch grid"):
        vit_grid(11, (32, 48))


def test_swin_auto_detection_and_nhwc_stages():
    model = _tiny_swin()
    assert resolve_target(model, (32, 32), "cpu", None, "auto") == ("permute", None)
    name, t = resolve_target(model, (32, 32), "cpu", "features.1", "auto")
    assert t is nhwc_to_nchw
    from auditors.cam import CamEngine

    engine = CamEngine(model, name, input_size=(32, 32), reshape_transform=t, gradient="autograd")
    out = engine.compute(torch.randn(2, 3, 32, 32))
    assert out.maps.shape == (2, 8, 8) and not out.degenerate.any()


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server")
def test_vit_audit_runs_end_to_end_with_layers(poster_folder, tmp_path):
    from flows.audit import run_audit

    blocks = ["encoder.layers.encoder_layer_0.ln_1", "encoder.layers.encoder_layer_1.ln_1"]
    result = run_audit(_cfg(poster_folder, tmp_path, sanity=True, layers=blocks))
    assert result.summary["cam"]["target_layer"] == blocks[1]
    # the randomisation check rebuilds the engine for a 64 px ViT (it used to probe at 224 px and skip)
    assert result.summary["sanity"]["n_images"] == 4 and not result.summary["sanity"]["verdict"].startswith("skipped")
    images = pd.read_parquet(result.run_dir / "images.parquet")
    # an untrained 4x4-token ViT: a few Grad-CAM maps are legitimately all-negative ("zero")
    ok = images[images["cam_status"] == "ok"]
    assert len(images) == 12 and len(ok) >= 8 and set(images["cam_status"]) <= {"ok", "zero"}
    assert ok["text_lift"].notna().all()
    # the target layer listed in cam.layers reproduces the main columns exactly
    pd.testing.assert_series_equal(images["text_lift@" + blocks[1]], images["text_lift"], check_names=False)
    assert not images["text_mass@" + blocks[0]].equals(images["text_mass"])
    overall = result.summary["layers"]["overall"]
    assert set(overall) == set(blocks) and math.isclose(overall[blocks[1]]["text_lift"], result.summary["overall"]["text_lift"])
