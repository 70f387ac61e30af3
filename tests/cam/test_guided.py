"""Guided Grad-CAM: agreement with pytorch-grad-cam's guided backprop, no lasting change to the model."""

from __future__ import annotations

import copy

import pytest
import torch
import torchvision
from torch import nn

from auditors.cam import CamEngine, CamParameterError
from auditors.cam.guided import guided_map
from tests.cam.test_engine import SmallVGG

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def resnet() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=6).eval()


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    return torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(4))


def _reference_guided(model: nn.Module, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """pytorch-grad-cam's guided backprop (it swaps ReLU modules), one image at a time, on a copy."""
    from pytorch_grad_cam import GuidedBackpropReLUModel

    gb = GuidedBackpropReLUModel(copy.deepcopy(model), device=torch.device("cpu"))
    out = [torch.from_numpy(gb(x[i : i + 1].clone(), target_category=int(targets[i]))).permute(2, 0, 1) for i in range(len(x))]
    return torch.stack(out)


@pytest.mark.parametrize("arch", ["resnet", "vgg"])
def test_guided_gradcam_equals_reference_guided_backprop_times_plain_gradcam(arch, resnet, x):
    # SmallVGG has ReLUs in its head, AFTER the target layer: if the gates guided the gradient
    # that Grad-CAM's weights come from, the Grad-CAM factor below would not match.
    torch.manual_seed(1)
    model = resnet if arch == "resnet" else SmallVGG(6).eval()
    layer = "layer4" if arch == "resnet" else "features"
    plain = CamEngine(model, layer, input_size=(64, 64), gradient="autograd").compute(x)
    guided = CamEngine(model, layer, input_size=(64, 64), method="guided_gradcam").compute(x)
    assert guided.maps.shape == (3, 64, 64), "a full-resolution map"
    assert torch.equal(guided.targets, plain.targets)
    expected = guided_map(plain.maps, _reference_guided(model, x, plain.targets))
    torch.testing.assert_close(guided.maps, expected, rtol=1e-4, atol=1e-6 * float(expected.max()))
    # guidance matters: the plain input gradient gives a different map
    assert not torch.allclose(guided.maps, guided_map(plain.maps, _plain_input_grad(model, x, plain.targets)), rtol=1e-2)


def _plain_input_grad(model: nn.Module, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    xin = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(model(xin).gather(1, targets[:, None]).sum(), xin)
    return g


def test_batched_equals_one_by_one_and_topk_rank0(resnet, x):
    engine = CamEngine(resnet, "layer4", input_size=(64, 64), method="guided_gradcam")
    batch = engine.compute(x)
    for i in range(len(x)):
        torch.testing.assert_close(engine.compute(x[i : i + 1]).maps[0], batch.maps[i], rtol=1e-4, atol=1e-9)
    top = engine.compute_topk(x, 2)
    assert top.maps.shape == (3, 2, 64, 64)
    torch.testing.assert_close(top.maps[:, 0], batch.maps, rtol=1e-4, atol=1e-9)
    second = engine.compute(x, top.classes[:, 1])
    torch.testing.assert_close(top.maps[:, 1], second.maps, rtol=1e-4, atol=1e-9)


def test_the_users_model_is_never_changed(x):
    torch.manual_seed(2)
    model = SmallVGG(6).eval()  # in-place ReLUs, trainable parameters
    state = copy.deepcopy(model.state_dict())
    relus_before = [(n, type(m), m.inplace) for n, m in model.named_modules() if isinstance(m, nn.ReLU)]
    targets = torch.tensor([0, 1, 2])
    grad_before = _plain_input_grad(model, x, targets)

    engine = CamEngine(model, "features", input_size=(64, 64), method="guided_gradcam")
    engine.compute(x)
    engine.compute_topk(x, 3)
    with pytest.raises(CamParameterError):  # fails after the forward, inside the hooked block
        engine.compute_topk(x, 7)
    with pytest.raises(RuntimeError):  # fails in the middle of the forward
        engine.compute(torch.randn(1, 5, 64, 64))

    assert all(not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks for m in model.modules())
    assert [(n, type(m), m.inplace) for n, m in model.named_modules() if isinstance(m, nn.ReLU)] == relus_before
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    # ReLU behaviour restored: ordinary backprop gives exactly the ordinary gradient again
    assert torch.equal(_plain_input_grad(model, x, targets), grad_before)


def test_model_without_relu_modules_is_a_clear_error():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.GELU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)).eval()
    engine = CamEngine(model, "0", input_size=(16, 16), method="guided_gradcam")
    with pytest.raises(CamParameterError, match="nn.ReLU"):
        engine.compute(torch.randn(1, 3, 16, 16))
    assert not any(m._forward_hooks for m in model.modules())
