"""Pre-flight: list the dataset, load the model once, check classes, target and target layer.

Shared by the flow's ``prepare`` task and ``camaudit validate``, so that whatever validate
accepts, a run accepts too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from auditors.cam import get_module, resolve_target
from auditors.config.schema import AuditConfig
from auditors.data.discovery import DatasetIndex, discover
from auditors.errors import ConfigError
from auditors.models.loading import get_model, model_fingerprint, select_device

__all__ = ["Plan", "make_plan", "describe_plan"]


@dataclass
class Plan:
    """Everything every chunk needs, computed once per run."""

    config: AuditConfig  # the run's config with model.classes filled in
    index: DatasetIndex
    classes: list[str]
    target_layer: str
    device: str
    model_fingerprint: str
    #: (h, w) of the target layer's map; None when it is not an NCHW map (ViT tokens).
    map_size: tuple[int, int] | None = None
    #: Things that weaken the audit without stopping it (maps too coarse, ...).
    warnings: list[str] = field(default_factory=list)


def _check_target(cfg: AuditConfig, index: DatasetIndex, classes: list[str]) -> None:
    target = cfg.cam.target
    if target == "label" and not index.labelled:
        raise ConfigError("cam.target: 'label' needs labels, but the dataset has none (manifest without a label column)")
    if target == "topk" and cfg.cam.k > len(classes):
        raise ConfigError(f"cam.k: {cfg.cam.k} exceeds the number of classes ({len(classes)})")
    if target not in ("predicted", "label", "topk") and target not in classes:
        raise ConfigError(f"cam.target: {target!r} is not 'predicted', 'label', 'topk' or a class name ({classes})")


def make_plan(cfg: AuditConfig) -> Plan:
    index = discover(cfg.dataset, cfg.model.classes)
    classes = index.classes
    if not classes:
        raise ConfigError("model.classes: no classes (set model.classes or use an ImageFolder layout)")
    _check_target(cfg, index, classes)
    from auditors.regions.build import check_region_inputs

    check_region_inputs(cfg, index.manifest)
    from auditors.history.runs import check_baseline  # issue 13: a pinned gate.baseline must exist

    check_baseline(cfg)
    if cfg.counterfactual.enabled:
        from auditors.regions.build import region_names

        enabled = region_names(cfg)
        for r in cfg.counterfactual.regions or []:
            if r not in enabled:
                raise ConfigError(f"counterfactual.regions: {r!r} is not an enabled region ({enabled})")
    if cfg.model.classes is None:
        # A torchvision arch then gets a head of the right size, and chunks see the same classes.
        cfg = cfg.model_copy(update={"model": cfg.model.model_copy(update={"classes": list(classes)})})
    device = select_device(cfg.cam.device)
    model = get_model(cfg.model, device)
    h, w = cfg.model.input_size
    try:
        with torch.no_grad():
            out = model(torch.zeros(1, 3, h, w, device=device))
    except Exception as exc:
        raise ConfigError(f"model: a forward pass on a 1x3x{h}x{w} input failed ({type(exc).__name__}: {exc})") from None
    if out.ndim != 2 or out.shape[1] != len(classes):
        raise ConfigError(
            f"model.classes: the model returns {tuple(out.shape[1:])} scores per image but {len(classes)} classes are "
            f"named ({classes[:5]}{'...' if len(classes) > 5 else ''})"
        )
    if isinstance(model, torch.jit.ScriptModule):
        raise ConfigError(
            f"model.torchscript {cfg.model.torchscript}: loads, but CAMs need a forward hook on the target layer and "
            "TorchScript modules do not support hooks; audit the eager model instead (model.arch or model.factory "
            "with its state_dict as model.checkpoint)"
        )
    # One resolver for plan and engines, so that a ViT gets its token layer, not conv_proj.
    target_layer, _ = resolve_target(model, (h, w), device, cfg.model.target_layer, cfg.model.reshape)
    for name in cfg.cam.layers or []:
        try:
            get_module(model, name)
        except ConfigError as exc:
            raise ConfigError(str(exc).replace("model.target_layer", "cam.layers")) from None
    map_size = target_map_size(model, target_layer, (h, w), device)  # hardening: fc / 1x1 refused here
    for name in cfg.cam.layers or []:  # the extra layers' maps are measured like the target's: same refusal
        if name != target_layer:
            target_map_size(model, name, (h, w), device, key="cam.layers")
    return Plan(cfg, index, classes, target_layer, str(device), model_fingerprint(cfg.model),
                map_size=map_size, warnings=coarse_map_warnings(map_size, (h, w)))


# --- hardening (issue 12): a target layer without a spatial map cannot localise anything ----

#: Maps with fewer cells per side than this cannot separate a title from a border or a logo.
MIN_MAP_SIDE = 4


def target_map_size(
    model: torch.nn.Module, layer: str, input_hw: tuple[int, int], device, key: str = "model.target_layer"
) -> tuple[int, int] | None:
    """(h, w) of ``layer``'s output map; ConfigError when it has no spatial extent.

    ``fc`` returns (N, C): every Grad-CAM row would fail. ``avgpool`` returns (N, C, 1, 1):
    every map is one number, every lift exactly 1.0, and the gate would pass a model it
    cannot see into. Both are refused here, so ``validate`` and ``run`` stop with exit 2.
    Token outputs (N, T, C) of transformers are left to their reshape transform (None).
    """
    shapes: list[tuple[int, ...]] = []
    handle = get_module(model, layer).register_forward_hook(
        lambda _m, _i, out: shapes.append(tuple(out.shape)) if isinstance(out, torch.Tensor) else None
    )
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, *input_hw, device=device))
    finally:
        handle.remove()
    if not shapes:
        raise ConfigError(f"{key} {layer!r}: the layer is not used in the forward pass (or returns no tensor)")
    shape = shapes[-1]
    hint = "choose a convolutional layer whose output is an N x C x H x W map, or set model.target_layer: null to auto-detect"
    if len(shape) == 2:
        raise ConfigError(f"{key} {layer!r}: output {shape} has no spatial map (a classifier/linear layer); {hint}")
    if len(shape) == 4:
        if shape[-2] * shape[-1] <= 1:
            raise ConfigError(
                f"{key} {layer!r}: output {shape} is a 1x1 map (pooled), so every heatmap is one number "
                f"and every lift would be 1.0; {hint}"
            )
        return int(shape[-2]), int(shape[-1])
    return None


def coarse_map_warnings(map_size: tuple[int, int] | None, input_hw: tuple[int, int]) -> list[str]:
    """Warn when one map cell covers a large part of the image (regions cannot be told apart)."""
    if map_size is None or min(map_size) >= MIN_MAP_SIDE:
        return []
    cell = (input_hw[0] / map_size[0], input_hw[1] / map_size[1])
    return [
        f"target-layer map is only {map_size[0]}x{map_size[1]} (one cell = {cell[0]:.0f}x{cell[1]:.0f} input pixels): "
        "too coarse to localise text, border or custom regions; pick an earlier layer for meaningful masses"
    ]
# --- end hardening ---------------------------------------------------------------------------


def describe_plan(cfg: AuditConfig, plan: Plan) -> list[str]:
    """Human-readable lines for ``camaudit validate``."""
    idx = plan.index
    lines = [
        f"config ok: {cfg.name}",
        f"dataset: {len(idx.entries)} images in {idx.root} ({'labelled' if idx.labelled else 'unlabelled'}), "
        f"{len(idx.errors)} problem(s) found while listing",
        f"classes ({len(plan.classes)}): {', '.join(plan.classes[:10])}{' ...' if len(plan.classes) > 10 else ''}",
        f"model: loaded on {plan.device}, target layer {plan.target_layer!r}, weights {plan.model_fingerprint[:12]}",
    ]
    lines += [f"warning: {w}" for w in plan.warnings]
    if not idx.entries:
        lines.append("warning: no image to audit: a run would end with gate status inconclusive (exit 4)")
    for err in idx.errors[:20]:
        lines.append(f"  skipped {err['path']}: {err['reason']}")
    if len(idx.errors) > 20:
        lines.append(f"  ... and {len(idx.errors) - 20} more")
    return lines
