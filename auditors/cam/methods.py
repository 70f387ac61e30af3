"""CAM formulas as plain functions of the target activation and the gradient reaching it.

Every function takes ``a`` (..., C, h, w) and ``g`` broadcastable to it and returns the raw map
(..., h, w) *before* the ReLU. Leading dimensions are free so that one call serves a batch
(B, C, h, w) or a batch of top-k targets (B, k, C, h, w) with ``a`` unsqueezed to (B, 1, C, h, w).
``g`` may be an expanded (stride-0) view: nothing here writes to it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["METHODS", "GRADIENT_FREE", "weighted_sum"]

#: Keeps XGrad-CAM's division defined for channels whose activation sums to zero.
XGRADCAM_EPS = 1e-7
#: Grad-CAM++'s alpha denominator guard. 1e-6 is the value pytorch-grad-cam (the de facto
#: reference) uses; it matters when gradients are tiny (g**2 ~ eps), so it is kept identical.
GRADCAMPP_EPS = 1e-6


def weighted_sum(w: Tensor, a: Tensor) -> Tensor:
    """sum_c w[..., c] * a[..., c, :, :] as one batched matmul (no (.., C, h, w) temporary)."""
    hw = a.shape[-2:]
    out = torch.matmul(w.unsqueeze(-2), a.flatten(-2))  # (..., 1, h*w)
    return out.squeeze(-2).unflatten(-1, hw)


def gradcam(a: Tensor, g: Tensor) -> Tensor:
    """Grad-CAM (Selvaraju et al. 2017): channel weights = spatial mean of the gradient."""
    return weighted_sum(g.mean(dim=(-2, -1)), a)


def negcam(a: Tensor, g: Tensor) -> Tensor:
    """Counterfactual Grad-CAM: negated gradients, i.e. regions that argue *against* the class."""
    return weighted_sum(-g.mean(dim=(-2, -1)), a)


def cam(a: Tensor, g: Tensor) -> Tensor:
    """CAM (Zhou et al. 2016): weights = the linear head's row for the class.

    For a global-average-pool + linear head the spatial *sum* of the gradient equals that row,
    so this is Grad-CAM times h*w; the engine only runs it with the closed-form gradient.
    """
    return weighted_sum(g.sum(dim=(-2, -1)), a)


def hirescam(a: Tensor, g: Tensor) -> Tensor:
    """HiResCAM (Draelos & Carin 2020): element-wise gradient x activation, summed over channels."""
    return (g * a).sum(dim=-3)


def layercam(a: Tensor, g: Tensor) -> Tensor:
    """LayerCAM (Jiang et al. 2021): positive gradients x activation, summed over channels."""
    return (g.clamp_min(0) * a).sum(dim=-3)


def xgradcam(a: Tensor, g: Tensor) -> Tensor:
    """XGrad-CAM (Fu et al. 2020): weights = sum(g*a) / sum(a) over space."""
    num = (g * a).sum(dim=(-2, -1))
    den = a.sum(dim=(-2, -1)) + XGRADCAM_EPS
    return weighted_sum(num / den, a)


def gradcampp(a: Tensor, g: Tensor) -> Tensor:
    """Grad-CAM++ (Chattopadhay et al. 2018, eq. 19): alpha-weighted ReLU(g), alpha from g alone."""
    g2 = g * g
    g3 = g2 * g
    sum_a = a.sum(dim=(-2, -1), keepdim=True)
    alpha = g2 / (2 * g2 + sum_a * g3 + GRADCAMPP_EPS)
    alpha = torch.where(g != 0, alpha, torch.zeros_like(alpha))
    w = (g.clamp_min(0) * alpha).sum(dim=(-2, -1))
    return weighted_sum(w, a)


#: method name -> f(activation (..., C, h, w), gradient) -> raw map (..., h, w), before ReLU
METHODS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "gradcam": gradcam,
    "gradcampp": gradcampp,
    "xgradcam": xgradcam,
    "hirescam": hirescam,
    "layercam": layercam,
    "cam": cam,
    "negcam": negcam,
}

#: Methods defined only through a closed-form head (no autograd may be used for them).
GRADIENT_FREE = frozenset({"cam"})
