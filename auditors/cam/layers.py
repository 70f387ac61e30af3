"""Target-layer lookup: by dotted name, or the last spatial layer found by one dummy forward."""

from __future__ import annotations

import difflib
from collections.abc import Callable

import torch
from torch import Tensor, nn

from auditors.cam.reshape import vit_reshape_transform
from auditors.errors import ConfigError

__all__ = ["get_module", "find_target_layer", "detect_target"]

# Resamplers to a fixed size (VGG's AdaptiveAvgPool2d((7, 7))) are not features: a CAM there
# is the previous layer's map, replicated or pooled.
_SKIPPED = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


def get_module(model: nn.Module, name: str) -> nn.Module:
    """Return ``model``'s sub-module at dotted ``name`` or raise a ConfigError listing close names."""
    modules = dict(model.named_modules())
    if name in modules:
        return modules[name]
    names = [n for n in modules if n]
    parent = name.rpartition(".")[0]
    siblings = [n for n in names if n.rpartition(".")[0] == parent][:8] if parent in modules else []
    close = siblings or difflib.get_close_matches(name, names, n=8, cutoff=0.6)
    raise ConfigError(f"model.target_layer: no module named {name!r}" + (f"; similar: {close}" if close else ""))


@torch.no_grad()
def find_target_layer(model: nn.Module, input_size: tuple[int, int], device: torch.device | str = "cpu") -> str:
    """Name of the last module (in execution order) whose output is a spatial NCHW map.

    Forward hooks of a container fire after its children, so for a ResNet this returns
    ``layer4`` (the whole last stage) rather than its last inner convolution. Adaptive pooling
    layers are skipped (VGG: ``features``, not ``avgpool``).
    """
    finished: list[tuple[str, tuple[int, ...]]] = []
    handles = []
    for name, module in model.named_modules():
        if not name or isinstance(module, _SKIPPED):
            continue

        def hook(_m, _inp, out, name=name):
            if isinstance(out, torch.Tensor) and out.ndim == 4 and out.shape[-1] > 1 and out.shape[-2] > 1:
                finished.append((name, tuple(out.shape)))

        handles.append(module.register_forward_hook(hook))
    was_training = model.training
    try:
        model.eval()
        model(torch.zeros(1, 3, *input_size, device=device))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    if not finished:
        raise ConfigError(
            "model.target_layer: could not auto-detect a spatial layer (no module returns an NCHW map "
            "larger than 1x1); set model.target_layer to a dotted module name"
        )
    return finished[-1][0]


def _is_torchvision_vit(model: nn.Module) -> bool:
    try:
        from torchvision.models import VisionTransformer
    except ImportError:  # pragma: no cover - torchvision is a dependency
        return False
    return isinstance(model, VisionTransformer)


def detect_target(
    model: nn.Module, input_size: tuple[int, int], device: torch.device | str = "cpu"
) -> tuple[str, Callable[[Tensor], Tensor] | None]:
    """Default (target layer, reshape transform) for ``model``.

    torchvision ViT: ``ln_1`` of the last encoder block with a 1+h*w token transform. Not the
    block's output: only the class token of that output reaches the head (the final LayerNorm is
    per token), so every patch token's gradient there is exactly zero and all maps would be
    degenerate. ``ln_1`` feeds the last self-attention, through which patch tokens reach the class
    token. Everything else: :func:`find_target_layer`, no transform.
    """
    if _is_torchvision_vit(model):
        blocks = list(model.encoder.layers.named_children())
        patch = int(model.patch_size)
        grid = (input_size[0] // patch, input_size[1] // patch)
        return f"encoder.layers.{blocks[-1][0]}.ln_1", vit_reshape_transform(grid, has_cls_token=True)
    return find_target_layer(model, input_size, device), None
