"""Audit one chunk of images: decode, regions, CAM, metrics. Pure library code, no Prefect.

A chunk is the unit of caching, retry and distribution, so this function takes everything it
needs as arguments and returns plain data (a DataFrame, an error list, gallery candidates).
Per-file problems are recorded and skipped; they never abort the chunk.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from auditors.cam import CamEngine
from auditors.config import AuditConfig
from auditors.counterfactual import image_seed, plan_intervention
from auditors.dataset import Entry, chunked
from auditors.errors import InputError
from auditors.gallery import GalleryItem, top_k
from auditors.geometry import Placement, placement_for, warp_image
from auditors.imageio import content_hash, load_rgb
from auditors.instances import INSTANCE_COLUMNS, instance_rows, top_instance_columns
from auditors.metrics import region_metrics, upsample_maps
from auditors.models import get_model, select_device
from auditors.regions import Region
from auditors.regions.build import RegionBuilder, region_names

__all__ = [
    "ChunkResult", "audit_chunk", "region_names", "row_columns", "empty_rows", "resolve_targets", "sanity_check",
    "counterfactual_columns",
]

_ENGINES: dict[tuple, CamEngine] = {}
_ENGINE_LOCK = threading.Lock()


@dataclass
class ChunkResult:
    rows: pd.DataFrame
    errors: list[dict[str, str]] = field(default_factory=list)
    instances: pd.DataFrame | None = None
    gallery: list[GalleryItem] = field(default_factory=list)
    stats: dict[str, int] = field(default_factory=dict)


def row_columns(cfg: AuditConfig) -> dict[str, str]:
    """images.parquet columns and dtypes (the output contract; extend, never rename)."""
    regions = region_names(cfg)
    cols = {
        "path": "string",
        "label": "string",
        "pred": "string",
        "confidence": "float64",
        "target": "string",
        "target_prob": "float64",
        "cam_status": "string",
        "width": "int64",
        "height": "int64",
        "content_hash": "string",
    }
    cols.update(RegionBuilder.column_dtypes(cfg))
    for r in regions:
        cols.update({f"{r}_mass": "float64", f"{r}_area": "float64", f"{r}_lift": "float64", f"{r}_hit": "float64"})
    if wants_instances(cfg):
        cols.update({"text_top_instance": "Int64", "text_top_instance_mass": "float64", "text_top_instance_share": "float64"})
    cols.update(counterfactual_columns(cfg))
    return cols


def wants_instances(cfg: AuditConfig) -> bool:
    """Per-instance text rows are needed by the token stage."""
    return cfg.regions.text.enabled and cfg.tokens.enabled


def empty_rows(cfg: AuditConfig) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in row_columns(cfg).items()})


def resolve_targets(target: str, classes: list[str], labels: list[str | None]) -> torch.Tensor | None:
    """Class indices for ``cam.target``: None (predicted), true labels, or one named class."""
    if target == "predicted":
        return None
    index = {c: i for i, c in enumerate(classes)}
    if target == "label":
        return torch.tensor([index[lbl] for lbl in labels], dtype=torch.long)
    return torch.full((len(labels),), index[target], dtype=torch.long)


def engine_for(cfg: AuditConfig, target_layer: str, device: torch.device) -> CamEngine:
    key = (cfg.model.model_dump_json(), str(device), cfg.cam.method, target_layer, cfg.cam.amp, cfg.cam.channels_last)
    with _ENGINE_LOCK:
        if key not in _ENGINES:
            model = get_model(cfg.model, device)
            _ENGINES[key] = CamEngine(
                model, target_layer=target_layer, method=cfg.cam.method, input_size=tuple(cfg.model.input_size), amp=cfg.cam.amp,
                channels_last=cfg.cam.channels_last,
            )
        return _ENGINES[key]


@dataclass
class _Loaded:
    entry: Entry
    original: np.ndarray
    model_view: np.ndarray
    placement: Placement
    digest: str

    @property
    def path(self) -> str:
        return self.entry.path


def load_batch(entries: list[Entry], root: Path, cfg: AuditConfig, errors: list[dict]) -> list[_Loaded]:
    out = []
    h, w = cfg.model.input_size
    for e in entries:
        path = root / e.path
        try:
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise InputError(e.path, f"cannot read file ({exc.strerror or exc})") from None
            img = load_rgb(e.path, data)
        except InputError as err:
            errors.append({"path": e.path, "stage": "load", "reason": err.reason})
            continue
        placement = placement_for(img.shape[:2], (h, w), cfg.model.resize)
        out.append(_Loaded(e, img, warp_image(img, placement), placement, content_hash(data)))
    return out


def to_input(views: list[np.ndarray], cfg: AuditConfig, device: torch.device) -> torch.Tensor:
    """uint8 HWC batch -> normalised float NCHW on device (uint8 travels: 4x fewer bytes)."""
    x = torch.from_numpy(np.stack(views)).permute(0, 3, 1, 2)
    if device.type == "cuda":
        x = x.pin_memory()
    x = x.to(device, non_blocking=True).float().div_(255)
    mean = torch.tensor(cfg.model.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(cfg.model.std, device=device).view(1, 3, 1, 1)
    return (x - mean) / std


def display_map(m: torch.Tensor) -> np.ndarray:
    """Min-max scaled copy of a map for drawing only (ratios never use it)."""
    m = m.float()
    lo, hi = m.min(), m.max()
    return ((m - lo) / (hi - lo)).cpu().numpy().astype(np.float32) if hi > lo else np.zeros(tuple(m.shape), np.float32)


def class_name(classes: list[str], i: int) -> str:
    """Class name of index ``i`` (the index itself when the model has more outputs than names)."""
    return classes[i] if 0 <= i < len(classes) else str(i)


def counterfactual_columns(cfg: AuditConfig) -> dict[str, str]:
    """Per-image intervention columns, for each region in ``counterfactual.regions``."""
    cols: dict[str, str] = {}
    if not cfg.counterfactual.enabled:
        return cols
    for r in cfg.counterfactual.regions:
        for edit in ("removed", "placebo"):
            cols.update({f"{r}_{edit}_pred": "string", f"{r}_{edit}_conf": "float64",
                         f"{r}_{edit}_flip": "float64", f"{r}_{edit}_mass": "float64"})
        cols.update({f"{r}_placebo_overlap": "float64", f"{r}_effect": "float64"})
    return cols


def _counterfactuals(
    engine: CamEngine,
    cfg: AuditConfig,
    classes: list[str],
    device: torch.device,
    loaded: list[_Loaded],
    masks: np.ndarray,
    regions: list[str],
    pred: np.ndarray,
    conf: np.ndarray,
    targets: torch.Tensor,
) -> tuple[list[dict], list[dict[str, dict]]]:
    """Re-run model + CAM on region-removed and placebo-edited views of the batch.

    Returns per-image columns and per-image edited views (kept only for gallery images).
    """
    cf = cfg.counterfactual
    columns: list[dict] = [{} for _ in loaded]
    views: list[dict[str, dict]] = [{} for _ in loaded]
    size = tuple(cfg.model.input_size)
    for r in cf.regions:
        j = regions.index(r)
        plans = [
            plan_intervention(item.model_view, masks[i, j], method=cf.method, radius=cf.radius, margin=cf.margin,
                              seed=image_seed(cf.seed, item.digest, r), tries=cf.placebo_tries)
            for i, item in enumerate(loaded)
        ]
        idx = [i for i, p in enumerate(plans) if p is not None]
        for i, p in enumerate(plans):
            if p is None:
                columns[i].update({c: None for c in counterfactual_columns(cfg) if c.startswith(f"{r}_")})
        if not idx:
            continue
        n = len(idx)
        edited = [plans[i].removed for i in idx] + [plans[i].placebo for i in idx]
        edit_masks = np.stack([plans[i].removed_mask for i in idx] + [plans[i].placebo_mask for i in idx])
        out = engine.compute(to_input(edited, cfg, device), targets[idx].repeat(2))
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
            # Confidence the removal costs beyond what an equal occlusion elsewhere costs.
            row[f"{r}_effect"] = row[f"{r}_placebo_conf"] - row[f"{r}_removed_conf"]
    return columns, views


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
) -> ChunkResult:
    """Audit ``entries`` (paths relative to ``cfg.dataset.root``) and return rows + errors."""
    device = select_device(cfg.cam.device)
    engine = engine_for(cfg, target_layer, device)
    builder = RegionBuilder(cfg, cache_path, use_gpu=device.type == "cuda")
    regions = builder.names
    root = Path(cfg.dataset.root)
    size = tuple(cfg.model.input_size)
    errors: list[dict] = []
    records: list[dict] = []
    instance_records: list[dict] = []
    gallery: list[GalleryItem] = []
    k = cfg.output.gallery_size
    with_instances = wants_instances(cfg)
    rank_region = "text" if "text" in regions else (regions[0] if regions else None)

    for batch in chunked(entries, cfg.cam.batch_size):
        loaded = load_batch(batch, root, cfg, errors)
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
            cam = engine.compute(to_input([item.model_view for item in loaded], cfg, device), targets)
            maps = upsample_maps(cam.maps, size)
            met = region_metrics(maps, torch.from_numpy(masks).to(device), cfg.cam.pointing_tolerance)
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
                cf_cols, cf_views = _counterfactuals(engine, cfg, classes, device, loaded, masks, regions, pred, conf, cam.targets)
        except Exception as exc:
            errors += [{"path": it.path, "stage": "cam", "reason": f"{type(exc).__name__}: {exc}"} for it in loaded]
            continue
        first = len(records)
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
                for name in ("mass", "area", "lift", "hit"):
                    row[f"{r}_{name}"] = float(met[name][i, j])
            row.update(cf_cols[i])
            if with_instances and "text" in per_image[i]:
                inst = instance_rows(row["path"], row["label"], row["pred"], item.original, per_image[i]["text"],
                                     item.placement, maps[i], cfg.regions.text.min_score)
                instance_records += inst
                row.update(top_instance_columns(inst, row["text_mass"]))
            records.append(row)
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
        del loaded, per_image, maps, cam, cf_views
    columns = row_columns(cfg)
    rows = pd.DataFrame.from_records(records, columns=list(columns)) if records else empty_rows(cfg)
    rows = rows.astype(columns)
    n_degenerate = int((rows["cam_status"] != "ok").sum())
    # Region errors leave the image audited (that region's metrics are NaN): not a failed image.
    n_failed = len({e["path"] for e in errors if e["stage"] != "regions"})
    stats = {"n_ok": len(records), "n_failed": n_failed, "n_degenerate": n_degenerate}
    stats.update(builder.stats)
    instances = None
    if with_instances:
        instances = pd.DataFrame.from_records(instance_records, columns=list(INSTANCE_COLUMNS)).astype(INSTANCE_COLUMNS)
    return ChunkResult(rows=rows, errors=errors, gallery=gallery, stats=stats, instances=instances)


def sanity_check(entries: list[Entry], cfg: AuditConfig, target_layer: str) -> dict:
    """Model-randomisation check on an evenly spread sample of ``cfg.sanity.n_images`` images."""
    n = min(cfg.sanity.n_images, len(entries))
    if n < 2:
        return {"n_images": n, "verdict": "skipped: fewer than 2 images", "model_sensitive": None}
    picks = [entries[int(i)] for i in np.linspace(0, len(entries) - 1, n).round()]
    device = select_device(cfg.cam.device)
    loaded = load_batch(picks, Path(cfg.dataset.root), cfg, [])
    if len(loaded) < 2:
        return {"n_images": len(loaded), "verdict": "skipped: fewer than 2 readable images", "model_sensitive": None}
    from auditors.sanity import randomization_check

    engine = engine_for(cfg, target_layer, device)
    try:
        return randomization_check(engine, to_input([it.model_view for it in loaded], cfg, device), cfg.sanity.max_rank_correlation, cfg.stats.seed)
    except Exception as exc:  # e.g. a TorchScript model that cannot be copied
        return {"n_images": len(loaded), "verdict": f"skipped: {type(exc).__name__}: {exc}", "model_sensitive": None}
