"""Proof that interventions catch planted shortcuts on real photos, and only those.

Audit sets built from the real scene-text photos (random crops): class ``marked`` is warm-tinted
and carries the mark (a red frame, or a title at the top plus credits at the bottom), class
``plain`` is cool-tinted without it. Two tiny models are trained in the test on *other* crops:
a shortcut model whose training labels follow the mark (tint random), and a control whose labels
follow the tint (marks random). Both are audited on the same set through the real Prefect flow
(real EasyOCR for text). The gate uses only the intervention rules (``max_effect``), so a flag
means "removing the region costs confidence beyond a placebo that does not touch the region".
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
from tests.conftest import SCENETEXT, TinyCNN

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]

SIZE = 128  # original images
INPUT = 64  # model input
FRAME = 8  # px at SIZE: 6% of the side
BORDER = 0.08  # the border region covers the frame
EFFECT = 0.15  # gate threshold on the effect's lower bound (confidence drop beyond placebo)
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def build_tiny2() -> torch.nn.Module:
    """Factory for the configs (model.factory: tests.flows.test_cf_proof:build_tiny2)."""
    torch.manual_seed(0)
    return TinyCNN(2)


def _photos() -> list[np.ndarray]:
    files = sorted(p for p in SCENETEXT.iterdir() if p.suffix in (".jpg", ".png"))
    out = [cv2.imread(str(p)) for p in files]
    return [np.ascontiguousarray(img[:, :, ::-1]) for img in out if img is not None]


def _crop(photos: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    img = photos[int(rng.integers(len(photos)))]
    h, w = img.shape[:2]
    s = int(min(h, w) * rng.uniform(0.5, 1.0))
    y, x = int(rng.integers(0, h - s + 1)), int(rng.integers(0, w - s + 1))
    return np.ascontiguousarray(cv2.resize(img[y : y + s, x : x + s], (SIZE, SIZE), interpolation=cv2.INTER_AREA))


def _tint(img: np.ndarray, warm: bool) -> np.ndarray:
    f = np.array([1.25, 1.0, 0.75] if warm else [0.75, 1.0, 1.25], np.float32)
    return np.clip(img.astype(np.float32) * f, 0, 255).astype(np.uint8)


def _frame(img: np.ndarray) -> np.ndarray:
    img = img.copy()
    img[:FRAME] = img[-FRAME:] = (225, 20, 25)
    img[:, :FRAME] = img[:, -FRAME:] = (225, 20, 25)
    return img


def _titles(img: np.ndarray) -> np.ndarray:
    """A title at the top and credits at the bottom: text that spans the poster."""
    img = img.copy()
    for word, org, scale in (("TITLE", (18, 26), 0.9), ("CREDITS", (14, 118), 0.7)):
        cv2.putText(img, word, org, _FONT, scale, (0, 0, 0), 5, cv2.LINE_AA)
        cv2.putText(img, word, org, _FONT, scale, (255, 220, 0), 2, cv2.LINE_AA)
    return img


MARKS = {"frame": _frame, "text": _titles}


def _make(rng: np.random.Generator, photos, mark: str, warm: bool, marked: bool) -> np.ndarray:
    img = _tint(_crop(photos, rng), warm)
    return MARKS[mark](img) if marked else img


def _write_audit_set(root: Path, mark: str, n: int, seed: int) -> Path:
    """``marked``: warm + mark; ``plain``: cool, no mark."""
    rng, photos = np.random.default_rng(seed), _photos()
    for cls, (warm, marked) in {"marked": (True, True), "plain": (False, False)}.items():
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            cv2.imwrite(str(root / cls / f"{i:03d}.png"), _make(rng, photos, mark, warm, marked)[:, :, ::-1])
    return root


def _train(label_by: str, marks: list[str], n: int, seed: int, path: Path) -> Path:
    """Train TinyCNN(2) on fresh crops. label_by='mark': class 0 = marked (tint random);
    'tint': class 0 = warm (marks random). Class order = ImageFolder order: marked, plain."""
    rng, photos = np.random.default_rng(seed), _photos()
    xs, ys = [], []
    for _ in range(n):
        label = int(rng.integers(2))
        mark = marks[int(rng.integers(len(marks)))]
        if label_by == "mark":
            img = _make(rng, photos, mark, warm=bool(rng.integers(2)), marked=label == 0)
        else:
            img = _make(rng, photos, mark, warm=label == 0, marked=bool(rng.integers(2)))
        xs.append(cv2.resize(img, (INPUT, INPUT), interpolation=cv2.INTER_AREA))
        ys.append(label)
    x = torch.from_numpy(np.stack(xs)).permute(0, 3, 1, 2).float() / 255
    x = (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    y = torch.tensor(ys)
    model = build_tiny2()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(25):
        for idx in torch.randperm(n, generator=gen).split(32):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        acc = (model(x).argmax(1) == y).float().mean().item()
    assert acc > 0.9, f"the {label_by} model did not learn its signal (train accuracy {acc:.2f})"
    torch.save(model.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory, one_torch_thread) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("models")
    return {
        "frame": _train("mark", ["frame"], 320, 1, d / "frame.pt"),
        "text": _train("mark", ["text"], 320, 2, d / "text.pt"),
        "control": _train("tint", ["frame", "text"], 320, 3, d / "control.pt"),
    }


def _audit(root: Path, ckpt: Path, out: Path, cache: Path, mark: str) -> tuple[dict, pd.DataFrame]:
    regions = {"text": {"enabled": mark == "text"}, "border": {"enabled": mark == "frame", "width": BORDER}}
    cfg = config_from_dict({
        "name": f"{mark}-{ckpt.stem}",
        "dataset": {"root": str(root)},
        "model": {"factory": "tests.flows.test_cf_proof:build_tiny2", "checkpoint": str(ckpt), "input_size": [INPUT, INPUT],
                  "mean": list(MEAN), "std": list(STD)},
        "cam": {"batch_size": 16, "device": "cpu"},
        "regions": regions,
        # counterfactual.regions unset: every enabled region is intervened on.
        "counterfactual": {"enabled": True},
        "tokens": {"enabled": False},
        "sanity": {"enabled": False},
        # Only the intervention rules decide: lift thresholds out of reach.
        "gate": {"max_text_lift": 1000.0, "max_text_effect": EFFECT, "max_effect": {"border": EFFECT}},
        "stats": {"bootstrap": 500},
        "output": {"dir": str(out), "cache_dir": str(cache), "gallery_size": 0},
    })
    result = run_audit(cfg)
    return result.summary, pd.read_parquet(result.run_dir / "images.parquet")


def _numbers(summary: dict, r: str) -> dict:
    keep = ("n", f"n_{r}_edited", f"n_{r}_no_placebo", f"flip_rate_{r}_removed", f"flip_rate_{r}_placebo",
            f"{r}_effect", f"{r}_effect_ci", f"{r}_lift", f"{r}_norm_lift")
    return {c: {k: s.get(k) for k in keep} for c, s in summary["classes"].items()}


def _check_placebos(images: pd.DataFrame, summary: dict, r: str, min_share: float) -> None:
    has_region = images[f"{r}_area"] > 0
    status = images.loc[has_region, f"{r}_placebo_status"]
    ok = status == "ok"
    assert ok.mean() >= min_share, f"images with a placebo: {status.value_counts().to_dict()}"
    # Those without one are recorded, have no effect, and are counted in the summary.
    assert images.loc[has_region & (images[f"{r}_placebo_status"] != "ok"), f"{r}_effect"].isna().all()
    n_classes = sum(s.get(f"n_{r}_no_placebo", 0) for s in summary["classes"].values())
    assert n_classes == summary["counterfactual"]["n_no_placebo"][r]
    overlap = images.loc[has_region & (images[f"{r}_placebo_status"] == "ok"), f"{r}_placebo_overlap"]
    assert overlap.le(summary["counterfactual"]["placebo_max_overlap"]).all() and overlap.max() == 0.0
    assert summary["counterfactual"]["n_no_placebo"][r] == int((~ok).sum())


@pytest.fixture(scope="module")
def frame_set(tmp_path_factory) -> Path:
    return _write_audit_set(tmp_path_factory.mktemp("frames") / "data", "frame", 16, 10)


@pytest.fixture(scope="module")
def text_set(tmp_path_factory) -> Path:
    return _write_audit_set(tmp_path_factory.mktemp("texts") / "data", "text", 14, 20)


@pytest.fixture(scope="module")
def text_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("text-cache")  # OCR once for both text audits


def test_frame_shortcut_is_flagged_for_the_border(models, frame_set, tmp_path):
    summary, images = _audit(frame_set, models["frame"], tmp_path / "out", tmp_path / "cache", "frame")
    print("frame shortcut:", json.dumps(_numbers(summary, "border")))
    _check_placebos(images, summary, "border", 0.9)
    marked = summary["classes"]["marked"]
    assert marked["flagged"] and any(r.startswith("border_effect") for r in marked["flag_reasons"])
    assert marked["border_effect_ci"][0] > EFFECT and marked["flip_rate_border_removed"] > 0.5
    assert marked["flip_rate_border_placebo"] < 0.2, "the placebo does not remove the frame"
    assert not summary["classes"]["plain"]["flagged"] and not summary["gate"]["passed"]


def test_frame_control_is_not_flagged(models, frame_set, tmp_path):
    summary, images = _audit(frame_set, models["control"], tmp_path / "out", tmp_path / "cache", "frame")
    print("frame control:", json.dumps(_numbers(summary, "border")))
    _check_placebos(images, summary, "border", 0.9)
    assert summary["gate"]["passed"] and not summary["flagged_classes"]


def test_spanning_text_shortcut_is_flagged_for_text(models, text_set, text_cache, tmp_path):
    summary, images = _audit(text_set, models["text"], tmp_path / "out", text_cache, "text")
    print("text shortcut:", json.dumps(_numbers(summary, "text")))
    marked = images[images["label"] == "marked"]
    assert (marked["n_text_boxes"] >= 2).mean() > 0.8, "EasyOCR finds the title and the credits"
    # The photos carry scene text of their own: at 64 px with the 2 px margin some text masks cover
    # more than half the image, where no equal-area placebo can avoid the text (recorded, excluded).
    _check_placebos(images, summary, "text", 0.6)
    assert summary["classes"]["marked"]["n_text_edited"] >= 8
    m = summary["classes"]["marked"]
    assert m["flagged"] and any(r.startswith("text_effect") for r in m["flag_reasons"])
    assert m["text_effect_ci"][0] > EFFECT and m["flip_rate_text_removed"] > 0.5
    assert m["flip_rate_text_placebo"] < 0.2
    assert not summary["gate"]["passed"]


def test_text_control_is_not_flagged(models, text_set, text_cache, tmp_path):
    summary, images = _audit(text_set, models["control"], tmp_path / "out", text_cache, "text")
    print("text control:", json.dumps(_numbers(summary, "text")))
    _check_placebos(images, summary, "text", 0.6)
    assert summary["gate"]["passed"] and not summary["flagged_classes"]
