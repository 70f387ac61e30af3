"""CamEngine: agreement with pytorch-grad-cam, closed forms, top-k, determinism, memory hygiene."""

from __future__ import annotations

import copy
import gc

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from auditors.cam import METHODS, CamEngine, CamParameterError, vit_reshape_transform

# Methods pytorch-grad-cam also implements, by its class name.
PGC_CLASSES = {
    "gradcam": "GradCAM",
    "gradcampp": "GradCAMPlusPlus",
    "xgradcam": "XGradCAM",
    "hirescam": "HiResCAM",
    "layercam": "LayerCAM",
}


class SmallVGG(nn.Module):
    """VGG-style: conv stack -> adaptive pool -> flatten -> MLP head (no GAP, so no closed form)."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(inplace=True),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((4, 4))
        self.classifier = nn.Sequential(
            nn.Linear(64 * 16, 64), nn.ReLU(inplace=True), nn.Dropout(), nn.Linear(64, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


class TinyGap(nn.Module):
    """conv -> ReLU -> GAP -> linear; ``zero=True`` makes the target layer output all zeros."""

    def __init__(self, zero: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.act = nn.ReLU()
        self.fc = nn.Linear(8, 4)
        if zero:
            nn.init.zeros_(self.conv.weight)
            nn.init.zeros_(self.conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.act(self.conv(x)).mean(dim=(2, 3)))


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _frozen(model: nn.Module) -> nn.Module:
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()


@pytest.fixture(scope="module")
def resnet18() -> nn.Module:
    torch.manual_seed(0)
    return _frozen(torchvision.models.resnet18(num_classes=20))


@pytest.fixture(scope="module")
def vgg() -> nn.Module:
    torch.manual_seed(1)
    return _frozen(SmallVGG())


@pytest.fixture(scope="module")
def x112() -> torch.Tensor:
    return torch.randn(3, 3, 112, 112, generator=torch.Generator().manual_seed(2))


@pytest.fixture(scope="module")
def x64() -> torch.Tensor:
    return torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(3))


def _norm(m: torch.Tensor) -> torch.Tensor:
    lo, hi = m.amin(dim=(-2, -1), keepdim=True), m.amax(dim=(-2, -1), keepdim=True)
    return (m - lo) / (hi - lo).clamp_min(1e-12)


def _pgc_maps(model: nn.Module, layer: nn.Module, method: str, x: torch.Tensor, targets, reshape=None) -> np.ndarray:
    """pytorch-grad-cam's output (min-max normalised, resized to the input with cv2)."""
    import pytorch_grad_cam
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    cls = getattr(pytorch_grad_cam, PGC_CLASSES[method])
    with cls(model=model, target_layers=[layer], reshape_transform=reshape) as cam:
        out = cam(input_tensor=x, targets=[ClassifierOutputTarget(int(c)) for c in targets])
    model.zero_grad(set_to_none=True)
    return out


def _pgc_style(maps: torch.Tensor, x: torch.Tensor) -> np.ndarray:
    """Our ReLU'd maps through pytorch-grad-cam's own post-processing (per layer, then aggregate)."""
    from pytorch_grad_cam.utils.image import scale_cam_image

    size = (x.shape[-1], x.shape[-2])
    return scale_cam_image(scale_cam_image(maps.detach().cpu().numpy(), size))


# ------------------------------------------------------------------ reference agreement
@pytest.fixture(scope="module")
def engines(resnet18, vgg) -> dict[tuple[str, str], CamEngine]:
    """One engine per (model, gradient source); tests switch ``engine.method``."""
    return {
        ("resnet18", "auto"): CamEngine(resnet18, "layer4", input_size=(112, 112)),
        ("resnet18", "autograd"): CamEngine(resnet18, "layer4", input_size=(112, 112), gradient="autograd"),
        ("vgg", "auto"): CamEngine(vgg, "features", input_size=(64, 64)),
    }


@pytest.fixture(scope="module")
def unfrozen(resnet18, vgg) -> dict[str, nn.Module]:
    """Trainable copies: pytorch-grad-cam fails on frozen parameters."""
    return {"resnet18": copy.deepcopy(resnet18).requires_grad_(True), "vgg": copy.deepcopy(vgg).requires_grad_(True)}


@pytest.mark.parametrize("method", sorted(PGC_CLASSES))
@pytest.mark.parametrize("arch,gradient", [("resnet18", "auto"), ("resnet18", "autograd"), ("vgg", "auto")])
def test_matches_pytorch_grad_cam(engines, unfrozen, arch, gradient, method, x112, x64):
    x = x112 if arch == "resnet18" else x64
    engine = engines[arch, gradient]
    engine.method = method
    assert engine.gradient_source == ("analytic" if (arch, gradient) == ("resnet18", "auto") else "autograd")
    targets = torch.tensor([0, 3, 7])
    ours = engine.compute(x, targets)
    assert not ours.degenerate.any()

    ref_model = unfrozen[arch]
    ref = _pgc_maps(ref_model, ref_model.get_submodule(engine.target_layer), method, x, targets.tolist())
    diff = np.abs(_pgc_style(ours.maps, x) - ref).max()
    assert diff <= 1e-4, f"{arch}/{method}/{gradient}: max abs diff {diff:.2e}"


def test_predicted_target_matches_pytorch_grad_cam(engines, unfrozen, x112):
    import pytorch_grad_cam

    engine = engines["resnet18", "autograd"]
    engine.method = "gradcam"
    ours = engine.compute(x112)
    assert torch.equal(ours.targets, ours.logits.argmax(1))
    ref_model = unfrozen["resnet18"]
    with pytorch_grad_cam.GradCAM(model=ref_model, target_layers=[ref_model.layer4]) as cam:
        ref = cam(input_tensor=x112, targets=None)
    ref_model.zero_grad(set_to_none=True)
    assert np.abs(_pgc_style(ours.maps, x112) - ref).max() <= 1e-4


# ------------------------------------------------------------------ closed forms
def test_cam_closed_form_equals_gradcam(resnet18, x112):
    cam = CamEngine(resnet18, method="cam", input_size=(112, 112)).compute(x112)
    grad = CamEngine(resnet18, method="gradcam", input_size=(112, 112), gradient="autograd").compute(x112)
    assert torch.equal(cam.targets, grad.targets)
    assert (_norm(cam.maps) - _norm(grad.maps)).abs().max() <= 1e-5
    # CAM proper (Zhou et al.): the fc row times the activation, no 1/(h*w)
    feats = {}
    h = resnet18.layer4.register_forward_hook(lambda _m, _i, o: feats.setdefault("a", o))
    with torch.no_grad():
        resnet18(x112)
    h.remove()
    expected = torch.relu(torch.einsum("bc,bchw->bhw", resnet18.fc.weight[cam.targets], feats["a"]))
    torch.testing.assert_close(cam.maps, expected, rtol=1e-5, atol=1e-5)


def test_cam_uses_no_autograd(resnet18, x112, monkeypatch):
    engine = CamEngine(resnet18, method="cam", input_size=(112, 112))

    def forbidden(*_a, **_k):
        raise AssertionError("autograd used")

    monkeypatch.setattr(torch.autograd, "grad", forbidden)
    monkeypatch.setattr(torch.Tensor, "backward", forbidden)
    batch = engine.compute(x112)
    assert batch.maps.shape == (3, 4, 4) and not batch.degenerate.any()
    assert engine.compute_topk(x112, 2).maps.shape == (3, 2, 4, 4)


@pytest.mark.parametrize("method", sorted(set(METHODS) - {"cam"}))
def test_analytic_gradient_equals_autograd(resnet18, x112, method):
    a = CamEngine(resnet18, method=method, input_size=(112, 112), gradient="analytic").compute(x112, 5)
    b = CamEngine(resnet18, method=method, input_size=(112, 112), gradient="autograd").compute(x112, 5)
    torch.testing.assert_close(a.maps, b.maps, rtol=1e-5, atol=1e-6 * float(b.maps.abs().max()) + 1e-12)
    torch.testing.assert_close(a.logits, b.logits)


def test_cam_not_applicable_is_a_clear_error(vgg, resnet18):
    with pytest.raises(CamParameterError, match="global-average-pool.*'classifier.3'"):
        CamEngine(vgg, method="cam", input_size=(64, 64))
    with pytest.raises(ValueError, match="layer3"):  # wrong layer: 256 channels vs fc's 512
        CamEngine(resnet18, "layer3", method="cam", input_size=(112, 112))
    with pytest.raises(CamParameterError, match="gradient-free"):
        CamEngine(resnet18, method="cam", gradient="autograd")
    # a ReLU between the target layer and the pool: logits match no closed form
    with pytest.raises(CamParameterError, match="not the closed form|global average"):
        CamEngine(_frozen(TinyGap()), "conv", method="cam", input_size=(16, 16))
    # "auto" falls back to autograd silently and says why
    engine = CamEngine(vgg, input_size=(64, 64))
    assert engine.gradient_source == "autograd" and "global average" in engine.head_reason


# ------------------------------------------------------------------ targets, top-k
def test_topk_in_one_pass_equals_separate_calls(resnet18, vgg, x64, monkeypatch):
    calls = []
    real_grad = torch.autograd.grad

    def spy(*args, **kwargs):
        calls.append(kwargs.get("is_grads_batched", False))
        return real_grad(*args, **kwargs)

    x = x64[:2]
    for model, gradient in [(resnet18, "autograd"), (resnet18, "analytic"), (vgg, "auto")]:
        for method in sorted(METHODS):
            if method == "cam" and gradient == "autograd" or method == "cam" and model is vgg:
                continue
            engine = CamEngine(model, method=method, input_size=tuple(x.shape[-2:]), gradient=gradient)
            calls.clear()
            monkeypatch.setattr(torch.autograd, "grad", spy)
            top = engine.compute_topk(x, 3)
            monkeypatch.setattr(torch.autograd, "grad", real_grad)
            assert calls == ([True] if engine.gradient_source == "autograd" else []), (gradient, calls)
            assert top.maps.shape == (2, 3, *top.maps.shape[-2:])
            assert torch.equal(top.classes, top.logits.topk(3, dim=1).indices)
            for j in range(3):
                single = engine.compute(x, top.classes[:, j])
                torch.testing.assert_close(top.maps[:, j], single.maps, rtol=1e-5, atol=1e-7)
                assert torch.equal(top.degenerate[:, j], single.degenerate)


def test_target_forms_and_errors(resnet18, x112):
    engine = CamEngine(resnet18, input_size=(112, 112))
    by_tensor = engine.compute(x112, torch.tensor([4, 4, 4]))
    assert torch.equal(engine.compute(x112, 4).maps, by_tensor.maps)
    assert torch.equal(engine.compute(x112, [4, 4, 4]).maps, by_tensor.maps)
    assert by_tensor.targets.tolist() == [4, 4, 4]
    assert torch.equal(engine.compute_classes(x112, torch.tensor([[4], [4], [4]])).maps[:, 0], by_tensor.maps)
    with pytest.raises(CamParameterError, match=r"\[0, 20\)"):
        engine.compute(x112, torch.tensor([0, 1, 20]))
    with pytest.raises(CamParameterError, match="one per image"):
        engine.compute(x112, torch.tensor([0, 1]))
    with pytest.raises(CamParameterError, match="integer"):
        engine.compute(x112, torch.tensor([0.0, 1.0, 2.0]))
    with pytest.raises(CamParameterError, match="k=21"):
        engine.compute_topk(x112, 21)
    with pytest.raises(CamParameterError, match="positive int"):
        engine.compute_topk(x112, 0)
    with pytest.raises(CamParameterError, match="batch, channels"):
        engine.compute(x112[0])
    assert torch.allclose(by_tensor.probs.sum(1), torch.ones(3))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"method": "gradcam++"}, "method='gradcam\\+\\+' is not valid"),
        ({"amp": "fp8"}, "amp"),
        ({"gradient": "numeric"}, "gradient"),
        ({"channels_last": "yes"}, "channels_last"),
        ({"input_size": (0, 224)}, "input_size"),
        ({"input_size": 224}, "input_size"),
        ({"reshape_transform": "vit"}, "reshape_transform"),
        ({"target_layer": "layer9"}, "no module named 'layer9'"),
    ],
)
def test_parameter_validation(resnet18, kwargs, match):
    with pytest.raises(ValueError if "target_layer" not in kwargs else Exception, match=match):
        CamEngine(resnet18, **kwargs)


# ------------------------------------------------------------------ determinism, formats, modes
@pytest.mark.parametrize("gradient", ["analytic", "autograd"])
def test_deterministic_on_cpu(resnet18, vgg, x112, x64, gradient):
    for model, x in [(resnet18, x112), (vgg, x64)]:
        if model is vgg and gradient == "analytic":
            continue
        engine = CamEngine(model, input_size=tuple(x.shape[-2:]), gradient=gradient)
        first, second = engine.compute(x), engine.compute(x)
        assert torch.equal(first.maps, second.maps) and torch.equal(first.logits, second.logits)
        top1, top2 = engine.compute_topk(x, 2), engine.compute_topk(x, 2)
        assert torch.equal(top1.maps, top2.maps)


@pytest.mark.parametrize("gradient", ["auto", "autograd"])
def test_channels_last_matches_default(x112, gradient):
    torch.manual_seed(0)
    model = _frozen(torchvision.models.resnet18(num_classes=20))
    ref = CamEngine(copy.deepcopy(model), input_size=(112, 112), gradient=gradient).compute(x112, 2)
    engine = CamEngine(model, input_size=(112, 112), channels_last=True, gradient=gradient)
    assert model.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    out = engine.compute(x112, 2)
    assert (_norm(out.maps) - _norm(ref.maps)).abs().max() <= 1e-4


def test_works_under_callers_inference_and_no_grad_modes(resnet18, vgg, x112, x64):
    for model, x in [(resnet18, x112), (vgg, x64)]:
        engine = CamEngine(model, input_size=tuple(x.shape[-2:]))
        ref = engine.compute(x)
        for mode in (torch.inference_mode, torch.no_grad):
            with mode():
                got = engine.compute(x)
            assert torch.equal(got.maps, ref.maps)
        ref.maps.div_(2)  # results are ordinary tensors: in-place use outside inference mode works
        assert not ref.maps.requires_grad and ref.maps.dtype == torch.float32


# ------------------------------------------------------------------ degenerate maps
def test_degenerate_zero_layer_and_nan_input(vgg, x64):
    zero = CamEngine(_frozen(TinyGap(zero=True)), "act", input_size=(16, 16), gradient="auto")
    assert zero.gradient_source == "autograd" and "all zero" in zero.head_reason
    batch = zero.compute(torch.randn(2, 3, 16, 16))
    assert batch.degenerate.all() and (batch.maps == 0).all()

    x = x64.clone()
    x[1] = float("nan")
    batch = CamEngine(vgg, input_size=(64, 64)).compute(x)
    assert batch.degenerate.tolist() == [False, True, False]


def test_negcam_is_gradcam_with_negated_gradient(resnet18, x112):
    pos = CamEngine(resnet18, method="gradcam", input_size=(112, 112), gradient="autograd").compute(x112, 3)
    neg = CamEngine(resnet18, method="negcam", input_size=(112, 112), gradient="autograd").compute(x112, 3)
    # negcam's raw map is minus Grad-CAM's: each pixel is positive in at most one of them
    assert not ((pos.maps > 0) & (neg.maps > 0)).any()
    assert ((pos.maps > 0) | (neg.maps > 0)).any()


# ------------------------------------------------------------------ memory hygiene
def test_no_param_grad_no_graph_and_hooks_removed(x64):
    torch.manual_seed(0)
    model = SmallVGG().eval()  # parameters left trainable on purpose
    engine = CamEngine(model, input_size=(64, 64))
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.shape) or t, lambda t: t):
        for method in sorted(set(METHODS) - {"cam"}):
            engine.method = method
            engine.compute(x64)
            engine.compute_topk(x64, 3)
    assert all(p.grad is None for p in model.parameters())
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    # only the head after the target layer is recorded: nothing of the conv stack is saved
    assert not any(len(s) == 4 and s[1] in (3, 16, 32) for s in saved), saved
    # the forward fails mid-way: hooks still removed
    with pytest.raises(RuntimeError):
        engine.compute(torch.randn(1, 5, 64, 64))
    assert not engine.layer._forward_hooks


@pytest.mark.parametrize("gradient", ["auto", "autograd"])
def test_memory_flat_over_many_batches(gradient):
    psutil = pytest.importorskip("psutil")
    torch.manual_seed(0)
    model = _frozen(TinyGap() if gradient == "auto" else SmallVGG())
    engine = CamEngine(model, input_size=(32, 32), gradient=gradient)
    assert engine.gradient_source == ("analytic" if gradient == "auto" else "autograd")
    x = torch.randn(4, 3, 32, 32)
    proc = psutil.Process()

    def n_tensors() -> int:
        gc.collect()
        return sum(1 for o in gc.get_objects() if type(o) is torch.Tensor or type(o) is nn.Parameter)

    def run(n: int) -> None:
        for i in range(n):
            engine.compute(x) if i % 2 else engine.compute_topk(x, 2)

    run(10)
    rss0, t0 = proc.memory_info().rss, n_tensors()
    run(200)
    growth = proc.memory_info().rss - rss0
    assert n_tensors() == t0
    assert growth < 8 * 2**20, f"RSS grew by {growth / 2**20:.1f} MiB over 200 batches"


# ------------------------------------------------------------------ token models
def test_vit_b_16_auto_detect_and_matches_pytorch_grad_cam():
    import pytorch_grad_cam

    torch.manual_seed(0)
    model = torchvision.models.vit_b_16().eval()
    nn.init.normal_(model.heads.head.weight, std=0.02)  # torchvision initialises the head to zeros
    engine = CamEngine(model)
    assert engine.target_layer == "encoder.layers.encoder_layer_11.ln_1"
    assert engine.gradient_source == "autograd"  # class-token head: no closed form
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(5))
    ours = engine.compute(x)
    assert ours.maps.shape == (1, 14, 14) and not ours.degenerate.any()
    # top-k through the token transform (batched gradients carry an extra leading dim)
    top = engine.compute_topk(x, 2)
    assert top.maps.shape == (1, 2, 14, 14) and int(top.classes[0, 0]) == int(ours.targets[0])
    torch.testing.assert_close(top.maps[:, 0], ours.maps, rtol=1e-5, atol=1e-7)
    assert all(p.grad is None for p in model.parameters())

    layer = model.encoder.layers[-1].ln_1
    with pytorch_grad_cam.GradCAM(model=model, target_layers=[layer], reshape_transform=vit_reshape_transform((14, 14))) as cam:
        ref = cam(input_tensor=x, targets=None)
    model.zero_grad(set_to_none=True)
    assert np.abs(_pgc_style(ours.maps, x) - ref).max() <= 1e-4

    # the last block's output: patch tokens get exactly zero gradient -> degenerate, and flagged
    last = CamEngine(model, "encoder.layers.encoder_layer_11", reshape_transform=vit_reshape_transform((14, 14)))
    assert last.compute(x).degenerate.all()
