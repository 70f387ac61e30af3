"""Decoding a batch needs only the four preprocessing settings, not an audit config."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from auditors.config import config_from_dict
from auditors.data.batches import Preprocess, load_batch, to_input
from auditors.data.discovery import Entry


def _png(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def test_load_batch_places_and_normalises_with_preprocess_alone(tmp_path):
    wide = np.zeros((20, 40, 3), np.uint8)
    wide[:, :, 0] = 255  # pure red, twice as wide as tall
    _png(tmp_path / "a" / "wide.png", wide)
    (tmp_path / "a" / "bad.png").write_bytes(b"not an image")
    errors: list[dict] = []
    prep = Preprocess((16, 16), "letterbox", mean=(0.5, 0.5, 0.5), std=(0.25, 0.5, 1.0))
    (img,) = load_batch([Entry("a/wide.png", "x"), Entry("a/bad.png", "x")], tmp_path, prep, errors)
    assert [e["path"] for e in errors] == ["a/bad.png"] and errors[0]["stage"] == "load"
    assert img.model_view.shape == (16, 16, 3) and img.placement.scaled_h == 8, "letterbox keeps the 2:1 aspect"
    x = to_input([img.model_view], prep, torch.device("cpu"))
    assert x.shape == (1, 3, 16, 16)
    centre = x[0, :, 8, 8]
    np.testing.assert_allclose(centre.numpy(), [(1 - 0.5) / 0.25, (0 - 0.5) / 0.5, (0 - 0.5) / 1.0], atol=1e-6)


def test_preprocess_of_model_section_and_wrong_arguments(tmp_path):
    cfg = config_from_dict({"name": "t", "dataset": {"root": str(tmp_path)},
                            "model": {"arch": "resnet18", "input_size": [32, 48], "resize": "center_crop"}})
    prep = Preprocess.of(cfg.model)
    assert prep == Preprocess((32, 48), "center_crop", tuple(cfg.model.mean), tuple(cfg.model.std))
    with pytest.raises(TypeError, match=r"Preprocess\.of\(cfg\.model\)"):
        load_batch([], tmp_path, cfg, [])  # the whole config is not accepted any more
    with pytest.raises(TypeError, match="to_input takes a Preprocess"):
        to_input([np.zeros((4, 4, 3), np.uint8)], cfg.model, torch.device("cpu"))
    with pytest.raises(ValueError, match="resize"):
        Preprocess((8, 8), "squash")
    with pytest.raises(ValueError, match="positive stds"):
        Preprocess((8, 8), std=(1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="input_size"):
        Preprocess((0, 8))
