"""CUDA out-of-memory on a batch: halve the batch and retry, instead of losing the chunk.

Why here and not in the engine: the batch size is a run setting (``cam.batch_size``), and the
run records how often it had to split (``summary.json`` ``oom``), so a user can lower it. A
batch of one that still runs out of memory is a real error and propagates.
"""

from __future__ import annotations

import torch

from auditors.cam import CamEngine
from auditors.cam.engine import CamBatch

__all__ = ["compute_with_backoff"]


def _free_cuda() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def compute_with_backoff(engine: CamEngine, x: torch.Tensor, targets: torch.Tensor | None, stats: dict[str, int]) -> CamBatch:
    """``engine.compute(x, targets)``; on ``torch.cuda.OutOfMemoryError`` split in halves, recursively.

    ``stats["oom_splits"]`` counts the splits (summed over the run into ``summary.json``).
    Results are identical to one call: every image's map depends on that image alone.
    """
    try:
        out = engine.compute(x, targets)
    except torch.cuda.OutOfMemoryError:
        if len(x) <= 1:
            raise
        _free_cuda()
        stats["oom_splits"] = stats.get("oom_splits", 0) + 1
        half = len(x) // 2
        parts = [
            compute_with_backoff(engine, x[:half], None if targets is None else targets[:half], stats),
            compute_with_backoff(engine, x[half:], None if targets is None else targets[half:], stats),
        ]
        return CamBatch(
            maps=torch.cat([p.maps for p in parts]),
            logits=torch.cat([p.logits for p in parts]),
            targets=torch.cat([p.targets for p in parts]),
            degenerate=torch.cat([p.degenerate for p in parts]),
            layer_maps={n: torch.cat([p.layer_maps[n] for p in parts]) for n in parts[0].layer_maps},
        )
    return out
