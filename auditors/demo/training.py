"""The demo's small CNN, its preprocessing, and seeded training of the shortcut and control models."""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch import nn

from auditors.data.geometry import placement_for, warp_image
from auditors.demo.posters import CLASSES, INPUT_SIZE, NORM_MEAN, NORM_STD, Poster
from auditors.models.threads import torch_threads

__all__ = ["build_demo_cnn", "preprocess", "init_model", "train_model", "accuracy"]


def build_demo_cnn(num_classes: int = len(CLASSES)) -> nn.Module:
    """Four conv blocks (128 px -> 16x16 map) -> global average pool -> linear.

    The last block's output (module ``0``, the ``features`` stack) is what CAM auto-detection
    picks; 16x16 keeps the badge (about a third of the width, an eighth of the height)
    resolvable in the heatmap. Narrow widths keep a CPU training run to seconds.
    """

    def block(cin: int, cout: int, stride: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

    features = nn.Sequential(*block(3, 8, 2), *block(8, 16, 2), *block(16, 32, 2), *block(32, 48, 1))
    return nn.Sequential(features, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(48, num_classes))


def preprocess(images: list[np.ndarray]) -> torch.Tensor:
    """RGB uint8 posters -> normalised NCHW float, exactly as the audit pipeline does it."""
    batch = np.stack([warp_image(img, placement_for(img.shape[:2], INPUT_SIZE, "stretch")) for img in images])
    x = torch.from_numpy(batch).float().div_(255.0)
    x = (x - torch.tensor(NORM_MEAN)) / torch.tensor(NORM_STD)
    return x.permute(0, 3, 1, 2).contiguous()


EPOCHS = 12
BATCH_SIZE = 32
LEARNING_RATE = 3e-3


def _labels(posters: list[Poster]) -> torch.Tensor:
    return torch.tensor([p.label for p in posters], dtype=torch.long)


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Top-1 accuracy in eval mode, in chunks to bound memory."""
    model.eval()
    correct = sum(int((model(xb).argmax(1) == yb).sum()) for xb, yb in zip(x.split(256), y.split(256)))
    return correct / max(1, len(y))


def init_model(seed: int) -> nn.Module:
    """Seeded initial weights. Uses torch's global RNG, so call it from one thread at a time."""
    torch.manual_seed(seed)
    return build_demo_cnn(len(CLASSES))


def train_model(model: nn.Module, x: torch.Tensor, y: torch.Tensor, seed: int, epochs: int | None = None) -> nn.Module:
    """AdamW + one-cycle schedule on in-memory tensors.

    Only a private generator is used (for shuffling), never the global RNG, so two models can
    train in parallel threads and still get the same weights on every run.
    """
    epochs = EPOCHS if epochs is None else epochs
    opt = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, weight_decay=1e-4)
    steps = epochs * ((len(y) + BATCH_SIZE - 1) // BATCH_SIZE)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=LEARNING_RATE, total_steps=steps)
    gen = torch.Generator().manual_seed(seed)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(y), generator=gen).split(BATCH_SIZE):
            opt.zero_grad(set_to_none=True)
            loss_fn(model(x[idx]), y[idx]).backward()
            opt.step()
            sched.step()
    return model.eval()


def _train_all(jobs: dict[str, tuple[torch.Tensor, torch.Tensor]], seed: int) -> dict[str, tuple[nn.Module, float]]:
    """Train one model per job, in parallel threads with one intra-op thread each.

    Why not one model at a time with all cores: these convolutions are too small to scale
    across cores, and on a busy machine torch's multi-threaded kernels spin-wait (measured
    here: 2 threads 10x slower than 1 under load). One thread per model is robust and uses
    both cores. Returns name -> (trained model, seconds).
    """
    models = {name: init_model(seed) for name in jobs}  # main thread: deterministic init

    def run(name: str) -> tuple[nn.Module, float]:
        torch.set_num_threads(1)  # intra-op setting is per thread with OpenMP
        t0 = time.perf_counter()
        return train_model(models[name], *jobs[name], seed=seed), time.perf_counter() - t0

    workers = max(1, min(len(jobs), os.cpu_count() or 1))
    with torch_threads(1), ThreadPoolExecutor(max_workers=workers, thread_name_prefix="demo-train") as pool:
        futures = {name: pool.submit(run, name) for name in jobs}
        return {name: f.result() for name, f in futures.items()}
