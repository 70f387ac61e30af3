"""CUDA out-of-memory on a batch: halve the batch and retry, instead of losing the chunk.

Why here and not in the engine: the batch size is a run setting (``cam.batch_size``), and the
run records how often it had to split (``summary.json`` ``oom``), so a user can lower it. A
batch of one that still runs out of memory is a real error and propagates.

Every GPU call of the chunk loop goes through :func:`with_backoff`: the one-target CAM batch,
the top-k batch (``cam.target: topk``, k maps per image), ``cam.layers`` (their maps come from
the same call), the intervention re-runs (2 edited copies per image) and the failure analysis'
true-class maps. Each image's result depends on that image alone, so split results equal one call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields, is_dataclass
from typing import Any, TypeVar

import torch

from auditors.cam import CamEngine
from auditors.cam.engine import CamBatch, TopkCamBatch

__all__ = ["compute_with_backoff", "topk_with_backoff", "classes_with_backoff", "chosen_with_backoff", "with_backoff",
           "join_batches"]

_T = TypeVar("_T")


def _free_cuda() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def join_batches(parts: list[Any]) -> Any:
    """Concatenate per-part results along the batch: a dataclass of tensors (CamBatch,
    TopkCamBatch) field by field, dicts of tensors key by key, tensors with ``torch.cat``."""
    first = parts[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(parts)
    if isinstance(first, dict):
        return {k: join_batches([p[k] for p in parts]) for k in first}
    if is_dataclass(first):
        return type(first)(**{f.name: join_batches([getattr(p, f.name) for p in parts]) for f in fields(first)})
    raise TypeError(f"cannot join batch results of type {type(first).__name__}")


def with_backoff(call: Callable[[int, int], _T], n: int, stats: dict[str, int], join: Callable[[list[_T]], _T] = join_batches,
                 stage: str = "cam") -> _T:
    """``call(0, n)``; on ``torch.cuda.OutOfMemoryError`` ``call(lo, mid)`` and ``call(mid, hi)``, recursively.

    ``call(lo, hi)`` computes rows ``lo:hi`` of the batch. ``stats["oom_splits"]`` counts every
    split (summed over the run into ``summary.json`` ``oom.batches_split``) and
    ``stats["oom_splits_<stage>"]`` the splits of that stage.
    """
    if n < 1:
        raise ValueError(f"with_backoff needs a non-empty batch, got n={n}")

    def run(lo: int, hi: int) -> _T:
        try:
            return call(lo, hi)
        except torch.cuda.OutOfMemoryError:
            if hi - lo <= 1:
                raise
            _free_cuda()
            stats["oom_splits"] = stats.get("oom_splits", 0) + 1
            stats[f"oom_splits_{stage}"] = stats.get(f"oom_splits_{stage}", 0) + 1
            mid = lo + (hi - lo) // 2
            return join([run(lo, mid), run(mid, hi)])

    return run(0, n)


def compute_with_backoff(engine: CamEngine, x: torch.Tensor, targets: torch.Tensor | None, stats: dict[str, int],
                         stage: str = "cam") -> CamBatch:
    """``engine.compute(x, targets)`` (with its ``cam.layers`` maps), halved on out-of-memory."""
    return with_backoff(lambda lo, hi: engine.compute(x[lo:hi], None if targets is None else targets[lo:hi]),
                        len(x), stats, stage=stage)


def topk_with_backoff(engine: CamEngine, x: torch.Tensor, k: int, stats: dict[str, int]) -> TopkCamBatch:
    """``engine.compute_topk(x, k)`` (k maps per image), halved on out-of-memory."""
    return with_backoff(lambda lo, hi: engine.compute_topk(x[lo:hi], k), len(x), stats, stage="topk")


def classes_with_backoff(engine: CamEngine, x: torch.Tensor, classes: torch.Tensor, stats: dict[str, int],
                         stage: str = "failures") -> TopkCamBatch:
    """``engine.compute_classes(x, classes)``, halved on out-of-memory."""
    return with_backoff(lambda lo, hi: engine.compute_classes(x[lo:hi], classes[lo:hi]), len(x), stats, stage=stage)


def chosen_with_backoff(engine: CamEngine, x: torch.Tensor, choose: Callable[[torch.Tensor, int, int], torch.Tensor],
                        stats: dict[str, int], stage: str = "cam") -> TopkCamBatch:
    """``engine.compute_chosen`` on rows ``lo:hi`` with ``choose(logits, lo, hi)``, halved on out-of-memory."""
    return with_backoff(lambda lo, hi: engine.compute_chosen(x[lo:hi], lambda lg: choose(lg, lo, hi)),
                        len(x), stats, stage=stage)
