"""From files to model input: decode a batch, place it at model resolution, normalise.

Shared by the chunk loop, the sanity check, the interventions and the token effects, so that
all of them see exactly the pixels the audit measured.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from auditors.config.schema import AuditConfig
from auditors.data.decoding import content_hash, load_rgb
from auditors.data.discovery import Entry
from auditors.safe_io import MAX_IMAGE_BYTES, UnsafeFile, read_regular_file
from auditors.data.geometry import Placement, placement_for, warp_image
from auditors.errors import InputError

__all__ = ["LoadedImage", "load_batch", "to_input"]


@dataclass
class LoadedImage:
    entry: Entry
    original: np.ndarray
    model_view: np.ndarray
    placement: Placement
    digest: str

    @property
    def path(self) -> str:
        return self.entry.path


def load_batch(entries: list[Entry], root: Path, cfg: AuditConfig, errors: list[dict]) -> list[LoadedImage]:
    out = []
    h, w = cfg.model.input_size
    for e in entries:
        path = root / e.path
        try:
            try:  # regular files only, never blocks: a FIFO in a manifest must not hang the run
                data = read_regular_file(path, MAX_IMAGE_BYTES, name=e.path)
            except UnsafeFile as exc:
                raise InputError(e.path, exc.reason) from None
            img = load_rgb(e.path, data)
        except InputError as err:
            errors.append({"path": e.path, "stage": "load", "reason": err.reason})
            continue
        placement = placement_for(img.shape[:2], (h, w), cfg.model.resize)
        out.append(LoadedImage(e, img, warp_image(img, placement), placement, content_hash(data)))
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
