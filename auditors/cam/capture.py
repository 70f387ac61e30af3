"""Capture the target layer's output during one forward, with the hook always removed afterwards.

Why a leaf: with ``requires_grad=True`` the hook swaps the layer output for a fresh leaf and
switches grad mode on from that point of the forward. Run the model under ``torch.no_grad()``
and autograd records only the head *after* the target layer: the backbone keeps inference-style
memory, parameters may be frozen or not, and ``autograd.grad(score, leaf)`` never sets a
parameter's ``.grad``. ``no_grad``'s exit restores the caller's grad mode.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn

__all__ = ["Captured", "capture", "capture_many"]


@dataclass
class Captured:
    """What the hook saw: the activation (a leaf when gradients are wanted) and how often it fired."""

    name: str
    activation: Tensor | None = None
    calls: int = 0

    def get(self) -> Tensor:
        if self.activation is None:
            raise RuntimeError(
                f"target layer {self.name!r} was not called in the forward pass; "
                "pick a module that runs in model.forward"
            )
        return self.activation


@contextlib.contextmanager
def capture(layer: nn.Module, name: str, *, requires_grad: bool) -> Iterator[Captured]:
    """Hook ``layer`` for the duration of the block.

    ``requires_grad=False`` stores a copy (so in-place ops downstream, e.g. DenseNet's
    ``F.relu(features, inplace=True)``, cannot change it) and leaves the forward untouched.

    Thread-safe: one engine (one model) may serve several threads (``run.workers``). Hooks are
    registered on the shared layer, so every thread's hook fires on every thread's forward; each
    hook answers only forwards run by the thread that opened it (a forward runs in its caller's
    thread), and ignores the others.
    """
    cap = Captured(name)
    owner = threading.get_ident()

    def hook(_m: nn.Module, _inp: tuple, out: object) -> Tensor | None:
        if threading.get_ident() != owner:
            return None
        if not isinstance(out, Tensor):
            raise TypeError(
                f"target layer {name!r} returned {type(out).__name__}, not a Tensor; "
                "choose a module whose output is one tensor"
            )
        cap.calls += 1
        if cap.calls > 1:
            raise RuntimeError(
                f"target layer {name!r} ran {cap.calls} times in one forward (a shared module such as "
                "a reused ReLU); choose a module that runs once, e.g. its parent block"
            )
        if not requires_grad:
            cap.activation = out.detach().clone()
            return None
        torch.set_grad_enabled(True)  # record only from here on; the caller's no_grad() restores it
        leaf = out.detach().requires_grad_(True)
        cap.activation = leaf
        # A non-leaf copy goes downstream so in-place ops after the layer stay legal and leave
        # the captured activation intact.
        return leaf.clone()

    handle = layer.register_forward_hook(hook)
    try:
        yield cap
    finally:
        handle.remove()


@contextlib.contextmanager
def capture_many(layers: dict[str, nn.Module]) -> Iterator[dict[str, Captured]]:
    """Hook several layers so that ONE backward yields the gradient at every one of them.

    Why not one leaf per layer: a leaf cuts the graph, so a shallower layer's leaf would no
    longer reach the score through the deeper one. Instead an output that is already part of
    a graph (it depends on an earlier captured layer, or the whole forward records gradients,
    as guided backprop needs) is kept as the non-leaf tensor autograd differentiates to; an
    output that is not (the first captured layer in a ``no_grad`` forward) becomes a fresh leaf
    and switches recording on from there, exactly like :func:`capture`. Downstream modules get
    a clone either way, so in-place ops after a layer leave the captured tensor intact.
    """
    caps = {name: Captured(name) for name in layers}

    def make_hook(name: str):
        def hook(_m: nn.Module, _inp: tuple, out: object) -> Tensor:
            cap = caps[name]
            if not isinstance(out, Tensor):
                raise TypeError(f"layer {name!r} returned {type(out).__name__}, not a Tensor; choose a module whose output is one tensor")
            cap.calls += 1
            if cap.calls > 1:
                raise RuntimeError(f"layer {name!r} ran {cap.calls} times in one forward; choose a module that runs once")
            if out.requires_grad:
                cap.activation = out
                return out.clone()
            torch.set_grad_enabled(True)  # the caller's no_grad() restores it on exit
            leaf = out.detach().requires_grad_(True)
            cap.activation = leaf
            return leaf.clone()

        return hook

    handles = [module.register_forward_hook(make_hook(name)) for name, module in layers.items()]
    try:
        yield caps
    finally:
        for h in handles:
            h.remove()
