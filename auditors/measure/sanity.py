"""Model-randomisation sanity check (Adebayo et al., 2018, "Sanity Checks for Saliency Maps").

If re-initialising the top of the network barely changes the heatmaps, the heatmaps describe
the input (edges, contrast) rather than what the model learned, and no verdict should rest on
them. We re-initialise the classifier head(s) and the target layer, recompute CAMs for the same
target classes on a sample, and report the Spearman rank correlation with the trained maps.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from auditors.cam import CamEngine, get_module

__all__ = ["randomized_copy", "rank_correlation", "randomization_check"]


def _kind(m: nn.Module) -> str:
    return getattr(m, "original_name", type(m).__name__)  # TorchScript keeps the Python class name here


@torch.no_grad()
def randomized_copy(model: nn.Module, target_layer: str, seed: int = 0) -> tuple[nn.Module, list[str]]:
    """A copy of ``model`` whose target layer and Linear heads have fresh random weights."""
    rand = copy.deepcopy(model)
    names = [target_layer] + [n for n, m in rand.named_modules() if _kind(m) == "Linear"]
    gen = torch.Generator(device="cpu").manual_seed(seed)
    for name in names:
        for pname, p in get_module(rand, name).named_parameters():
            if p.ndim > 1:
                fan_in = p[0].numel()
                fresh = torch.randn(p.shape, generator=gen) * (2.0 / fan_in) ** 0.5
            elif "weight" in pname:  # norm-layer scales
                fresh = torch.ones(p.shape)
            else:
                fresh = torch.zeros(p.shape)
            p.copy_(fresh.to(p.device, p.dtype))
    return rand, names


def rank_correlation(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """Spearman correlation of each pair of maps (B, h, w); NaN where a map is constant.

    Tied values get their average rank (the textbook Spearman): after the ReLU many pixels are
    exactly 0, and ranking ties by pixel index instead gives two unrelated maps a spurious
    positive correlation (both orders follow the scan order).
    """
    from scipy.stats import rankdata  # imported here: only the sanity stage needs scipy.stats

    def ranks(x: torch.Tensor) -> torch.Tensor:
        flat = x.detach().flatten(1).double().cpu().numpy()
        return torch.from_numpy(rankdata(flat, method="average", axis=1))

    ra, rb = ranks(a), ranks(b)
    ra = ra - ra.mean(dim=1, keepdim=True)
    rb = rb - rb.mean(dim=1, keepdim=True)
    den = ra.norm(dim=1) * rb.norm(dim=1)
    rho = (ra * rb).sum(dim=1) / den
    constant = ((a.flatten(1).amax(1) == a.flatten(1).amin(1)) | (b.flatten(1).amax(1) == b.flatten(1).amin(1))).cpu()
    rho[constant] = float("nan")
    return rho.cpu().numpy()


def randomization_check(
    engine: CamEngine, x: torch.Tensor, max_rank_correlation: float, seed: int = 0
) -> dict:
    """Compare the engine's maps on ``x`` with those of a randomised copy of its model."""
    trained = engine.compute(x)
    rand_model, names = randomized_copy(engine.model, engine.target_layer, seed)
    # Same preprocessing and numerics as the audited engine: a different input size, autocast or
    # memory format would change the maps for reasons other than the randomised weights.
    rand_engine = CamEngine(
        rand_model, target_layer=engine.target_layer, method=engine.method, input_size=engine.input_size, amp=engine.amp,
        reshape_transform=engine.reshape_transform, channels_last=engine.channels_last, gradient=engine.gradient,
    )
    randomized = rand_engine.compute(x, trained.targets)
    rho = rank_correlation(trained.maps, randomized.maps)
    valid = rho[np.isfinite(rho)]
    mean = float(valid.mean()) if len(valid) else None
    sensitive = None if mean is None else bool(mean <= max_rank_correlation)
    if sensitive is None:
        verdict = "not determined (all maps constant)"
    elif sensitive:
        verdict = "explanations are model-sensitive"
    else:
        verdict = "explanations not model-sensitive"
    return {
        "n_images": int(x.shape[0]),
        "randomized_layers": names,
        "preprocessing": {"input_size": list(rand_engine.input_size), "amp": rand_engine.amp,
                          "channels_last": rand_engine.channels_last},
        "rank_correlation_mean": mean,
        "rank_correlation_median": float(np.median(valid)) if len(valid) else None,
        "max_rank_correlation": max_rank_correlation,
        "model_sensitive": sensitive,
        "verdict": verdict,
    }
