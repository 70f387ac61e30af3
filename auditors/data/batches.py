"""From files to model input: decode a batch, place it at model resolution, normalise.

Shared by the chunk loop, the sanity check, the interventions and the token effects, so that
all of them see exactly the pixels the audit measured.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import get_args

import numpy as np
import torch

from auditors.config.schema import ModelConfig
from auditors.data.decoding import content_hash, load_rgb
from auditors.data.discovery import Entry
from auditors.data.geometry import Placement, ResizeMode, placement_for, warp_image
from auditors.errors import InputError
from auditors.safe_io import MAX_IMAGE_BYTES, UnsafeFile, read_regular_file

__all__ = ["Preprocess", "LoadedImage", "load_batch", "to_input"]


@dataclass(frozen=True)
class Preprocess:
    """How an original becomes model input: the four model settings decoding needs.

    Kept apart from the model config so that loading a batch (in the audit, the sanity check,
    the interventions or a test) does not need to know where the model comes from.
    """

    input_size: tuple[int, int]
    resize: ResizeMode = "stretch"
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)

    def __post_init__(self) -> None:
        if len(self.input_size) != 2 or min(self.input_size) < 1:
            raise ValueError(f"Preprocess.input_size must be (height, width) >= 1, got {self.input_size!r}")
        if self.resize not in get_args(ResizeMode):
            raise ValueError(f"Preprocess.resize must be one of {get_args(ResizeMode)}, got {self.resize!r}")
        if len(self.mean) != 3 or len(self.std) != 3 or any(s <= 0 for s in self.std):
            raise ValueError(f"Preprocess needs 3 means and 3 positive stds, got mean={self.mean!r} std={self.std!r}")
        object.__setattr__(self, "input_size", (int(self.input_size[0]), int(self.input_size[1])))
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))

    @classmethod
    def of(cls, model: ModelConfig) -> Preprocess:
        """The preprocessing a ``model:`` config section asks for."""
        return cls(tuple(model.input_size), model.resize, tuple(model.mean), tuple(model.std))


def _check_prep(prep: object, where: str) -> Preprocess:
    if not isinstance(prep, Preprocess):
        raise TypeError(f"{where} takes a Preprocess (e.g. Preprocess.of(cfg.model)), not {type(prep).__name__}")
    return prep


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


def load_batch(entries: list[Entry], root: Path, prep: Preprocess, errors: list[dict]) -> list[LoadedImage]:
    """Decode ``entries`` (relative to ``root``) and place them at model resolution.

    A file that cannot be read or decoded is appended to ``errors`` (``stage: load``) and skipped.
    """
    out = []
    h, w = _check_prep(prep, "load_batch").input_size
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
        placement = placement_for(img.shape[:2], (h, w), prep.resize)
        out.append(LoadedImage(e, img, warp_image(img, placement), placement, content_hash(data)))
    return out


def to_input(views: list[np.ndarray], prep: Preprocess, device: torch.device) -> torch.Tensor:
    """uint8 HWC batch -> normalised float NCHW on device (uint8 travels: 4x fewer bytes)."""
    _check_prep(prep, "to_input")
    x = torch.from_numpy(np.stack(views)).permute(0, 3, 1, 2)
    if device.type == "cuda":
        x = x.pin_memory()
    x = x.to(device, non_blocking=True).float().div_(255)
    mean = torch.tensor(prep.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(prep.std, device=device).view(1, 3, 1, 1)
    return (x - mean) / std
