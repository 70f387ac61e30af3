"""One CAM engine per (model, device, method, layer) and process, built lazily and reused."""

from __future__ import annotations

import threading

import torch

from auditors.cam import CamEngine, resolve_target
from auditors.config.schema import CamConfig, ModelConfig
from auditors.models.loading import get_model, model_fingerprint

__all__ = ["engine_for", "class_name"]

_ENGINES: dict[tuple, tuple[str, CamEngine]] = {}  # key -> (weights fingerprint, engine)
_ENGINE_LOCK = threading.Lock()


def engine_for(model: ModelConfig, cam: CamConfig, target_layer: str, device: torch.device) -> CamEngine:
    """The process's engine for the ``model:`` and ``cam:`` sections (built on first use)."""
    if not isinstance(model, ModelConfig) or not isinstance(cam, CamConfig):
        raise TypeError(f"engine_for takes (cfg.model, cfg.cam, ...), got ({type(model).__name__}, {type(cam).__name__}, ...)")
    layers = tuple(cam.layers or ())
    key = (model.model_dump_json(), str(device), cam.method, target_layer, cam.amp, cam.channels_last, layers)
    # Keyed by the weights too: a checkpoint overwritten in place is reloaded, never served stale.
    fingerprint = model_fingerprint(model)
    with _ENGINE_LOCK:
        cached = _ENGINES.get(key)
        if cached is None or cached[0] != fingerprint:
            net = get_model(model, device)
            size = tuple(model.input_size)
            _, reshape = resolve_target(net, size, device, target_layer, model.reshape)  # ViT/Swin token layers
            _ENGINES[key] = (fingerprint, CamEngine(
                net, target_layer=target_layer, method=cam.method, input_size=size, amp=cam.amp,
                channels_last=cam.channels_last, reshape_transform=reshape, layers=layers,
            ))
        return _ENGINES[key][1]


def class_name(classes: list[str], i: int) -> str:
    """Class name of index ``i`` (the index itself when the model has more outputs than names)."""
    return classes[i] if 0 <= i < len(classes) else str(i)
