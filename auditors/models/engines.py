"""One CAM engine per (model, device, method, layer) and process, built lazily and reused."""

from __future__ import annotations

import threading

import torch

from auditors.cam import CamEngine
from auditors.config.schema import AuditConfig
from auditors.models.loading import get_model, model_fingerprint

__all__ = ["engine_for", "class_name"]

_ENGINES: dict[tuple, tuple[str, CamEngine]] = {}  # key -> (weights fingerprint, engine)
_ENGINE_LOCK = threading.Lock()


def engine_for(cfg: AuditConfig, target_layer: str, device: torch.device) -> CamEngine:
    """The cached engine; rebuilt when the weights' fingerprint changed (a checkpoint overwritten in place)."""
    key = (cfg.model.model_dump_json(), str(device), cfg.cam.method, target_layer, cfg.cam.amp, cfg.cam.channels_last)
    fingerprint = model_fingerprint(cfg.model)
    with _ENGINE_LOCK:
        cached = _ENGINES.get(key)
        if cached is None or cached[0] != fingerprint:
            model = get_model(cfg.model, device)
            _ENGINES[key] = (fingerprint, CamEngine(
                model, target_layer=target_layer, method=cfg.cam.method, input_size=tuple(cfg.model.input_size), amp=cfg.cam.amp,
                channels_last=cfg.cam.channels_last,
            ))
        return _ENGINES[key][1]


def class_name(classes: list[str], i: int) -> str:
    """Class name of index ``i`` (the index itself when the model has more outputs than names)."""
    return classes[i] if 0 <= i < len(classes) else str(i)
