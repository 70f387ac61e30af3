"""Guided backpropagation (Springenberg et al. 2015) for Guided Grad-CAM (Selvaraju et al. 2017).

Why hooks with a switch instead of swapping modules: the user's model must never be changed.
While :func:`guided_relus` is active every ``nn.ReLU`` call routes its output through a gate
whose backward clamps the incoming gradient at 0 (the ReLU's own backward then masks where its
input was <= 0: together that is the guided-backprop rule). The gate obeys ``state.guided`` at
*backward* time, so one forward serves two backwards: the plain gradient at the target layer
(Grad-CAM's weights, exactly as without guidance) and the guided gradient at the input. The
hooks are removed when the block exits, whatever happens inside it.

Only ``nn.ReLU`` modules are guided; ReLUs called functionally (``F.relu``) cannot be hooked
and behave as ordinary ReLUs. :func:`guided_relus` reports how many modules it hooked.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from auditors.cam._validation import CamParameterError

__all__ = ["GuidedState", "guided_relus", "guided_map"]


@dataclass
class GuidedState:
    """Read by every gate during backward: True = guided rule, False = plain gradient."""

    guided: bool = False
    relus: int = 0


class _Gate(torch.autograd.Function):
    """Identity forward; backward clamps the gradient at 0 when the shared state says guided."""

    @staticmethod
    def forward(ctx, x: Tensor, state: GuidedState) -> Tensor:  # type: ignore[override]
        ctx.state = state
        return x.clone()  # a new tensor: in-place ops downstream cannot reach the ReLU's output

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        return (grad.clamp_min(0) if ctx.state.guided else grad), None


@contextlib.contextmanager
def guided_relus(model: nn.Module) -> Iterator[GuidedState]:
    """Gate every ``nn.ReLU`` of ``model`` for the duration of the block (hooks always removed)."""
    state = GuidedState()

    def hook(_m: nn.Module, _inp: tuple, out: Tensor) -> Tensor:
        return _Gate.apply(out, state) if torch.is_grad_enabled() else out

    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    if not relus:
        raise CamParameterError(
            "method='guided_gradcam' needs nn.ReLU modules to guide (found none; ReLUs called as F.relu "
            "cannot be hooked and GELU/SiLU networks have no guided-backprop rule); use method='gradcam'"
        )
    state.relus = len(relus)
    handles = [m.register_forward_hook(hook) for m in relus]
    try:
        yield state
    finally:
        for h in handles:
            h.remove()


def guided_map(cams: Tensor, input_grad: Tensor) -> Tensor:
    """Guided Grad-CAM as a non-negative full-resolution map.

    ``cams`` (..., h, w) are ReLU'd Grad-CAM maps, ``input_grad`` (..., 3, H, W) the guided
    gradients. The map is the bilinearly upsampled Grad-CAM times the per-pixel L1 norm of the
    guided gradient over colour channels: region masses need one non-negative value per pixel,
    and the paper's element-wise product is signed per channel.
    """
    size = input_grad.shape[-2:]
    lead = cams.shape[:-2]
    up = F.interpolate(cams.reshape(-1, 1, *cams.shape[-2:]).float(), size=size, mode="bilinear", align_corners=False)
    up = up.reshape(*lead, *size).clamp_min(0)
    return up * input_grad.float().abs().sum(dim=-3)
