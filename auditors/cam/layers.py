"""Target-layer lookup: by dotted name, or the last spatial layer found by one dummy forward."""

from __future__ import annotations

import difflib
from collections.abc import Callable

import torch
from torch import Tensor, nn

from auditors.cam.reshape import nhwc_to_nchw, vit_reshape_transform
from auditors.errors import ConfigError

__all__ = ["get_module", "find_target_layer", "detect_target", "resolve_target", "vit_grid", "RESHAPE_MODES"]

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
    layers are skipped (VGG: ``features``, not ``avgpool``). A module that runs more than once
    per forward (a shared activation such as EfficientNet's ``_swish``) is skipped too: its
    output is not one map, and the engine's hook would see it several times.
    """
    finished: list[tuple[str, tuple[int, ...]]] = []
    calls: dict[str, int] = {}
    handles = []
    for name, module in model.named_modules():
        if not name or isinstance(module, _SKIPPED):
            continue

        def hook(_m, _inp, out, name=name):
            calls[name] = calls.get(name, 0) + 1
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
    finished = [(name, shape) for name, shape in finished if calls[name] == 1]
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


RESHAPE_MODES = ("auto", "none", "vit", "swin")


def _is_torchvision_swin(model: nn.Module) -> bool:
    try:
        from torchvision.models import SwinTransformer
    except ImportError:  # pragma: no cover
        return False
    return isinstance(model, SwinTransformer)


def vit_grid(n_tokens: int, input_size: tuple[int, int]) -> tuple[tuple[int, int], bool]:
    """(h, w) patch grid and whether a class token leads, from the token count at a layer.

    The grid must have the input's aspect ratio: with one class token ``n - 1 = h*w``, without
    ``n = h*w``. The class-token reading is tried first (ViT, DeiT without distillation token).
    """
    H, W = input_size
    for skip in (1, 0):
        n = n_tokens - skip
        for h in range(1, n + 1):
            if n % h == 0 and h * W == (n // h) * H:
                return (h, n // h), bool(skip)
    raise ConfigError(
        f"model.reshape: vit: {n_tokens} tokens do not form a patch grid with the input's aspect ratio "
        f"{H}x{W} (with or without one class token); set model.target_layer to a token layer of the encoder"
    )


@torch.no_grad()
def _probe_shape(model: nn.Module, layer: nn.Module, input_size: tuple[int, int], device: torch.device | str) -> tuple[int, ...]:
    seen: list[tuple[int, ...]] = []
    handle = layer.register_forward_hook(lambda _m, _i, out: seen.append(tuple(out.shape)) if isinstance(out, Tensor) else None)
    try:
        model(torch.zeros(1, 3, *input_size, device=device))
    finally:
        handle.remove()
    if not seen:
        raise ConfigError("model.target_layer: the layer did not run in the forward pass")
    return seen[0]


def resolve_target(
    model: nn.Module, input_size: tuple[int, int], device: torch.device | str, target_layer: str | None, reshape: str = "auto"
) -> tuple[str, Callable[[Tensor], Tensor] | None]:
    """(target layer, reshape transform) from ``model.target_layer`` and ``model.reshape``.

    ``auto``: torchvision ViT gets ``ln_1`` of its last block when no layer is named (see
    :func:`detect_target`); any layer whose output is tokens (B, N, C) gets the ViT transform with
    the grid read from N; torchvision Swin stages (``features*``, ``norm``) are NHWC and get
    :func:`nhwc_to_nchw`; NCHW layers keep no transform. ``vit`` / ``swin`` force the transform
    and fail clearly when the layer's output does not have that layout; ``none`` never reshapes.
    """
    if reshape not in RESHAPE_MODES:
        raise ConfigError(f"model.reshape: {reshape!r} is not one of {list(RESHAPE_MODES)}")
    if target_layer is None:
        if reshape == "vit" and not _is_torchvision_vit(model):
            raise ConfigError("model.reshape: vit: set model.target_layer (auto-detection knows torchvision ViT only)")
        name, auto = detect_target(model, input_size, device)
        if reshape == "none" or (reshape == "auto" and auto is not None):
            return name, None if reshape == "none" else auto
        target_layer = name
    shape = _probe_shape(model, get_module(model, target_layer), input_size, device)
    tokens = len(shape) == 3
    if reshape == "none":
        return target_layer, None
    if reshape == "vit" or (reshape == "auto" and tokens):
        if not tokens:
            raise ConfigError(f"model.reshape: vit: layer {target_layer!r} returns shape {shape}, not (batch, tokens, channels)")
        grid, cls = vit_grid(shape[1], input_size)
        return target_layer, vit_reshape_transform(grid, has_cls_token=cls)
    swin_stage = _is_torchvision_swin(model) and (target_layer == "norm" or target_layer.startswith("features"))
    if reshape == "swin" or (reshape == "auto" and swin_stage):
        if len(shape) != 4:
            raise ConfigError(f"model.reshape: swin: layer {target_layer!r} returns shape {shape}, not (batch, H, W, C)")
        return target_layer, nhwc_to_nchw
    return target_layer, None
