"""Several layers from one forward (cam.layers): equal to one engine per layer, at the cost of one pass."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from auditors.cam import CamEngine, CamParameterError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

LAYERS = ["layer2", "layer3", "layer4"]


@pytest.fixture(scope="module")
def resnet() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=6).eval().requires_grad_(False)


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    return torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(5))


def _forwards(model: nn.Module) -> list[int]:
    calls = [0]
    model.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


@pytest.mark.parametrize("method", ["gradcam", "hirescam", "gradcampp"])
def test_each_layer_equals_its_own_engine_in_one_forward(resnet, x, method):
    engine = CamEngine(resnet, "layer4", input_size=(64, 64), method=method, layers=LAYERS)
    calls = _forwards(resnet)
    try:
        batch = engine.compute(x)
        assert calls[0] == 1, "all layers from one forward"
    finally:
        resnet._forward_pre_hooks.clear()
    assert list(batch.layer_maps) == LAYERS
    sizes = {"layer2": 8, "layer3": 4, "layer4": 2}
    for name in LAYERS:
        ref = CamEngine(resnet, name, input_size=(64, 64), method=method, gradient="autograd").compute(x)
        assert batch.layer_maps[name].shape == (3, sizes[name], sizes[name])
        torch.testing.assert_close(batch.layer_maps[name], ref.maps, rtol=1e-5, atol=1e-8)
    # the primary map is the target layer's, and shallow layers really differ from it
    torch.testing.assert_close(batch.maps, batch.layer_maps["layer4"])
    assert not torch.allclose(
        nn.functional.interpolate(batch.layer_maps["layer2"][:, None], size=2, mode="area")[:, 0], batch.maps, rtol=0.1
    )


def test_topk_with_layers_equals_compute_classes(resnet, x):
    engine = CamEngine(resnet, "layer4", input_size=(64, 64), layers=["layer3", "layer2"])
    top = engine.compute_topk(x, 3)
    assert top.layer_maps["layer2"].shape == (3, 3, 8, 8)
    for rank in range(3):
        one = engine.compute(x, top.classes[:, rank])
        for name in ("layer2", "layer3"):
            torch.testing.assert_close(top.layer_maps[name][:, rank], one.layer_maps[name], rtol=1e-5, atol=1e-8)


def test_layers_errors_and_hooks_removed(resnet, x):
    with pytest.raises(CamParameterError, match="layers"):
        CamEngine(resnet, "layer4", input_size=(64, 64), layers="layer2")
    with pytest.raises(Exception, match="no module named 'layer9'"):
        CamEngine(resnet, "layer4", input_size=(64, 64), layers=["layer9"])
    with pytest.raises(CamParameterError, match="cannot use layers"):
        CamEngine(resnet, "layer4", input_size=(64, 64), method="cam", layers=["layer2"])
    # a module that runs but does not reach the logits
    model = _Branchy().eval()
    engine = CamEngine(model, "used", input_size=(16, 16), layers=["unused"])
    with pytest.raises(CamParameterError, match="'unused' does not influence"):
        engine.compute(torch.randn(2, 3, 16, 16))
    assert not any(m._forward_hooks for m in model.modules())


class _Branchy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.used = nn.Conv2d(3, 4, 3, padding=1)
        self.unused = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.unused(x)
        return self.fc(self.used(x).relu().mean(dim=(2, 3)))


@pytest.mark.parametrize("gradient", ["analytic", "autograd"])
def test_classes_chosen_from_the_logits_cost_one_forward(resnet, x, gradient):
    """compute_chosen: classes that depend on the prediction (predicted + true label, for failure
    analysis) from the forward that makes the prediction, equal to a second, separate pass."""
    engine = CamEngine(resnet, "layer4", input_size=(64, 64), gradient=gradient)
    labels = torch.tensor([5, 0, 2])
    calls = _forwards(resnet)
    try:
        both = engine.compute_chosen(x, lambda lg: torch.stack([lg.argmax(dim=1), labels], dim=1))
        assert calls[0] == 1, "prediction and both maps from one forward"
    finally:
        resnet._forward_pre_hooks.clear()
    single = engine.compute(x)
    assert torch.equal(both.classes[:, 0], single.targets) and both.classes[:, 1].tolist() == [5, 0, 2]
    assert torch.equal(both.maps, engine.compute_classes(x, both.classes).maps)
    torch.testing.assert_close(both.maps[:, 0], single.maps, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(both.maps[:, 1], engine.compute(x, labels).maps, rtol=1e-5, atol=1e-7)
    with pytest.raises(CamParameterError, match=r"\(batch, k\)"):
        engine.compute_chosen(x, lambda lg: lg.argmax(dim=1))
    with pytest.raises(CamParameterError, match=r"\[0, 6\)"):
        engine.compute_chosen(x, lambda lg: torch.full((3, 1), 6))
