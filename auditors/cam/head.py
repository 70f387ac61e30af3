"""Closed-form gradients for a global-average-pool + linear head.

If ``logits = W @ mean_hw(A) + b`` then ``d logits[c] / d A = W[c] / (h*w)`` at every position:
no autograd is needed and CAM (Zhou et al.) is exact. Whether a model's head has that form is
*checked numerically* on a probe batch rather than guessed from module names: the final
``nn.Linear`` must produce the logits, the logits must equal ``W @ mean(A) + b``, and autograd's
gradient to A must equal the closed form (which rules out e.g. a ReLU between A and the pool).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from auditors.cam.capture import capture

__all__ = ["GapLinearHead", "detect_gap_linear_head"]

_RTOL = 1e-3  # float32 reductions over a few thousand terms; a wrong head is off by O(1)


@dataclass(frozen=True)
class GapLinearHead:
    """The verified head: ``linear`` (named ``name``) applied to the spatial mean of the target."""

    name: str
    linear: nn.Linear

    def gradient(self, classes: Tensor, hw: tuple[int, int]) -> Tensor:
        """d logit[classes] / d A: (*classes.shape, C, h, w) as a stride-0 expanded view."""
        h, w = hw
        rows = self.linear.weight.detach().float()[classes] / (h * w)
        return rows[..., None, None].expand(*rows.shape, h, w)


def _close(x: Tensor, y: Tensor) -> bool:
    scale = max(float(y.abs().max()), 1e-12)
    return float((x - y).abs().max()) <= _RTOL * scale


def detect_gap_linear_head(
    model: nn.Module,
    layer: nn.Module,
    layer_name: str,
    probe: Tensor,
    reshape_transform: Callable[[Tensor], Tensor] | None = None,
) -> tuple[GapLinearHead | None, str]:
    """Return (head, "ok") if the target layer feeds GAP + the final Linear, else (None, why not)."""
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        return None, "the model has no nn.Linear"
    seen: list[tuple[str, nn.Linear, Tensor]] = []
    handles = [
        m.register_forward_hook(lambda mod, _i, out, n=n: seen.append((n, mod, out.detach()))) for n, m in linears
    ]
    try:
        with torch.inference_mode(False), torch.enable_grad(), capture(layer, layer_name, requires_grad=True) as cap:
            with torch.no_grad():
                logits = model(probe)
            leaf = cap.get()
            if not seen:
                return None, "no nn.Linear ran in the forward pass"
            name, linear, out = seen[-1]
            if not isinstance(logits, Tensor) or logits.ndim != 2:
                return None, f"the model output is not (batch, classes) logits: {type(logits).__name__}"
            if out.shape != logits.shape or not torch.equal(out, logits.detach()):
                return None, f"the last nn.Linear ({name!r}) does not produce the model's output"
            a = leaf.detach() if reshape_transform is None else reshape_transform(leaf.detach())
            if a.ndim != 4:
                return None, f"the target activation is not NCHW (shape {tuple(a.shape)}); pass reshape_transform"
            if a.shape[1] != linear.in_features:
                return None, (
                    f"the final Linear {name!r} takes {linear.in_features} features but the target layer "
                    f"{layer_name!r} has {a.shape[1]} channels"
                )
            if not bool(a.abs().amax() > 0):
                return None, "the target activation is all zero on the probe batch, so the head cannot be verified"
            weight, bias = linear.weight.detach().float(), linear.bias
            if not bool(weight.abs().amax() > 0):
                # e.g. torchvision ViT/Swin initialise their head to zeros: every check would pass
                # trivially and every map would be zero anyway.
                return None, f"the final Linear {name!r} has all-zero weights, so the head cannot be verified"
            pooled = a.float().mean(dim=(2, 3)) @ weight.T
            if bias is not None:
                pooled = pooled + bias.detach().float()
            if not _close(pooled, logits.detach().float()):
                return None, (
                    f"the logits are not {name!r} applied to the global average of {layer_name!r} "
                    "(something other than pooling sits between them)"
                )
            if logits.grad_fn is None:
                return None, "the logits do not depend on the target layer"
            v = torch.randn(logits.shape[1], generator=torch.Generator().manual_seed(1)).to(logits)
            (g,) = torch.autograd.grad((logits @ v).sum(), leaf)
            g = g.float() if reshape_transform is None else reshape_transform(g).float()
            h, w = a.shape[-2:]
            expected = ((v.float() @ weight) / (h * w))[None, :, None, None].expand_as(g)
            if not _close(g, expected):
                return None, f"the gradient to {layer_name!r} is not the closed form W[c]/(h*w)"
    finally:
        for hd in handles:
            hd.remove()
    return GapLinearHead(name, linear), "ok"
