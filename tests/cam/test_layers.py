"""Target-layer auto-detection, GAP + linear head detection and reshape transforms."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from auditors.cam import (
    CamEngine,
    CamParameterError,
    detect_target,
    find_target_layer,
    get_module,
    nhwc_to_nchw,
    vit_reshape_transform,
)
from auditors.errors import ConfigError


pytestmark = pytest.mark.usefixtures("one_torch_thread")


class ConvGapLinear(nn.Module):
    """Last conv feeds a functional global average pool and a linear layer."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 12, 3, stride=2, padding=1))
        self.fc = nn.Linear(12, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(nn.functional.adaptive_avg_pool2d(self.body(x), 1).flatten(1))


# Shapes only: built and run on the meta device, so even VGG/ConvNeXt cost nothing.
@pytest.mark.parametrize(
    "arch,expected",
    [
        ("resnet18", "layer4"),
        ("resnet50", "layer4"),
        ("vgg11", "features"),  # not avgpool: adaptive pooling layers are skipped
        ("densenet121", "features"),
        ("mobilenet_v2", "features"),
        ("mobilenet_v3_small", "features"),
        ("efficientnet_b0", "features"),
        ("convnext_tiny", "features"),
        ("swin_t", "permute"),  # the first NCHW view of the last stage
    ],
)
def test_auto_detects_last_spatial_layer_of_torchvision_cnns(arch, expected):
    with torch.device("meta"):
        model = getattr(torchvision.models, arch)().eval()
    name, transform = detect_target(model, (224, 224), "meta")
    assert (name, transform) == (expected, None)


def test_auto_detects_custom_conv_gap_linear():
    assert find_target_layer(ConvGapLinear().eval(), (32, 32)) == "body"
    engine = CamEngine(ConvGapLinear().eval(), input_size=(32, 32))
    assert engine.target_layer == "body" and engine.gradient_source == "analytic"
    assert engine.compute(torch.randn(2, 3, 32, 32)).maps.shape == (2, 16, 16)


class SharedActivation(nn.Module):
    """EfficientNet-style: one activation module called after the stem and after the head conv."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.head = nn.Conv2d(8, 16, 3, padding=1)
        self.bn = nn.BatchNorm2d(16)
        self.act = nn.SiLU()
        self.fc = nn.Linear(16, 2)

    def forward(self, x):
        x = self.act(self.stem(x))
        x = self.act(self.bn(self.head(x)))
        return self.fc(x.mean((2, 3)))


def test_a_module_that_runs_twice_is_never_auto_detected():
    """The shared activation runs last, but its output is two different maps: the engine's hook
    would fire twice. Auto-detection takes the last layer that runs once (and the engine works)."""
    model = SharedActivation().eval()
    assert find_target_layer(model, (16, 16)) == "bn"
    assert CamEngine(model, input_size=(16, 16)).compute(torch.randn(2, 3, 16, 16)).maps.shape == (2, 16, 16)


def test_vit_detection_gives_ln_1_and_token_transform():
    with torch.device("meta"):
        model = torchvision.models.vit_b_16().eval()
    name, transform = detect_target(model, (224, 224), "meta")
    assert name == "encoder.layers.encoder_layer_11.ln_1"
    assert isinstance(get_module(model, name), nn.LayerNorm)
    assert transform(torch.zeros(2, 197, 768)).shape == (2, 768, 14, 14)


def test_get_module_error_lists_similar_names():
    model = ConvGapLinear()
    assert get_module(model, "body.2") is model.body[2]
    with pytest.raises(ConfigError, match=r"no module named 'body.7'.*similar"):
        get_module(model, "body.7")


def test_no_spatial_layer_is_a_clear_error():
    with pytest.raises(ConfigError, match="could not auto-detect"):
        find_target_layer(nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 2)), (8, 8))


def test_vit_reshape_transform_layout():
    grid = torch.arange(2 * 6 * 4, dtype=torch.float32).reshape(2, 6, 4)  # (B, h*w, C), 2x3 grid
    tokens = torch.cat([torch.full((2, 1, 4), -1.0), grid], dim=1)
    out = vit_reshape_transform((2, 3))(tokens)
    assert out.shape == (2, 4, 2, 3)
    # channel c at row r, column q is token 1 + r*3 + q (row-major patches, class token dropped)
    assert torch.equal(out[1, 2, 1, 0], tokens[1, 1 + 3, 2])
    assert torch.equal(vit_reshape_transform((2, 3), has_cls_token=False)(grid), out)
    # leading dims (batched gradients) are kept
    assert vit_reshape_transform((2, 3))(tokens.expand(5, 2, 7, 4)).shape == (5, 2, 4, 2, 3)
    with pytest.raises(CamParameterError, match=r"expects \(\.\.\., 7, C\)"):
        vit_reshape_transform((2, 3))(grid)
    with pytest.raises(CamParameterError, match="grid_hw"):
        vit_reshape_transform((0, 3))
    assert nhwc_to_nchw(torch.zeros(2, 5, 6, 7)).shape == (2, 7, 5, 6)


def test_head_detection_on_torchvision_models():
    """Closed form exactly where the head is GAP + Linear; autograd where anything sits between."""
    expect = {
        "resnet18": ("layer4", "analytic"),
        "mobilenet_v2": ("features", "analytic"),
        "efficientnet_b0": ("features", "analytic"),
        "densenet121": ("features", "autograd"),  # F.relu between features and the pool
        "convnext_tiny": ("features", "autograd"),  # LayerNorm2d after the pool
        "swin_t": ("permute", "analytic"),
    }
    torch.manual_seed(0)
    for arch, (layer, source) in expect.items():
        model = getattr(torchvision.models, arch)(num_classes=10).eval().requires_grad_(False)
        engine = CamEngine(model, input_size=(64, 64))
        assert (engine.target_layer, engine.gradient_source) == (layer, source), (arch, engine.head_reason)
        batch = engine.compute(torch.randn(1, 3, 64, 64))
        assert batch.maps.shape == (1, 2, 2) and batch.logits.shape == (1, 10)
