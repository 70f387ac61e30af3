"""Gradients of the target scores to several tensors at once (layers, the input).

Why one call: a shallower layer's gradient passes through every deeper one, so asking autograd
for all of them together costs one backward, not one per layer. For k targets per image the k
one-hot scores go through ``is_grads_batched`` (vmap); where an op has no vmap rule the k
gradients are taken one by one on the retained graph.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from auditors.cam._validation import CamParameterError

__all__ = ["grads_to"]


def grads_to(out: Tensor, inputs: list[Tensor], classes: Tensor, names: list[str], *, retain: bool) -> list[Tensor]:
    """d score / d each input: (B, ...) for one class per image, (B, k, ...) for k."""
    if classes.ndim == 1:
        grads = torch.autograd.grad(out.gather(1, classes[:, None]).sum(), inputs, retain_graph=retain, allow_unused=True)
    else:
        k = classes.shape[1]
        onehot = torch.zeros((k, *out.shape), dtype=out.dtype, device=out.device)
        onehot.scatter_(2, classes.T.unsqueeze(-1), 1)
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*batching rule.*")
                grads = torch.autograd.grad(out, inputs, onehot, retain_graph=True, is_grads_batched=True, allow_unused=True)
        except RuntimeError:  # no vmap support (e.g. the guided gates): k calls on the retained graph
            per = [torch.autograd.grad(out, inputs, onehot[i], retain_graph=True, allow_unused=True) for i in range(k)]
            grads = tuple(None if p[0] is None else torch.stack(p) for p in zip(*per))
        grads = tuple(None if g is None else g.movedim(0, 1) for g in grads)
    for name, g in zip(names, grads):
        if g is None:
            raise CamParameterError(f"layer {name!r} does not influence the model output; choose a layer that does")
    return list(grads)
