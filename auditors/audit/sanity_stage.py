"""The model-randomisation sanity check, on an evenly spread sample of the audited images."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from auditors.config.schema import AuditConfig
from auditors.data.batches import Preprocess, load_batch, to_input
from auditors.data.discovery import Entry
from auditors.measure.sanity import randomization_check
from auditors.models.engines import engine_for
from auditors.models.loading import select_device

__all__ = ["sanity_check"]


def sanity_check(entries: list[Entry], cfg: AuditConfig, target_layer: str) -> dict:
    """Model-randomisation check on an evenly spread sample of ``cfg.sanity.n_images`` images."""
    n = min(cfg.sanity.n_images, len(entries))
    if n < 2:
        return {"n_images": n, "verdict": "skipped: fewer than 2 images", "model_sensitive": None}
    picks = [entries[int(i)] for i in np.linspace(0, len(entries) - 1, n).round()]
    device = select_device(cfg.cam.device)
    prep = Preprocess.of(cfg.model)
    loaded = load_batch(picks, Path(cfg.dataset.root), prep, [])
    if len(loaded) < 2:
        return {"n_images": len(loaded), "verdict": "skipped: fewer than 2 readable images", "model_sensitive": None}
    engine = engine_for(cfg.model, cfg.cam, target_layer, device)
    try:
        return randomization_check(engine, to_input([it.model_view for it in loaded], prep, device), cfg.sanity.max_rank_correlation, cfg.stats.seed)
    except Exception as exc:  # e.g. a TorchScript model that cannot be copied
        return {"n_images": len(loaded), "verdict": f"skipped: {type(exc).__name__}: {exc}", "model_sensitive": None}
