"""One CAM engine per (model, device, method, layer) and process, built lazily and reused."""

from __future__ import annotations

import threading

import torch

from auditors.cam import CamEngine, resolve_target
from auditors.config.schema import AuditConfig
from auditors.models.loading import get_model

__all__ = ["engine_for", "class_name"]

_ENGINES: dict[tuple, CamEngine] = {}
_ENGINE_LOCK = threading.Lock()


def engine_for(cfg: AuditConfig, target_layer: str, device: torch.device) -> CamEngine:
    layers = tuple(cfg.cam.layers or ())
    key = (cfg.model.model_dump_json(), str(device), cfg.cam.method, target_layer, cfg.cam.amp, cfg.cam.channels_last, layers)
    with _ENGINE_LOCK:
        if key not in _ENGINES:
            model = get_model(cfg.model, device)
            size = tuple(cfg.model.input_size)
            _, reshape = resolve_target(model, size, device, target_layer, cfg.model.reshape)
            _ENGINES[key] = CamEngine(
                model, target_layer=target_layer, method=cfg.cam.method, input_size=size, amp=cfg.cam.amp,
                channels_last=cfg.cam.channels_last, reshape_transform=reshape, layers=layers,
            )
        return _ENGINES[key]


def class_name(classes: list[str], i: int) -> str:
    """Class name of index ``i`` (the index itself when the model has more outputs than names)."""
    return classes[i] if 0 <= i < len(classes) else str(i)
