"""Pre-flight: list the dataset, load the model once, check classes, target and target layer.

Shared by the flow's ``prepare`` task and ``camaudit validate``, so that whatever validate
accepts, a run accepts too.
"""

from __future__ import annotations

from dataclasses import dataclass

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
    return Plan(cfg, index, classes, target_layer, str(device), model_fingerprint(cfg.model))


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
    for err in idx.errors[:20]:
        lines.append(f"  skipped {err['path']}: {err['reason']}")
    if len(idx.errors) > 20:
        lines.append(f"  ... and {len(idx.errors) - 20} more")
    return lines
