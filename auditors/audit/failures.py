"""Failure analysis per batch (the chunk loop with ``failures_wanted``: the chunk pass for the images
it computes, the flow's ``failures`` step for the few it must redo): a second heatmap, for the true
class, of mistaken images.

The predicted-class and the true-class map come from one forward, whatever ``cam.target`` the
main pass used, so the two maps are comparable: the batch's own forward in the chunk pass (one
target at one layer: :func:`auditors.audit.variants.labels_shared_forward`), else one
:meth:`CamEngine.compute_classes` call on the mispredicted labelled rows only.
"""

from __future__ import annotations

import numpy as np
import torch

from auditors.audit.oom import classes_with_backoff
from auditors.cam.engine import TopkCamBatch
from auditors.data.batches import LoadedImage
from auditors.measure.failures import FailureItem, leaned_on, top_per_class
from auditors.measure.metrics import display_map, region_metrics, upsample_maps

__all__ = ["analyse_mistakes"]


def analyse_mistakes(
    engine, x: torch.Tensor, loaded: list[LoadedImage], classes: list[str], pred: np.ndarray, conf: np.ndarray,
    masks: np.ndarray, regions: list[str], failed: np.ndarray, size: tuple[int, int], tolerance: int, k: int,
    oom_stats: dict[str, int] | None = None, pred_true: TopkCamBatch | None = None,
) -> tuple[list[dict], list[FailureItem]]:
    """Rows for failures.parquet and the top-``k`` mistakes per class of this batch (with pictures;
    ``k=0``: rows only).

    ``pred_true``: the batch's [predicted, true] maps from its own forward
    (:func:`auditors.audit.variants.run_cams` with labels); without it the mistakes are run
    again. ``oom_stats``: a CUDA out-of-memory batch is halved and retried, splits counted there."""
    index = {c: i for i, c in enumerate(classes)}
    wrong = [i for i, it in enumerate(loaded)
             if it.entry.label is not None and it.entry.label in index and index[it.entry.label] != int(pred[i])]
    if not wrong:
        return [], []
    sel = torch.tensor(wrong, dtype=torch.long, device=x.device)
    if pred_true is not None:
        both = TopkCamBatch(maps=pred_true.maps[sel], logits=pred_true.logits[sel], classes=pred_true.classes[sel],
                            degenerate=pred_true.degenerate[sel])
    else:
        pairs = torch.tensor([[int(pred[i]), index[loaded[i].entry.label]] for i in wrong], dtype=torch.long)
        both = classes_with_backoff(engine, x.index_select(0, sel), pairs.to(x.device), {} if oom_stats is None else oom_stats)
    true_prob = both.probs.gather(1, both.classes[:, 1:2])[:, 0].cpu().numpy()
    b, _, h, w = both.maps.shape
    maps = upsample_maps(both.maps.reshape(b * 2, h, w), size).reshape(b, 2, *size)
    m = torch.from_numpy(masks[wrong]).to(maps.device)
    met = [region_metrics(maps[:, j], m, tolerance) for j in (0, 1)]
    met = [{n: t.cpu().numpy() for n, t in mj.items()} for mj in met]
    rows, items = [], []
    for n, i in enumerate(wrong):
        row: dict = {"path": loaded[i].entry.path, "label": loaded[i].entry.label, "pred": classes[int(pred[i])],
                     "confidence": float(conf[i]), "true_prob": float(true_prob[n])}
        for j, r in enumerate(regions):
            for which, mj in (("pred", met[0]), ("true", met[1])):
                bad = bool(failed[i, j])
                row[f"{r}_mass_{which}"] = np.nan if bad else float(mj["mass"][n, j])
                row[f"{r}_lift_{which}"] = np.nan if bad else float(mj["lift"][n, j])
        row["leaned_on"] = leaned_on({r: row[f"{r}_lift_pred"] for r in regions})
        rows.append(row)
        if not k:
            continue
        items.append(FailureItem(
            path=row["path"], label=row["label"], pred=row["pred"], confidence=row["confidence"],
            true_prob=row["true_prob"], image=loaded[i].model_view, cam_pred=display_map(maps[n, 0]),
            cam_true=display_map(maps[n, 1]), metrics={c: v for c, v in row.items() if c not in ("path", "label", "pred")},
            regions={r: masks[i, j] for j, r in enumerate(regions)},
        ))
    return rows, top_per_class(items, k)
