"""Reshape transforms: token- or NHWC-shaped activations to the NCHW maps CAM formulas expect.

A transform takes a tensor (..., N, C) (or (..., H, W, C)) and returns (..., C, h, w). Leading
dimensions are kept, so the same transform serves activations (B, ...) and batched gradients.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from auditors.cam._validation import CamParameterError, check_size

__all__ = ["vit_reshape_transform", "nhwc_to_nchw"]


def vit_reshape_transform(grid_hw: tuple[int, int], has_cls_token: bool = True) -> Callable[[Tensor], Tensor]:
    """Transform for ViT-style tokens (B, N, C) with N = [1 class token +] h*w patch tokens.

    The class token carries no position, so it is dropped; patch tokens are laid out row-major
    (as torchvision's ``conv_proj(...).flatten(2)`` produces them). For torchvision ``vit_b_16``
    at 224 px: ``vit_reshape_transform((14, 14))``.
    """
    h, w = check_size("grid_hw", grid_hw)
    skip = 1 if has_cls_token else 0

    def transform(t: Tensor) -> Tensor:
        if t.ndim < 3 or t.shape[-2] != skip + h * w:
            raise CamParameterError(
                f"vit_reshape_transform(({h}, {w}), has_cls_token={has_cls_token}) expects "
                f"(..., {skip + h * w}, C) tokens, got shape {tuple(t.shape)}"
            )
        return t[..., skip:, :].unflatten(-2, (h, w)).movedim(-1, -3)

    transform.__name__ = f"vit_reshape_transform_{h}x{w}{'_cls' if skip else ''}"
    return transform


def nhwc_to_nchw(t: Tensor) -> Tensor:
    """Transform for channels-last activations (..., H, W, C), e.g. torchvision Swin ``features``."""
    if t.ndim < 4:
        raise CamParameterError(f"nhwc_to_nchw expects (..., H, W, C), got shape {tuple(t.shape)}")
    return t.movedim(-1, -3)
