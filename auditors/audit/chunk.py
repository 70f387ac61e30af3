"""Audit one chunk of images: decode, regions, CAM, metrics. Pure library code, no Prefect.

A chunk is the unit of caching, retry and distribution, so this function takes everything it
needs as arguments and returns plain data (a DataFrame, an error list, gallery candidates).
Per-file problems are recorded and skipped; they never abort the chunk.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from auditors.measure.gallery import GalleryItem, top_k
from auditors.audit.exports import region_rows
from auditors.audit.failures import analyse_mistakes
from auditors.audit.oom import compute_with_backoff
from auditors.measure.failures import FailureItem, failure_columns, top_per_class
from auditors.audit.tables import empty_rows, row_columns, wants_instances
from auditors.audit.variants import image_maps, layer_values, run_cams, target_columns, target_rows
from auditors.config.schema import AuditConfig
from auditors.data.batches import Preprocess, load_batch, to_input
from auditors.data.discovery import Entry, chunked
from auditors.interventions.runner import region_counterfactuals
from auditors.measure.instances import INSTANCE_COLUMNS, instance_rows, top_instance_columns
from auditors.measure.metrics import display_map, reachable_mass, region_metrics, upsample_maps
from auditors.models.engines import class_name, engine_for
from auditors.models.loading import select_device
from auditors.regions import Region
from auditors.regions.build import RegionBuilder

__all__ = ["ChunkResult", "audit_chunk", "resolve_targets"]

@dataclass
class ChunkResult:
    rows: pd.DataFrame
    errors: list[dict[str, str]] = field(default_factory=list)
    instances: pd.DataFrame | None = None
    gallery: list[GalleryItem] = field(default_factory=list)
    #: the biggest pointing-game misses (regions.expected), for the report's pointing section
    misses: list[GalleryItem] = field(default_factory=list)
    stats: dict[str, int] = field(default_factory=dict)
    failures: pd.DataFrame | None = None  # failures.parquet rows (mistaken labelled images)
    failure_items: list[FailureItem] = field(default_factory=list)  # top-k per class, with pictures
    targets: pd.DataFrame | None = None  # cam.target: topk, one row per image and rank
    regions: list[dict] = field(default_factory=list)  # regions.parquet rows
    cams: dict[str, np.ndarray] = field(default_factory=dict)  # output.save_cams


def resolve_targets(target: str, classes: list[str], labels: list[str | None]) -> torch.Tensor | None:
    """Class indices for ``cam.target``: None (predicted / top-k), true labels, or one named class."""
    if target in ("predicted", "topk"):
        return None
    index = {c: i for i, c in enumerate(classes)}
    if target == "label":
        return torch.tensor([index[lbl] for lbl in labels], dtype=torch.long)
    return torch.full((len(labels),), index[target], dtype=torch.long)


def label_indices(loaded: list, classes: list[str]) -> torch.Tensor | None:
    """(B,) class index of each image's label, -1 where it has none or an unknown one; None
    when no image of the batch is labelled (nothing for failure analysis to compare)."""
    index = {c: i for i, c in enumerate(classes)}
    out = [index.get(it.entry.label, -1) if it.entry.label is not None else -1 for it in loaded]
    return torch.tensor(out, dtype=torch.long) if any(i >= 0 for i in out) else None


def _status(total: float) -> str:
    if not np.isfinite(total):
        return "nonfinite"
    return "ok" if total > 0 else "zero"


def audit_chunk(
    entries: list[Entry],
    cfg: AuditConfig,
    classes: list[str],
    target_layer: str,
    cache_path: Path | None,
    *,
    instances: bool | None = None,
    on_batch: Callable[[list[dict], list[list[dict]] | None, list[list[dict]], list[dict]], None] | None = None,
    failures_wanted: bool = False,
    on_failures: Callable[[list[dict]], None] | None = None,
    failure_pictures: bool = True,
) -> ChunkResult:
    """Audit ``entries`` (paths relative to ``cfg.dataset.root``) and return rows + errors.

    ``instances``: compute per-instance text rows even when the token stage is off (the result
    cache stores them so that turning tokens on later reuses the rows). ``on_batch(rows,
    instances_per_row, region_rows_per_row, variants_per_row)`` is called after every batch, so finished work can be
    stored before a crash or kill loses the rest of the chunk; ``variants_per_row[i]`` holds that image's
    targets.parquet rows (``"targets"``, top-k) and saved maps (``"maps"``: cams.npz member suffix -> map).

    ``failures_wanted``: also the true-class maps of mispredicted images, from the batch's own
    forward pass (failures.parquet rows); ``on_failures(rows)`` gets each batch's failure rows
    after its ``on_batch`` (so a stored failure row never outlives a missing audit row);
    ``failure_pictures=False`` keeps no pictures (the flow redraws the report's few).
    """
    device = select_device(cfg.cam.device)
    engine = engine_for(cfg.model, cfg.cam, target_layer, device)
    root = Path(cfg.dataset.root)
    prep = Preprocess.of(cfg.model)
    builder = RegionBuilder(cfg.regions, root, cache_path, use_gpu=device.type == "cuda", manifest=cfg.dataset.manifest)
    regions = builder.names
    size = prep.input_size
    errors: list[dict] = []
    records: list[dict] = []
    instance_records: list[dict] = []
    gallery: list[GalleryItem] = []
    failures: list[dict] = []
    failure_items: list[FailureItem] = []
    k = cfg.output.gallery_size
    with_instances = wants_instances(cfg) if instances is None else (instances and "text" in regions)
    stats_extra = {"oom_splits": 0}
    rank_region = "text" if "text" in regions else (regions[0] if regions else None)
    misses: list[GalleryItem] = []
    k_miss = cfg.regions.expected.gallery_size if "expected" in regions else 0
    target_records: list[dict] = []
    region_records: list[dict] = []
    cams: dict[str, np.ndarray] = {}

    for batch in chunked(entries, cfg.cam.batch_size):
        loaded = load_batch(batch, root, prep, errors)
        if not loaded:
            continue
        try:
            per_image: list[dict[str, Region]] = builder.build(loaded)
            masks = builder.model_masks(per_image, loaded)
            extras = builder.image_columns(per_image, masks)
            failed = builder.failed(per_image)
            errors += builder.errors(per_image, loaded)
        except Exception as exc:  # a region provider crash on one batch must not lose the chunk
            errors += [{"path": it.path, "stage": "regions", "reason": f"{type(exc).__name__}: {exc}"} for it in loaded]
            continue
        try:
            targets = resolve_targets(cfg.cam.target, classes, [item.entry.label for item in loaded])
            x = to_input([item.model_view for item in loaded], prep, device)
            labels = label_indices(loaded, classes) if failures_wanted and cfg.output.failures_per_class else None
            # one target or top-k, one layer or several: a CUDA out-of-memory batch is halved and retried
            run = run_cams(engine, cfg, x, targets, stats_extra, labels=labels)
            cam = run.primary
            maps = upsample_maps(cam.maps, size)
            masks_t = torch.from_numpy(masks).to(device)
            met = region_metrics(maps, masks_t, cfg.cam.pointing_tolerance)
            # The best lift a map at the target layer's resolution could reach, and lift against it.
            reach = reachable_mass(masks_t, tuple(cam.maps.shape[-2:]))
            met["max_lift"] = reach / met["area"].to(reach.dtype)
            met["norm_lift"] = met["mass"].to(reach.dtype) / reach
            met = {name: t.cpu().numpy() for name, t in met.items()}
            for name in met:  # a region that could not be built has no metrics, not zero ones
                met[name][failed] = np.nan
            probs = cam.probs
            conf_t, pred_t = probs.max(dim=1)
            target_prob = probs.gather(1, cam.targets[:, None])[:, 0].cpu().numpy()
            conf, pred = conf_t.cpu().numpy(), pred_t.cpu().numpy()
            tgt = cam.targets.cpu().numpy()
            totals = cam.maps.sum(dim=(1, 2)).cpu().numpy()
            cf_cols, cf_views = [{} for _ in loaded], [{} for _ in loaded]
            if cfg.counterfactual.enabled:
                cf_cols, cf_views = region_counterfactuals(
                    engine, cfg.counterfactual, prep, classes, device, loaded, masks, regions, pred, conf, cam.targets,
                    compute=lambda xe, te: compute_with_backoff(engine, xe, te, stats_extra, stage="interventions"),
                )
            tol = cfg.cam.pointing_tolerance
            by_layer = layer_values(cam.layer_maps, masks_t, regions, size, tol, failed)
            variants: list[dict] = [{"targets": None, "maps": None} for _ in loaded]  # per image, for on_batch
            if run.maps is not None:
                base = [{"path": it.entry.path, "label": it.entry.label, "pred": class_name(classes, int(pred[i])),
                         "confidence": float(conf[i])} for i, it in enumerate(loaded)]
                t_rows = target_rows(run, base, masks_t, regions, size, tol, failed, classes)
                target_records += t_rows
                for i, v in enumerate(variants):  # target_rows is rank-major: image i at i, i + B, ...
                    v["targets"] = t_rows[i::len(loaded)]
            if cfg.output.save_cams:
                for it, v, m in zip(loaded, variants, image_maps(run)):
                    v["maps"] = m
                    cams.update({it.entry.path + suffix: a for suffix, a in m.items()})
        except Exception as exc:
            errors += [{"path": it.path, "stage": "cam", "reason": f"{type(exc).__name__}: {exc}"} for it in loaded]
            continue
        f_rows: list[dict] = []
        if failures_wanted and cfg.output.failures_per_class:  # failure analysis: a true-class map for mispredicted images only
            k_pictures = cfg.output.failures_per_class if failure_pictures else 0
            try:
                f_rows, f_items = analyse_mistakes(engine, x, loaded, classes, pred, conf, masks, regions, failed, size,
                                                   cfg.cam.pointing_tolerance, k_pictures, stats_extra, run.pred_true)
                failures += f_rows
                failure_items = top_per_class(failure_items + f_items, k_pictures)
            except Exception as exc:  # the images stay audited; only their failure analysis is missing
                errors += [{"path": it.path, "stage": "failures", "reason": f"{type(exc).__name__}: {exc}"} for it in loaded]
        first = len(records)
        batch_instances: list[list[dict]] = []
        batch_regions: list[list[dict]] = []
        for i, item in enumerate(loaded):
            row = {
                "path": item.entry.path,
                "label": item.entry.label,
                "pred": class_name(classes, int(pred[i])),
                "confidence": float(conf[i]),
                "target": class_name(classes, int(tgt[i])),
                "target_prob": float(target_prob[i]),
                "cam_status": _status(float(totals[i])),
                "width": item.original.shape[1],
                "height": item.original.shape[0],
                "content_hash": item.digest,
            }
            row.update(extras[i])
            for j, r in enumerate(regions):
                for name in ("mass", "area", "lift", "hit", "max_lift", "norm_lift"):
                    row[f"{r}_{name}"] = float(met[name][i, j])
            if "expected" in regions:
                row["expected_hit_area"] = float(met["hit_area"][i, regions.index("expected")])
            row.update(cf_cols[i])
            row.update(by_layer[i])
            if run.maps is not None:
                row["target_rank"] = 0
            batch_regions.append(region_rows(row["path"], per_image[i], row["height"], row["width"]))
            region_records += batch_regions[-1]
            if with_instances and "text" in per_image[i]:
                inst = instance_rows(row["path"], row["label"], row["pred"], item.original, per_image[i]["text"],
                                     item.placement, maps[i], cfg.regions.text.min_score)
                instance_records += inst
                batch_instances.append(inst)
                row.update(top_instance_columns(inst, row["text_mass"]))
            elif with_instances:
                batch_instances.append([])
            records.append(row)
        if on_batch is not None:
            on_batch(records[first:], batch_instances if with_instances else None, batch_regions, variants)
        if on_failures is not None and f_rows:
            on_failures(f_rows)
        if k and rank_region is not None:
            j = regions.index(rank_region)
            ranked = sorted(((float(met["mass"][i, j]), i) for i in range(len(loaded)) if np.isfinite(met["mass"][i, j])), reverse=True)
            for score, i in ranked[:k]:
                row = records[first + i]
                gallery.append(
                    GalleryItem(
                        path=row["path"], label=row["label"], pred=row["pred"], confidence=row["confidence"], score=score,
                        metrics={c: row[c] for c in row if c.endswith(("_mass", "_area", "_lift", "_hit", "_effect", "_conf", "_flip"))},
                        image=loaded[i].model_view,
                        cam=display_map(maps[i]),
                        regions={r: masks[i, jj] for jj, r in enumerate(regions)},
                        text_polygons=per_image[i]["text"].model_polygons(loaded[i].placement) if "text" in per_image[i] else [],
                        edits=cf_views[i],
                    )
                )
            gallery = top_k(gallery, k)
        if k_miss:
            misses = top_k(misses + _pointing_misses(records[first:], loaded, maps, masks, regions), k_miss)
        del loaded, per_image, maps, cam, cf_views, run, x
    columns = row_columns(cfg)
    rows = pd.DataFrame.from_records(records, columns=list(columns)) if records else empty_rows(cfg)
    rows = rows.astype(columns)
    n_degenerate = int((rows["cam_status"] != "ok").sum())
    # Region errors leave the image audited (that region's metrics are NaN): not a failed image.
    n_failed = len({e["path"] for e in errors if e["stage"] not in ("regions", "failures")})
    stats = {"n_ok": len(records), "n_failed": n_failed, "n_degenerate": n_degenerate}
    stats.update(builder.stats)
    stats.update(stats_extra)
    fcols = failure_columns(regions)
    instances = None
    if with_instances:
        instances = pd.DataFrame.from_records(instance_records, columns=list(INSTANCE_COLUMNS)).astype(INSTANCE_COLUMNS)
    targets_df = None
    if cfg.cam.target == "topk":
        tcols = target_columns(cfg, regions)
        targets_df = pd.DataFrame.from_records(target_records, columns=list(tcols)).astype(tcols)
    return ChunkResult(rows=rows, errors=errors, gallery=gallery, stats=stats, instances=instances,
                       targets=targets_df, regions=region_records, cams=cams, misses=misses,
                       failures=pd.DataFrame.from_records(failures, columns=list(fcols)).astype(fcols) if failures else None,
                       failure_items=failure_items)


def _pointing_misses(rows: list[dict], loaded: list, maps: torch.Tensor, masks: np.ndarray, regions: list[str]) -> list[GalleryItem]:
    """Images whose heatmap peak missed the annotated region, scored by the attention it left
    outside it (1 - expected_mass): the biggest misses first."""
    j = regions.index("expected")
    out = []
    for i, row in enumerate(rows):
        if row["expected_hit"] != 0.0 or not np.isfinite(row["expected_mass"]) or not row["expected_area"] > 0:
            continue
        out.append(GalleryItem(
            path=row["path"], label=row["label"], pred=row["pred"], confidence=row["confidence"],
            score=1.0 - row["expected_mass"],
            metrics={c: row[c] for c in row if c.startswith("expected_")},
            image=loaded[i].model_view, cam=display_map(maps[i]), regions={"expected": masks[i, j]},
        ))
    return out
