"""CAM variants of the chunk loop: top-k targets, several layers, and the saved maps.

Why a module of its own: the chunk loop (:mod:`auditors.audit.chunk`) keeps one image = one
row for images.parquet; everything a variant adds is computed here from the same forward:

* ``cam.target: topk``: images.parquet keeps the rank-0 target (the predicted class) with
  ``target_rank`` = 0, and targets.parquet holds one row per image and rank (0..k-1).
* ``cam.layers``: ``<region>_mass@<layer>`` and ``<region>_lift@<layer>`` columns.
* ``output.save_cams``: float16 copies of the maps for cams.npz.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from auditors.audit.oom import chosen_with_backoff, compute_with_backoff, topk_with_backoff
from auditors.cam import CamBatch, CamEngine
from auditors.cam.engine import TopkCamBatch
from auditors.config.schema import AuditConfig
from auditors.measure.metrics import region_metrics, upsample_maps

__all__ = ["CamRun", "run_cams", "labels_shared_forward", "variant_columns", "target_columns", "layer_values",
           "target_rows", "saved_maps", "image_maps", "LAYER_STATS"]

#: Per-layer statistics written as ``<region>_<stat>@<layer>``.
LAYER_STATS = ("mass", "lift")


@dataclass
class CamRun:
    """The rank-0 batch every other stage uses, plus the top-k batch when ``cam.target: topk``."""

    primary: CamBatch
    classes: Tensor | None = None  # (B, k)
    maps: Tensor | None = None  # (B, k, h, w)
    layer_maps: dict[str, Tensor] | None = None  # name -> (B, k, h, w)
    #: failure analysis: (B, 2) maps of [predicted class, true label] from the same forward
    pred_true: TopkCamBatch | None = None


def labels_shared_forward(cfg: AuditConfig) -> bool:
    """Whether true-label maps come from the main forward (see :func:`run_cams`): one target at
    one layer without guided backprop, where k maps cost one forward and a gradient to the
    target layer only (free for a GAP + linear head). Top-k, ``cam.layers`` and guided
    Grad-CAM would pay k backward passes for every image: there only mistakes get a second pass."""
    return cfg.cam.target != "topk" and not cfg.cam.layers and cfg.cam.method != "guided_gradcam"


def run_cams(engine: CamEngine, cfg: AuditConfig, x: Tensor, targets: Tensor | None, oom_stats: dict[str, int] | None = None,
             labels: Tensor | None = None) -> CamRun:
    """One forward for whatever the config asks (one target or top-k; one layer or several).

    ``labels``: (B,) true class indices (-1 where unknown) for failure analysis: where
    :func:`labels_shared_forward` allows, ``pred_true`` then holds the predicted-class and
    true-label maps of every image from the same forward. A CUDA out-of-memory batch is halved
    and retried (:mod:`auditors.audit.oom`), splits counted in ``oom_stats``."""
    stats = {} if oom_stats is None else oom_stats
    if labels is not None and labels_shared_forward(cfg):
        return _with_labels(engine, x, targets, labels.to(x.device), stats)
    if cfg.cam.target != "topk":
        return CamRun(compute_with_backoff(engine, x, targets, stats))
    top = topk_with_backoff(engine, x, cfg.cam.k, stats)
    return CamRun(_column(top, 0), classes=top.classes, maps=top.maps, layer_maps=top.layer_maps)


def _column(top: TopkCamBatch, j: int) -> CamBatch:
    """Column ``j`` of a k-maps batch as a one-target batch (with its layer maps)."""
    return CamBatch(maps=top.maps[:, j], logits=top.logits, targets=top.classes[:, j], degenerate=top.degenerate[:, j],
                    layer_maps={n: m[:, j] for n, m in top.layer_maps.items()})


def _with_labels(engine: CamEngine, x: Tensor, targets: Tensor | None, labels: Tensor, stats: dict[str, int]) -> CamRun:
    """Target maps plus [predicted, true] maps from one forward: columns [pred, true] when the
    target is the prediction, else [target, pred, true] (an unknown label repeats the prediction)."""
    tgt = None if targets is None else targets.to(x.device)

    def choose(lg: Tensor, lo: int, hi: int) -> Tensor:
        pred = lg.argmax(dim=1)
        lab = labels[lo:hi]
        cols = [pred, torch.where(lab >= 0, lab, pred)]
        return torch.stack(cols if tgt is None else [tgt[lo:hi], *cols], dim=1)

    both = chosen_with_backoff(engine, x, choose, stats)
    first = 0 if tgt is None else 1  # where [pred, true] start
    pred_true = TopkCamBatch(maps=both.maps[:, first:first + 2], logits=both.logits,
                             classes=both.classes[:, first:first + 2], degenerate=both.degenerate[:, first:first + 2])
    return CamRun(_column(both, 0), pred_true=pred_true)


def _layer_column_names(cfg: AuditConfig, regions: list[str]) -> list[str]:
    return [f"{r}_{s}@{layer}" for layer in cfg.cam.layers or [] for r in regions for s in LAYER_STATS]


def variant_columns(cfg: AuditConfig, regions: list[str]) -> dict[str, str]:
    """Columns images.parquet gains from the variants (none by default)."""
    cols = {"target_rank": "int64"} if cfg.cam.target == "topk" else {}
    cols.update({c: "float64" for c in _layer_column_names(cfg, regions)})
    return cols


def target_columns(cfg: AuditConfig, regions: list[str]) -> dict[str, str]:
    """targets.parquet: one row per image and target rank."""
    cols = {
        "path": "string", "label": "string", "pred": "string", "confidence": "float64",
        "target_rank": "int64", "target": "string", "target_prob": "float64", "cam_status": "string",
    }
    for r in regions:
        cols.update({f"{r}_mass": "float64", f"{r}_area": "float64", f"{r}_lift": "float64", f"{r}_hit": "float64"})
    cols.update({c: "float64" for c in _layer_column_names(cfg, regions)})
    return cols


def _metrics(maps: Tensor, masks: Tensor, size: tuple[int, int], tol: int, failed: np.ndarray) -> dict[str, np.ndarray]:
    met = {k: v.cpu().numpy() for k, v in region_metrics(upsample_maps(maps, size), masks, tol).items()}
    for v in met.values():
        v[failed] = np.nan  # a region that could not be built has no metrics, not zero ones
    return met


def layer_values(
    layer_maps: dict[str, Tensor], masks: Tensor, regions: list[str], size: tuple[int, int], tol: int, failed: np.ndarray
) -> list[dict[str, float]]:
    """Per image: ``<region>_<stat>@<layer>`` for every layer in ``layer_maps`` ((B, h, w) each)."""
    n = len(failed)
    out: list[dict[str, float]] = [{} for _ in range(n)]
    for layer, maps in layer_maps.items():
        met = _metrics(maps, masks, size, tol, failed)
        for i in range(n):
            for j, r in enumerate(regions):
                for s in LAYER_STATS:
                    out[i][f"{r}_{s}@{layer}"] = float(met[s][i, j])
    return out


def _status(total: float) -> str:
    if not np.isfinite(total):
        return "nonfinite"
    return "ok" if total > 0 else "zero"


def target_rows(
    run: CamRun, base: list[dict[str, Any]], masks: Tensor, regions: list[str], size: tuple[int, int], tol: int,
    failed: np.ndarray, names: list[str],
) -> list[dict[str, Any]]:
    """targets.parquet rows for every rank; ``base`` holds each image's path/label/pred/confidence."""
    assert run.maps is not None and run.classes is not None
    probs = run.primary.probs.gather(1, run.classes).cpu().numpy()
    classes = run.classes.cpu().numpy()
    rows: list[dict[str, Any]] = []
    for rank in range(run.maps.shape[1]):
        maps = run.maps[:, rank]
        met = _metrics(maps, masks, size, tol, failed)
        totals = maps.sum(dim=(1, 2)).cpu().numpy()
        layers = layer_values({n: m[:, rank] for n, m in (run.layer_maps or {}).items()}, masks, regions, size, tol, failed)
        for i, b in enumerate(base):
            c = int(classes[i, rank])
            row = {**b, "target_rank": rank, "target": names[c] if 0 <= c < len(names) else str(c),
                   "target_prob": float(probs[i, rank]), "cam_status": _status(float(totals[i]))}
            for j, r in enumerate(regions):
                for s in ("mass", "area", "lift", "hit"):
                    row[f"{r}_{s}"] = float(met[s][i, j])
            row.update(layers[i])
            rows.append(row)
    return rows


def _small(m: Tensor) -> np.ndarray:
    """float16 copy scaled to max 1: region masses are scale-free, and float16 neither overflows
    nor flushes a small-valued map to zero this way."""
    m = m.detach().float()
    peak = m.amax(dim=(-2, -1), keepdim=True)
    m = torch.where(peak > 0, m / peak.clamp_min(1e-30), torch.zeros_like(m))
    return torch.nan_to_num(m, nan=0.0).cpu().numpy().astype(np.float16)


def image_maps(run: CamRun) -> list[dict[str, np.ndarray]]:
    """Per image, the maps cams.npz saves, keyed by member suffix: ``""`` -> the target layer's
    map ((h, w), or (k, h, w) for top-k), ``"@<layer>"`` -> each cam.layers map in the same form.
    Per image so that the result store can keep them with the image's row."""
    topk = run.maps is not None
    main = run.maps if topk else run.primary.maps
    layers = run.layer_maps if topk else run.primary.layer_maps
    out: list[dict[str, np.ndarray]] = []
    for i in range(len(main)):
        maps = {"": _small(main[i])}
        for name, m in (layers or {}).items():
            maps[f"@{name}"] = _small(m[i])
        out.append(maps)
    return out


def saved_maps(run: CamRun, paths: list[str]) -> dict[str, np.ndarray]:
    """cams.npz entries: ``<path>`` -> the target layer's map ((h, w), or (k, h, w) for top-k);
    ``<path>@<layer>`` -> each cam.layers map in the same form."""
    return {p + suffix: m for p, maps in zip(paths, image_maps(run)) for suffix, m in maps.items()}
