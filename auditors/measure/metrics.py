"""Per-image region metrics on CAM maps, computed on the maps' device in one batched pass.

Definitions (S = ReLU'd CAM at model-input resolution, M = region mask, N = pixels):
  mass = sum(S[M]) / sum(S)   area = |M| / N   lift = mass / area   hit = argmax(S) in M
Ratios use the raw ReLU'd map: min-max rescaling first would change them.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["upsample_maps", "region_metrics", "display_map", "reachable_mass"]


def upsample_maps(maps: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear (B, h, w) -> (B, H, W), clamped at 0 (interpolation of >= 0 values stays >= 0)."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    up = F.interpolate(maps[:, None].float(), size=size, mode="bilinear", align_corners=False)[:, 0]
    return up.clamp_min_(0)


def region_metrics(maps: Tensor, masks: Tensor, tolerance: int = 0) -> dict[str, Tensor]:
    """Mass, area, lift and pointing hit for each image and region.

    Parameters
    ----------
    maps : (B, H, W) non-negative CAMs at mask resolution.
    masks : (B, R, H, W) bool region masks.
    tolerance : pixels by which the argmax may miss a region and still count as a hit.

    Returns a dict of (B, R) float tensors. Undefined values are NaN: mass/hit when the map's
    total is 0 or not finite, lift when the region is empty.
    """
    if maps.ndim != 3 or masks.ndim != 4 or maps.shape[0] != masks.shape[0] or maps.shape[-2:] != masks.shape[-2:]:
        raise ValueError(f"shape mismatch: maps {tuple(maps.shape)} vs masks {tuple(masks.shape)}")
    b, r, h, w = masks.shape
    # float64 reductions: sums over ~50k pixels in float32 lose digits that users then see
    # as lift != mass / area. The cost is negligible next to the forward pass.
    dtype = torch.float32 if maps.device.type == "mps" else torch.float64  # MPS has no float64
    s = maps.to(dtype)
    m = masks.to(dtype)
    total = s.sum(dim=(1, 2))  # (B,)
    valid = torch.isfinite(total) & (total > 0)
    inside = torch.einsum("bhw,brhw->br", s, m)
    nan = torch.full_like(inside, float("nan"))
    mass = torch.where(valid[:, None], inside / total.clamp_min(1e-30)[:, None], nan)
    area = m.mean(dim=(2, 3))
    lift = torch.where(area > 0, mass / area.clamp_min(1e-30), nan)
    if tolerance > 0:
        k = 2 * tolerance + 1
        m = F.max_pool2d(m, kernel_size=k, stride=1, padding=tolerance)
    flat_idx = torch.nan_to_num(s, nan=-1.0).flatten(1).argmax(dim=1)  # (B,)
    hit = m.flatten(2).gather(2, flat_idx[:, None, None].expand(b, r, 1))[..., 0]
    hit = torch.where(valid[:, None], hit, nan)
    return {"mass": mass, "area": area, "lift": lift, "hit": hit}


def display_map(m: torch.Tensor) -> np.ndarray:
    """Min-max scaled copy of a map for drawing only (ratios never use it)."""
    m = m.float()
    lo, hi = m.min(), m.max()
    return ((m - lo) / (hi - lo)).cpu().numpy().astype(np.float32) if hi > lo else np.zeros(tuple(m.shape), np.float32)


def _upsample_matrix(n: int, size: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """(n, size): row k is the 1-D linear upsampling of the k-th unit vector (as upsample_maps does)."""
    if n == size:
        return torch.eye(n, device=device, dtype=dtype)
    eye = torch.eye(n, device=device, dtype=torch.float32)[:, None, :]
    return F.interpolate(eye, size=size, mode="linear", align_corners=False)[:, 0].to(dtype)


def reachable_mass(masks: Tensor, map_hw: tuple[int, int]) -> Tensor:
    """Highest mass any non-negative map at ``map_hw`` resolution can put on each region, (B, R).

    Why: a 7x7 map upsampled cannot concentrate on a 2% badge, so the same lift means different
    things for different target layers. Mass after upsampling is a ratio of two linear functions
    of the map (inside / total); over non-negative maps its maximum sits at a single cell, so the
    bound is the best cell's share: max_k (U^T M)_k / (U^T 1)_k with U the bilinear upsampling of
    :func:`upsample_maps` (separable: U = Uy (x) Ux). NaN for an empty region.
    """
    if masks.ndim != 4:
        raise ValueError(f"masks must be (B, R, H, W), got {tuple(masks.shape)}")
    h, w = int(map_hw[0]), int(map_hw[1])
    H, W = masks.shape[-2:]
    dtype = torch.float32 if masks.device.type == "mps" else torch.float64
    ay = _upsample_matrix(h, H, masks.device, dtype)  # (h, H)
    ax = _upsample_matrix(w, W, masks.device, dtype)  # (w, W)
    m = masks.to(dtype)
    inside = torch.einsum("yH,brHW,xW->bryx", ay, m, ax)
    total = torch.outer(ay.sum(1), ax.sum(1))
    best = (inside / total.clamp_min(1e-30)).flatten(2).amax(dim=2)
    empty = m.flatten(2).sum(dim=2) == 0
    return torch.where(empty, torch.full_like(best, float("nan")), best.clamp(max=1.0))
