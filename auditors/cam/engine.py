"""The CAM engine: one forward with a hook on the target layer, one gradient to that layer.

Why this shape: the gradient of a class score with respect to the target activation needs only
the part of the graph *after* the target layer. The backbone runs under ``no_grad`` and the hook
(:mod:`auditors.cam.capture`) re-attaches the activation as a fresh leaf, so autograd never
records or backpropagates through the backbone, never touches parameter ``.grad`` and works on
fully frozen models. Where the head is global-average-pool + linear (ResNet, EfficientNet,
MobileNetV2, ...) even that small backward is skipped: the gradient is ``W[c] / (h*w)``
(:mod:`auditors.cam.head`) and the whole batch costs one ``inference_mode`` forward.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from auditors.cam._validation import (
    CamParameterError,
    check_bool,
    check_callable,
    check_choice,
    check_size,
)
from auditors.cam.capture import capture, capture_many
from auditors.cam.gradients import grads_to
from auditors.cam.guided import guided_map, guided_relus
from auditors.cam.head import GapLinearHead, detect_gap_linear_head
from auditors.cam.layers import detect_target, get_module
from auditors.cam.methods import GRADIENT_FREE, METHODS

__all__ = ["CamEngine", "CamBatch", "TopkCamBatch", "METHODS", "ENGINE_METHODS", "AMP_MODES", "GRADIENT_SOURCES"]

#: Every ``method`` the engine accepts: the formulas of :data:`METHODS` plus Guided Grad-CAM
#: (Grad-CAM x guided backprop, a full-resolution map; see :mod:`auditors.cam.guided`).
ENGINE_METHODS = (*METHODS, "guided_gradcam")

AMP_MODES = ("auto", "off", "bf16", "fp16")
#: "auto": closed form where the head allows it, else autograd; "analytic": closed form or error.
GRADIENT_SOURCES = ("auto", "autograd", "analytic")

TargetsLike = Tensor | int | Sequence[int] | None


def _degenerate(maps: Tensor) -> Tensor:
    total = maps.sum(dim=(-2, -1))
    return ~torch.isfinite(total) | (total <= 0)


@dataclass
class CamBatch:
    """Result of one batch. Tensors stay on the engine's device.

    ``maps`` are ReLU'd, un-normalised, at the target layer's resolution (B, h, w), float32.
    ``degenerate`` marks maps whose total is zero or not finite: their ratios are undefined.
    ``layer_maps``: the maps of every layer in the engine's ``layers`` (same forward), by name.
    Guided Grad-CAM maps are at input resolution (B, H, W).
    """

    maps: Tensor
    logits: Tensor
    targets: Tensor
    degenerate: Tensor
    layer_maps: dict[str, Tensor] = field(default_factory=dict)

    @property
    def probs(self) -> Tensor:
        return self.logits.float().softmax(dim=1)


@dataclass
class TopkCamBatch:
    """Maps for several classes per image from one forward: ``maps`` (B, k, h, w), ``classes`` (B, k).

    For :meth:`CamEngine.compute_topk` the classes are sorted by decreasing logit.
    """

    maps: Tensor
    logits: Tensor
    classes: Tensor
    degenerate: Tensor
    layer_maps: dict[str, Tensor] = field(default_factory=dict)

    @property
    def probs(self) -> Tensor:
        return self.logits.float().softmax(dim=1)


def _amp_dtype(device: torch.device, amp: str) -> torch.dtype | None:
    if device.type != "cuda" or amp == "off":
        return None
    if amp == "fp16":
        return torch.float16
    if amp == "bf16" or (amp == "auto" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    return torch.float16


def _model_device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    p = next(iter(model.parameters()), None)
    if p is None:
        return torch.device("cpu"), torch.float32
    return p.device, (p.dtype if p.dtype.is_floating_point else torch.float32)


class CamEngine:
    """Compute CAMs for batches of preprocessed images.

    Parameters
    ----------
    model : nn.Module in eval mode (parameters may be frozen).
    target_layer : dotted module name, or None to auto-detect (the last spatial layer of a CNN;
        ``ln_1`` of the last block, with a token transform, for torchvision ViT).
    method : one of :data:`ENGINE_METHODS`. ``"cam"`` needs a global-average-pool + linear head;
        ``"guided_gradcam"`` returns full-resolution maps (B, H, W) and needs nn.ReLU modules.
    input_size : (H, W) of the batches; used for auto-detection and the head probe.
    amp : "auto" | "off" | "bf16" | "fp16"; autocast is used on CUDA only.
    reshape_transform : maps a token-shaped activation (..., N, C) to (..., C, h, w) (ViT/Swin);
        see :func:`auditors.cam.vit_reshape_transform`. None keeps NCHW activations as they are.
    channels_last : convert the model (in place) and every batch to channels_last; usually faster
        for convolutional nets on CPU and on tensor-core GPUs.
    gradient : "auto" | "autograd" | "analytic" (see :data:`GRADIENT_SOURCES`). The closed form
        is used only after it was verified against autograd on a probe batch at construction.
    layers : further dotted layer names whose maps come from the same forward and the same
        backward (``CamBatch.layer_maps``); they share ``reshape_transform``. Autograd is used
        then, since a shallower layer's gradient passes through the deeper ones anyway.
    """

    def __init__(
        self,
        model: nn.Module,
        target_layer: str | None = None,
        method: str = "gradcam",
        input_size: tuple[int, int] = (224, 224),
        amp: str = "auto",
        reshape_transform: Callable[[Tensor], Tensor] | None = None,
        *,
        channels_last: bool = False,
        gradient: str = "auto",
        layers: Sequence[str] = (),
    ):
        if not isinstance(model, nn.Module):
            raise CamParameterError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self._method = check_choice("method", method, ENGINE_METHODS)
        self.input_size = check_size("input_size", input_size)
        self.amp = check_choice("amp", amp, AMP_MODES)
        self.reshape_transform = check_callable("reshape_transform", reshape_transform)
        self.channels_last = check_bool("channels_last", channels_last)
        self.gradient = check_choice("gradient", gradient, GRADIENT_SOURCES)
        if target_layer is not None and not isinstance(target_layer, str):
            raise CamParameterError(f"target_layer must be a dotted module name or None, got {target_layer!r}")
        if self.method in GRADIENT_FREE and self.gradient == "autograd":
            raise CamParameterError(f"method={method!r} is gradient-free; it cannot use gradient='autograd'")
        if model.training:
            warnings.warn("CamEngine: model is in training mode; call model.eval() first", stacklevel=2)

        self.model = model
        self.device, self._dtype = _model_device_dtype(model)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        if target_layer is None:
            target_layer, auto_transform = detect_target(model, self.input_size, self.device)
            if self.reshape_transform is None:
                self.reshape_transform = auto_transform
        self.target_layer: str = target_layer
        self.layer = get_module(model, target_layer)
        if isinstance(layers, str) or not all(isinstance(n, str) for n in layers):
            raise CamParameterError(f"layers must be a list of dotted module names, got {layers!r}")
        self.layers: tuple[str, ...] = tuple(dict.fromkeys(layers))
        if self.layers and self.method in GRADIENT_FREE:
            raise CamParameterError(f"method={method!r} is defined for the GAP + linear head's layer only; it cannot use layers")
        # Capture order does not matter (hooks fire in execution order); the target layer is first.
        self._modules = {n: get_module(model, n) for n in dict.fromkeys([target_layer, *self.layers])}
        self.amp_dtype = _amp_dtype(self.device, self.amp)

        self.head: GapLinearHead | None = None
        self.head_reason = "not checked (gradient='autograd')"
        if self.gradient != "autograd":
            self.head, self.head_reason = detect_gap_linear_head(
                model, self.layer, self.target_layer, self._probe_batch(), self.reshape_transform
            )
            if self.head is None and (self.method in GRADIENT_FREE or self.gradient == "analytic"):
                what = f"method={method!r}" if self.method in GRADIENT_FREE else "gradient='analytic'"
                raise CamParameterError(
                    f"{what} needs the target layer to feed global-average-pool + the final nn.Linear, "
                    f"but for target_layer={self.target_layer!r}: {self.head_reason}. "
                    "Use method='gradcam' (identical maps where CAM applies) or another target layer."
                )

    # ------------------------------------------------------------------ public API
    @property
    def method(self) -> str:
        """The CAM formula; may be switched between batches (same forward, same gradient)."""
        return self._method

    @method.setter
    def method(self, value: str) -> None:
        value = check_choice("method", value, ENGINE_METHODS)
        if value in GRADIENT_FREE and self.head is None:
            raise CamParameterError(f"method={value!r} needs a verified GAP + linear head: {self.head_reason}")
        self._method = value

    @property
    def gradient_source(self) -> str:
        """Where gradients come from: "analytic" (verified closed-form head, no autograd) or "autograd"."""
        return "analytic" if self.head is not None else "autograd"

    def __repr__(self) -> str:
        return (
            f"CamEngine(target_layer={self.target_layer!r}, method={self.method!r}, "
            f"gradient={self.gradient_source!r}, device={str(self.device)!r}, channels_last={self.channels_last})"
        )

    def compute(self, x: Tensor, targets: TargetsLike = None) -> CamBatch:
        """CAMs for ``x`` (B, C, H, W), one class per image.

        ``targets``: None = the predicted class; a (B,) index tensor (true labels, or any class
        per image); or one int / a length-B sequence. Predictions come from the same forward.
        """
        x = self._prepare(x)
        t = None if targets is None else self._as_index(targets, len(x))
        logits, maps, classes, by_layer = self._run(x, lambda lg: lg.argmax(dim=1) if t is None else self._checked(t, lg))
        return CamBatch(maps=maps, logits=logits, targets=classes, degenerate=_degenerate(maps), layer_maps=by_layer)

    def compute_topk(self, x: Tensor, k: int) -> TopkCamBatch:
        """Maps for the ``k`` highest-scoring classes of every image, from one forward and one
        batched gradient (``autograd.grad(..., is_grads_batched=True)``, or none at all for a
        GAP + linear head). Equal to ``k`` separate :meth:`compute` calls, at the cost of one."""
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise CamParameterError(f"k must be a positive int, got {k!r}")
        x = self._prepare(x)

        def pick(lg: Tensor) -> Tensor:
            if k > lg.shape[1]:
                raise CamParameterError(f"k={k} exceeds the number of classes ({lg.shape[1]})")
            return lg.topk(k, dim=1).indices

        logits, maps, classes, by_layer = self._run(x, pick)
        return TopkCamBatch(maps=maps, logits=logits, classes=classes, degenerate=_degenerate(maps), layer_maps=by_layer)

    def compute_classes(self, x: Tensor, classes: Tensor) -> TopkCamBatch:
        """Maps for given classes per image: ``classes`` (B, k) indices -> maps (B, k, h, w)."""
        x = self._prepare(x)
        if not isinstance(classes, Tensor) or classes.ndim != 2 or len(classes) != len(x):
            raise CamParameterError(f"classes must be a (batch, k) index tensor, got {getattr(classes, 'shape', classes)}")
        classes = classes.long()
        logits, maps, classes, by_layer = self._run(x, lambda lg: self._checked(classes, lg))
        return TopkCamBatch(maps=maps, logits=logits, classes=classes, degenerate=_degenerate(maps), layer_maps=by_layer)

    def compute_chosen(self, x: Tensor, choose: Callable[[Tensor], Tensor]) -> TopkCamBatch:
        """Maps for the classes ``choose(logits)`` picks per image ((B, k) indices), from one forward.

        For classes that depend on the prediction (the predicted class next to the true label,
        for failure analysis) without a second forward to learn the prediction first."""
        x = self._prepare(x)

        def pick(lg: Tensor) -> Tensor:
            classes = choose(lg)
            if not isinstance(classes, Tensor) or classes.ndim != 2 or len(classes) != len(lg):
                raise CamParameterError(f"choose must return (batch, k) class indices, got {getattr(classes, 'shape', classes)}")
            return self._checked(classes.long(), lg)

        logits, maps, classes, by_layer = self._run(x, pick)
        return TopkCamBatch(maps=maps, logits=logits, classes=classes, degenerate=_degenerate(maps), layer_maps=by_layer)

    # ------------------------------------------------------------------ internals
    def _probe_batch(self) -> Tensor:
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(1, 3, *self.input_size, generator=gen, dtype=self._dtype)
        return self._prepare(x)

    def _prepare(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor) or x.ndim != 4:
            raise CamParameterError(f"x must be a (batch, channels, H, W) tensor, got {getattr(x, 'shape', type(x))}")
        fmt = torch.channels_last if self.channels_last else torch.preserve_format
        return x.to(self.device, non_blocking=True, memory_format=fmt)

    @staticmethod
    def _as_index(targets: TargetsLike, batch: int) -> Tensor:
        if isinstance(targets, Tensor):
            t = targets
        elif isinstance(targets, int) and not isinstance(targets, bool):
            t = torch.full((batch,), targets, dtype=torch.long)
        else:
            try:
                t = torch.as_tensor(list(targets), dtype=torch.long)
            except (TypeError, ValueError):
                raise CamParameterError(f"targets must be None, an int or (batch,) class indices, got {targets!r}") from None
        if t.ndim != 1 or len(t) != batch or t.is_floating_point() or t.dtype == torch.bool:
            raise CamParameterError(
                f"targets must be {batch} integer class indices (one per image), got shape {tuple(t.shape)} {t.dtype}"
            )
        return t.long()

    @staticmethod
    def _checked(t: Tensor, logits: Tensor) -> Tensor:
        # Checked where the indices live (no device sync for CPU labels); an out-of-range index
        # would otherwise be a device-side assert on CUDA.
        n = logits.shape[1]
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= n):
            raise CamParameterError(f"target class indices must be in [0, {n}), got min {int(t.min())}, max {int(t.max())}")
        return t.to(logits.device, non_blocking=True)

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def _to_nchw(self, t: Tensor, lead: int) -> Tensor:
        """Apply the reshape transform to a tensor with ``lead`` extra leading dims (top-k grads)."""
        if self.reshape_transform is None:
            return t
        if lead == 0:
            return self.reshape_transform(t)
        shape = t.shape[: lead + 1]
        return self.reshape_transform(t.flatten(0, lead)).unflatten(0, shape)

    def _run(self, x: Tensor, pick: Callable[[Tensor], Tensor]) -> tuple[Tensor, Tensor, Tensor, dict[str, Tensor]]:
        """One forward (+ at most one gradient call) -> (logits float, ReLU'd maps, classes, layer maps)."""
        if self.layers or self.method == "guided_gradcam":
            return self._multi(x, pick)
        if self.head is not None:
            logits, a, g, classes = self._analytic(x, pick)
        else:
            logits, a, g, classes = self._autograd(x, pick)
        if classes.ndim == 2:  # (B, k): one activation serves k gradients
            a = a.unsqueeze(1)
        maps = torch.relu(METHODS[self.method](a, g))
        return logits, maps, classes, {}

    def _multi(self, x: Tensor, pick: Callable[[Tensor], Tensor]):
        """Several layers and/or guided backprop: one forward, one backward to all layers
        (plain gradients), and for guided Grad-CAM one more to the input (guided gradients)."""
        guided = self.method == "guided_gradcam"
        names = list(self._modules)
        with torch.inference_mode(False), torch.enable_grad():
            with contextlib.ExitStack() as stack:
                state = stack.enter_context(guided_relus(self.model)) if guided else None
                xin = x.detach().requires_grad_(True) if guided else x
                with capture_many(self._modules) as caps:
                    with (contextlib.nullcontext() if guided else torch.no_grad()), self._autocast():
                        out = self.model(xin)
                    acts = [caps[n].get() for n in names]
            if out.grad_fn is None:
                raise RuntimeError(f"the model output does not depend on the layers {names}")
            classes = pick(out.detach())
            grads = grads_to(out, acts, classes, names, retain=guided)
            if guided:
                state.guided = True  # the gates read this during the next backward only
                (gx,) = grads_to(out, [xin], classes, ["input"], retain=False)
        lead = 0 if classes.ndim == 1 else 1
        formula = METHODS["gradcam" if guided else self.method]
        by_layer: dict[str, Tensor] = {}
        for name, act, g in zip(names, acts, grads):
            a = self._to_nchw(act.detach(), 0).float()
            if lead:
                a = a.unsqueeze(1)
            m = torch.relu(formula(a, self._to_nchw(g, lead).float()))
            by_layer[name] = guided_map(m, gx) if guided else m
        maps = by_layer[self.target_layer]
        return out.detach().float(), maps, classes, {n: by_layer[n] for n in self.layers}


    def _analytic(self, x: Tensor, pick: Callable[[Tensor], Tensor]):
        with torch.inference_mode(), capture(self.layer, self.target_layer, requires_grad=False) as cap:
            with self._autocast():
                out = self.model(x)
            act = cap.get()
        # Past our inference_mode block: results are ordinary tensors the caller may modify in place.
        logits = out.float().clone()
        classes = pick(logits)
        a = self._to_nchw(act, 0).float()
        g = self.head.gradient(classes, tuple(a.shape[-2:]))
        return logits, a, g, classes

    def _autograd(self, x: Tensor, pick: Callable[[Tensor], Tensor]):
        with torch.inference_mode(False), torch.enable_grad():
            with capture(self.layer, self.target_layer, requires_grad=True) as cap:
                with torch.no_grad(), self._autocast():
                    out = self.model(x)
                leaf = cap.get()
            if out.grad_fn is None:
                raise RuntimeError(f"the model output does not depend on target layer {self.target_layer!r}")
            classes = pick(out.detach())
            # one class: (B, ...); k classes: (B, k, ...) from one batched call (see cam.gradients)
            (g,) = grads_to(out, [leaf], classes, [self.target_layer], retain=classes.ndim > 1)
            lead = 0 if classes.ndim == 1 else 1
        a = self._to_nchw(leaf.detach(), 0).float()
        return out.detach().float(), a, self._to_nchw(g, lead).float(), classes
