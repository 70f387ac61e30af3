"""The offline ImageNet example: a real pretrained EfficientNet-Lite0 from PyPI, real photos from
scikit-image with a stamped watermark, a real audit (EasyOCR, counterfactuals, Prefect)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[2]


def test_pretrained_weights_load_from_the_package_and_classify_real_photos():
    import skimage.data

    from auditors.demo.imagenet import _predict, build_efficientnet_lite0, imagenet_classes

    classes = imagenet_classes()
    assert len(classes) == len(set(classes)) == 1000 and classes[285] == "Egyptian cat"
    model = build_efficientnet_lite0()
    photos = Path(skimage.data.__file__).parent
    cat = cv2.cvtColor(cv2.imread(str(photos / "chelsea.png")), cv2.COLOR_BGR2RGB)
    coffee = cv2.cvtColor(cv2.imread(str(photos / "coffee.png")), cv2.COLOR_BGR2RGB)
    assert classes[_predict(model, cat)[0]] in {"Egyptian cat", "tabby", "tiger cat"}
    assert classes[_predict(model, coffee)[0]] in {"espresso", "cup", "coffee mug"}
    # Random weights would not: the same architecture untrained gives an arbitrary class.
    import torch

    torch.manual_seed(0)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.05)
    assert classes[_predict(model, cat)[0]] not in {"Egyptian cat", "tabby", "tiger cat"}


def test_stamp_watermark_returns_the_box_it_drew():
    from auditors.demo.imagenet import stamp_watermark

    img = np.full((200, 300, 3), 90, np.uint8)
    out, (x, y, w, h) = stamp_watermark(img, "iStock", np.random.default_rng(0))
    changed = np.argwhere((out != img).any(axis=2))
    assert changed.size and 0.3 * 300 < w < 0.7 * 300
    assert changed[:, 1].min() >= x and changed[:, 1].max() < x + w
    assert changed[:, 0].min() >= y and changed[:, 0].max() < y + h


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server")
def test_example_audits_stamped_photos_and_reports_where_the_watermark_moves_predictions(tmp_path):
    from flows.example import run_imagenet_example

    result, findings = run_imagenet_example(tmp_path / "out", progress=False, variants=1, cache_dir=tmp_path / "cache")
    images = pd.read_parquet(result.run_dir / "images.parquet")
    on_disk = json.loads((result.run_dir / "watermark.json").read_text())
    assert on_disk["n_images"] == findings["n_images"] == len(images) == 5
    assert on_disk["moved_by_watermark"] == int((images["pred"] != images["label"]).sum())
    assert {"watermark_lift", "watermark_effect", "text_lift"} <= set(images.columns)
    # EasyOCR finds the stamped watermark: its text mask lies on the known watermark box.
    assert (images["overlap_text_watermark"] > 0.8).sum() >= 3, images["overlap_text_watermark"].tolist()
    assert images["watermark_area"].between(0.05, 0.2).all()
    assert findings["watermark_lift"] is not None and findings["watermark_lift_ci"] is not None
    clean = pd.read_csv(tmp_path / "out" / "imagenet-watermark-data" / "manifest.csv")
    assert clean.loc[clean["path"] == "stamped/chelsea-full.png", "label"].item() in {"Egyptian cat", "tabby", "tiger cat"}
    summary = result.summary
    assert "watermark" in summary["regions"] and summary["counterfactual"]["regions"] == ["watermark", "text"]
    html = result.report.read_text()
    assert "model classes without audited images are not listed" in html and html.count('<tr') < 200


def test_missing_examples_extra_exits_2_naming_it(tmp_path):
    code = textwrap.dedent(f"""
        import sys
        sys.modules["efficientnet_lite_pytorch"] = None
        from flows.cli import main
        sys.exit(main(["example", "imagenet", "--out", {str(tmp_path)!r}, "--quiet"]))
    """)
    import os

    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 2, proc.stderr
    assert "pip install 'camaudit[examples]'" in proc.stderr
