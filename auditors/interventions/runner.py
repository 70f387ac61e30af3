"""Run the model on region-removed and placebo-edited copies of a batch, next to each other.

The effect of a region is the confidence its removal costs beyond what an equal-area edit
elsewhere (the placebo) costs: "the model needs this" rather than "any occlusion hurts".
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from auditors.cam import CamBatch, CamEngine
from auditors.config.schema import CounterfactualConfig
from auditors.data.batches import LoadedImage, Preprocess, to_input
from auditors.data.geometry import image_area_mask
from auditors.interventions.edits import image_seed, plan_intervention
from auditors.measure.metrics import region_metrics, upsample_maps
from auditors.models.engines import class_name

__all__ = ["region_counterfactuals", "counterfactual_columns"]


def counterfactual_columns(cf: CounterfactualConfig, regions: list[str]) -> dict[str, str]:
    """Per-image intervention columns, for each intervened region (``cf.intervened(regions)``,
    ``regions`` being the enabled ones)."""
    cols: dict[str, str] = {}
    for r in cf.intervened(regions):
        for edit in ("removed", "placebo"):
            cols.update({f"{r}_{edit}_pred": "string", f"{r}_{edit}_conf": "float64",
                         f"{r}_{edit}_flip": "float64", f"{r}_{edit}_mass": "float64"})
        cols.update({f"{r}_placebo_overlap": "float64", f"{r}_effect": "float64", f"{r}_placebo_status": "string"})
    return cols


def _avoid_masks(masks: np.ndarray, regions: list[str], r: str) -> np.ndarray | None:
    """Union of the other regions a placebo of ``r`` must not touch (all but background).

    A text placebo that paints over the frame would measure the frame, not "any occlusion".
    """
    others = [k for k, name in enumerate(regions) if name not in (r, "background")]
    return masks[:, others].any(axis=1) if others else None


def region_counterfactuals(
    engine: CamEngine,
    cf: CounterfactualConfig,
    prep: Preprocess,
    classes: list[str],
    device: torch.device,
    loaded: list[LoadedImage],
    masks: np.ndarray,
    regions: list[str],
    pred: np.ndarray,
    conf: np.ndarray,
    targets: torch.Tensor,
    compute: Callable[[torch.Tensor, torch.Tensor], CamBatch] | None = None,
) -> tuple[list[dict], list[dict[str, dict]]]:
    """Re-run model + CAM on region-removed and placebo-edited views of the batch.

    ``compute(x, targets)``: how a batch of edited views is run (default ``engine.compute``; the
    chunk loop passes one that halves a batch on CUDA out-of-memory: the re-run batch holds two
    edited copies per image, so it is the first to run out).
    Returns per-image columns and per-image edited views (kept only for gallery images).
    """
    compute = engine.compute if compute is None else compute
    columns: list[dict] = [{} for _ in loaded]
    views: list[dict[str, dict]] = [{} for _ in loaded]
    size = prep.input_size
    contents = [image_area_mask(item.placement) for item in loaded]
    for r in cf.intervened(regions):
        j = regions.index(r)
        avoid = _avoid_masks(masks, regions, r)
        plans = [
            plan_intervention(item.model_view, masks[i, j], method=cf.method, radius=cf.radius, margin=cf.margin,
                              seed=image_seed(cf.seed, item.digest, r), tries=cf.placebo_tries,
                              avoid=None if avoid is None else avoid[i], content=contents[i], tolerance=cf.placebo_max_overlap)
            for i, item in enumerate(loaded)
        ]
        # No valid placebo: recorded with its reason, no effect (a broken control would hide the region).
        idx = [i for i, p in enumerate(plans) if p is not None and p.has_placebo]
        for i, p in enumerate(plans):
            if p is None or not p.has_placebo:
                columns[i].update({c: None for c in counterfactual_columns(cf, regions) if c.startswith(f"{r}_")})
                if p is not None:
                    columns[i][f"{r}_placebo_status"] = p.placebo_status
                    columns[i][f"{r}_placebo_overlap"] = p.placebo_overlap
        if not idx:
            continue
        n = len(idx)
        edited = [plans[i].removed for i in idx] + [plans[i].placebo for i in idx]
        edit_masks = np.stack([plans[i].removed_mask for i in idx] + [plans[i].placebo_mask for i in idx])
        out = compute(to_input(edited, prep, device), targets[idx].repeat(2))
        moved = region_metrics(upsample_maps(out.maps, size), torch.from_numpy(edit_masks[:, None]).to(device))["mass"][:, 0]
        probs = out.probs
        orig = torch.as_tensor(pred[idx], device=probs.device).repeat(2)
        kept_conf = probs.gather(1, orig[:, None])[:, 0].cpu().numpy()
        new_pred = probs.argmax(dim=1).cpu().numpy()
        moved = moved.cpu().numpy()
        for k, i in enumerate(idx):
            row = columns[i]
            for e, edit in enumerate(("removed", "placebo")):
                m = k + e * n
                row[f"{r}_{edit}_pred"] = class_name(classes, int(new_pred[m]))
                row[f"{r}_{edit}_conf"] = float(kept_conf[m])
                row[f"{r}_{edit}_flip"] = float(new_pred[m] != pred[i])
                row[f"{r}_{edit}_mass"] = float(moved[m])
                views[i][f"{r}_{edit}"] = {
                    "image": edited[m], "mask": edit_masks[m], "pred": row[f"{r}_{edit}_pred"], "confidence": float(kept_conf[m]),
                }
            row[f"{r}_placebo_overlap"] = plans[i].placebo_overlap
            row[f"{r}_placebo_status"] = plans[i].placebo_status
            # Confidence the removal costs beyond what an equal occlusion elsewhere costs.
            row[f"{r}_effect"] = row[f"{r}_placebo_conf"] - row[f"{r}_removed_conf"]
    return columns, views
