"""The pointing game end to end: real photos with a planted, annotated object; two tiny models
trained in the test, one that must look at the object and one that learned a shortcut elsewhere;
real Prefect flow runs; the report opened in headless Chromium.

Images: 96x96 crops of the real scene-text photos, each with a disc (the annotated object,
its box written to a COCO file, PNG masks and manifest boxes) and a small square elsewhere.
- "object" data: the disc's colour is the class (red = horror, blue = comedy); the square's
  colour is random. A model trained on it must point at the disc.
- "shortcut" data: the square's colour is the class; the disc's colour is random. A model
  trained on it points at the square, i.e. away from the annotation.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from auditors.config import config_from_dict
from flows.audit import run_audit
from tests.browser import chromium_driver, console_errors, open_file
from tests.conftest import SCENETEXT, TinyCNN, fit_full_batch

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]

CLASSES = ["horror", "comedy"]
COLOURS = {"horror": (220, 30, 30), "comedy": (30, 60, 230)}
SQUARES = {"horror": (40, 220, 40), "comedy": (240, 220, 30)}
SIDE, INPUT = 96, 64


def build_two_class() -> torch.nn.Module:
    """model.factory for these tests."""
    torch.manual_seed(0)
    return TinyCNN(2)


def _photos() -> list[np.ndarray]:
    out = []
    for f in sorted(SCENETEXT.glob("*.*")):
        img = cv2.imread(str(f))
        if img is not None:
            s = 200 / min(img.shape[:2])
            out.append(cv2.resize(img[:, :, ::-1], None, fx=s, fy=s, interpolation=cv2.INTER_AREA))
    assert len(out) >= 15, "the real scene-text photos ship with the repository"
    return out


def _make(rng, photos, cls: str, mode: str) -> tuple[np.ndarray, list[float]]:
    """One crop with a disc (returned as its COCO box) and a square that do not overlap."""
    p = photos[rng.integers(len(photos))]
    y, x = rng.integers(0, p.shape[0] - SIDE), rng.integers(0, p.shape[1] - SIDE)
    img = np.ascontiguousarray(p[y:y + SIDE, x:x + SIDE])
    other = CLASSES[rng.integers(2)]
    disc_c, square_c = (COLOURS[cls], SQUARES[other]) if mode == "object" else (COLOURS[other], SQUARES[cls])
    r = 9
    while True:
        cx, cy = rng.integers(r + 2, SIDE - r - 2, size=2)
        sx, sy = rng.integers(2, SIDE - 16, size=2)
        if abs((sx + 7) - cx) > r + 14 or abs((sy + 7) - cy) > r + 14:
            break
    cv2.circle(img, (int(cx), int(cy)), r, disc_c, -1)
    cv2.rectangle(img, (int(sx), int(sy)), (int(sx) + 13, int(sy) + 13), square_c, -1)
    return img, [float(cx - r), float(cy - r), float(2 * r + 1), float(2 * r + 1)]


def _tensor(imgs: list[np.ndarray]) -> torch.Tensor:
    x = np.stack([cv2.resize(i, (INPUT, INPUT), interpolation=cv2.INTER_LINEAR) for i in imgs]).astype(np.float32) / 255
    return torch.from_numpy((x - 0.5) / 0.5).permute(0, 3, 1, 2).contiguous()


def _train(mode: str, photos, path: Path) -> Path:
    rng = np.random.default_rng(1 if mode == "object" else 2)
    data = [(_make(rng, photos, c, mode)[0], i) for _ in range(48) for i, c in enumerate(CLASSES)]
    x, y = _tensor([d[0] for d in data]), torch.tensor([d[1] for d in data])
    model = fit_full_batch(build_two_class(), x, y, lr=0.01)
    with torch.no_grad():
        acc = (model(x).argmax(1) == y).float().mean().item()
    assert acc > 0.9, f"{mode} model did not learn its cue (train accuracy {acc:.2f})"
    torch.save(model.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory, one_torch_thread):
    """Two audit datasets (object / shortcut) with COCO, masks and manifest annotations, and two trained models."""
    base = tmp_path_factory.mktemp("pointing")
    photos = _photos()
    out = {}
    for mode in ("object", "shortcut"):
        rng = np.random.default_rng(10 if mode == "object" else 20)
        root = base / mode / "data"
        coco = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "object"}]}
        rows = []
        for i, cls in enumerate(CLASSES):
            (root / cls).mkdir(parents=True)
            (base / mode / "masks" / cls).mkdir(parents=True)
            for k in range(12):
                img, box = _make(rng, photos, cls, mode)
                rel = f"{cls}/{k}.png"
                cv2.imwrite(str(root / rel), img[:, :, ::-1])
                mask = np.zeros((SIDE, SIDE), np.uint8)
                x, y, w, h = (int(v) for v in box)
                mask[y:y + h, x:x + w] = 255
                cv2.imwrite(str(base / mode / "masks" / rel), mask)
                iid = len(coco["images"]) + 1
                coco["images"].append({"id": iid, "file_name": rel, "width": SIDE, "height": SIDE})
                coco["annotations"].append({"id": 100 + iid, "image_id": iid, "category_id": 1, "bbox": box})
                rows.append({"path": rel, "label": cls, "object_box": json.dumps([box])})
        (base / mode / "instances.json").write_text(json.dumps(coco))
        pd.DataFrame(rows).to_csv(base / mode / "manifest.csv", index=False)
        out[mode] = {"root": root, "base": base / mode, "ckpt": _train(mode, photos, base / mode / "model.pt")}
    return out


def _config(w: dict, expected: dict, name: str, **over) -> object:
    data = {
        "name": name,
        "dataset": {"root": str(w["root"])},
        "model": {"factory": "tests.flows.test_pointing_flow:build_two_class", "checkpoint": str(w["ckpt"]),
                  "classes": CLASSES, "input_size": [INPUT, INPUT], "mean": [0.5] * 3, "std": [0.5] * 3},
        "cam": {"batch_size": 8, "pointing_tolerance": 2},
        "regions": {"text": {"enabled": False}, "expected": {"enabled": True, "gallery_size": 4, **expected}},
        "sanity": {"enabled": False},
        "stats": {"bootstrap": 500},
        "output": {"dir": str(w["base"] / "out"), "cache_dir": str(w["base"] / "cache"), "gallery_size": 2},
        "run": {"chunk_size": 10},
    }
    for k, v in over.items():
        data[k] = {**data.get(k, {}), **v}
    return config_from_dict(data)


def test_a_model_that_looks_at_the_object_points_at_it_well_above_chance(world, tmp_path):
    w = world["object"]
    result = run_audit(_config(w, {"source": "coco", "annotations": str(w["base"] / "instances.json")}, "looks"))
    run = result.run_dir
    images = pd.read_parquet(run / "images.parquet")
    for col in ("expected_hit", "expected_mass", "expected_area", "expected_lift", "expected_hit_area"):
        assert col in images.columns and images[col].notna().all(), col
    assert (images["expected_hit_area"] >= images["expected_area"]).all()  # the tolerance grows the target
    summary = json.loads((run / "summary.json").read_text())
    p = summary["pointing"]
    assert p["tolerance_px"] == 2 and p["n_judged"] == 24 and p["source"] == "coco"
    for cls in CLASSES:
        g = p["classes"][cls]
        assert g["n"] == 12 and g["hits"] == round(g["hit_rate"] * 12)
        assert g["hit_rate_ci"][0] > g["chance"], f"{cls}: {g}"  # the whole interval above chance
        assert g["hit_rate"] >= 0.75 and g["chance"] < 0.15 and g["lift"] > 2
        sub = images[images["label"] == cls]
        assert g["hit_rate"] == pytest.approx(sub["expected_hit"].mean())
        assert g["chance"] == pytest.approx(sub["expected_hit_area"].mean())
    assert summary["validation"]["success"] is True
    print("pointing (object model):", {c: (g["hit_rate"], g["hit_rate_ci"], g["chance"], g["lift"]) for c, g in p["classes"].items()})
    assert "expected" in summary["regions"] and summary["region_sources"]["expected"]["reference"] is True
    assert summary["gate"]["passed"] is True, "attention on the annotated object is never a shortcut"

    html = (run / "report.html").read_text()
    hr = p["classes"]["horror"]
    sentence = (f"The model points at the annotated object in {hr['hit_rate'] * 100:.0f}% of horror images "
                f"(chance {hr['chance'] * 100:.0f}%")
    assert sentence in html
    with chromium_driver() as driver:
        open_file(driver, run / "report.html")
        section = driver.find_element("id", "pointing")
        assert "Human attention (pointing game)" in section.text and "above chance" in section.text
        assert len(driver.find_elements("css selector", "#pointing-table tbody tr")) == 2
        n_miss = int((images["expected_hit"] == 0).sum())
        cards = driver.find_elements("css selector", ".pointing-misses figure")
        assert len(cards) == min(4, n_miss)
        if cards:
            assert all(i.get_property("naturalWidth") > 0 for i in driver.find_elements("css selector", ".pointing-misses img"))
        assert console_errors(driver) == []
        shot = tmp_path / "pointing-section.png"
        shot.write_bytes(section.screenshot_as_png)
        print("screenshot of the pointing section:", shot)


def test_a_shortcut_model_misses_the_object_and_its_biggest_misses_are_shown(world, tmp_path):
    w = world["shortcut"]
    cfg = _config(w, {"source": "manifest_boxes", "column": "object_box"}, "shortcut",
                  dataset={"manifest": str(w["base"] / "manifest.csv")})
    run = run_audit(cfg).run_dir
    p = json.loads((run / "summary.json").read_text())["pointing"]
    for cls in CLASSES:
        g = p["classes"][cls]
        assert g["n"] == 12 and g["hit_rate"] <= 0.25, f"{cls}: {g}"
        assert g["hit_rate_ci"][0] <= g["chance"] + 0.05  # never claimed to beat chance
    print("pointing (shortcut model):", {c: (g["hit_rate"], g["hit_rate_ci"], g["chance"], g["lift"]) for c, g in p["classes"].items()})
    html = (run / "report.html").read_text()
    misses = html.split('class="gallery pointing-misses"', 1)[1].split("</section>", 1)[0]
    assert misses.count('<figure class="card">') == 4  # gallery_size: the biggest misses, annotation outlined
    assert misses.count('alt="Grad-CAM, annotation outlined of ') == 4
    # the same audit from PNG masks gives the same per-image numbers
    masks = _config(w, {"source": "masks", "masks_dir": str(w["base"] / "masks")}, "shortcut-masks")
    a = pd.read_parquet(run / "images.parquet").sort_values("path").reset_index(drop=True)
    b = pd.read_parquet(run_audit(masks).run_dir / "images.parquet").sort_values("path").reset_index(drop=True)
    np.testing.assert_allclose(a["expected_area"], b["expected_area"], atol=0.01)
    assert (a["expected_hit"] == b["expected_hit"]).mean() >= 0.9
