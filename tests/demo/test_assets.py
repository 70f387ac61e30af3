"""The embedded demo's data and models: determinism, badge rates, the cache, files, real OCR."""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest
import torch

from auditors.demo import assets, training
from auditors.demo import posters as demo_posters
from auditors.cam import find_target_layer
from auditors.config import config_from_dict
from auditors.config.schema import DatasetConfig
from auditors.data.discovery import discover
from auditors.data.decoding import load_rgb

SMALL = {"seed": 3, "n_train_per_class": 6, "n_audit_per_class": 3}


@pytest.fixture(scope="module")
def small_assets(tmp_path_factory: pytest.TempPathFactory) -> assets.DemoAssets:
    """One tiny cache built for the whole module (a few seconds: 36 training posters)."""
    return assets.prepare_demo(tmp_path_factory.mktemp("demo") / "cache", **SMALL)


def _png_bytes(posters: list[demo_posters.Poster]) -> list[bytes]:
    return [cv2.imencode(".png", p.image)[1].tobytes() for p in posters]


def _iou(truth: tuple[int, int, int, int], box: list[int]) -> float:
    """IoU of a drawn box (x0, y0, x1, y1) and an EasyOCR box [x_min, x_max, y_min, y_max]."""
    x0, y0, x1, y1 = truth
    ix = max(0, min(x1, box[1]) - max(x0, box[0]))
    iy = max(0, min(y1, box[3]) - max(y0, box[2]))
    inter = ix * iy
    union = (x1 - x0) * (y1 - y0) + (box[1] - box[0]) * (box[3] - box[2]) - inter
    return inter / union


def test_same_seed_gives_identical_posters_and_other_seed_does_not():
    a = demo_posters.render_split(np.random.default_rng(7), "biased", 4)
    b = demo_posters.render_split(np.random.default_rng(7), "biased", 4)
    c = demo_posters.render_split(np.random.default_rng(8), "biased", 4)
    assert _png_bytes(a) == _png_bytes(b)
    assert _png_bytes(a) != _png_bytes(c)
    assert all(p.image.shape == (*demo_posters.POSTER_SIZE, 3) and p.image.dtype == np.uint8 for p in a)


def test_prepare_demo_is_deterministic(small_assets, tmp_path):
    again = assets.prepare_demo(tmp_path / "again", **SMALL)
    files = sorted(p.relative_to(small_assets.audit_dir) for p in small_assets.audit_dir.rglob("*.png"))
    assert files == sorted(p.relative_to(again.audit_dir) for p in again.audit_dir.rglob("*.png"))
    for f in files:
        assert (small_assets.audit_dir / f).read_bytes() == (again.audit_dir / f).read_bytes()
    for ckpt in ("shortcut_checkpoint", "control_checkpoint"):
        sa = torch.load(getattr(small_assets, ckpt), weights_only=True)
        sb = torch.load(getattr(again, ckpt), weights_only=True)
        assert all(torch.equal(sa[k], sb[k]) for k in sa), f"{ckpt}: same seed must train the same weights"


def test_badge_rates_biased_vs_control():
    n = 40
    biased = demo_posters.render_split(np.random.default_rng(0), "biased", n)
    control = demo_posters.render_split(np.random.default_rng(0), "control", n)

    def rate(posters, c):
        flags = [p.badge for p in posters if demo_posters.CLASSES[p.label] == c]
        assert len(flags) == n
        return sum(flags) / n

    for c in demo_posters.CLASSES:
        if c == demo_posters.BADGE_CLASS:
            assert rate(biased, c) >= 0.9
        else:
            assert rate(biased, c) <= 0.1
    control_rates = {rate(control, c) for c in demo_posters.CLASSES}
    assert len(control_rates) == 1, "control: the badge must be equally likely in every class"
    assert 0.2 <= control_rates.pop() <= 0.5
    # The badge box is recorded exactly when the badge is drawn.
    assert all((p.badge_box is not None) == p.badge for p in biased + control)


def test_metrics_report_rates_and_accuracies(small_assets):
    m = small_assets.metrics
    assert m["badge_rates"]["shortcut_train"][demo_posters.BADGE_CLASS] >= 0.8
    assert len(set(m["badge_rates"]["control_train"].values())) == 1
    for which in ("shortcut", "control"):
        for key in ("train_accuracy", "val_accuracy", "audit_accuracy"):
            assert 0.0 <= m["models"][which][key] <= 1.0


def test_cache_hit_is_fast_and_does_not_retrain(small_assets, monkeypatch):
    def boom(*_a, **_k):
        raise AssertionError("a cache hit must not train")

    monkeypatch.setattr(training, "train_model", boom)
    t0 = time.perf_counter()
    hit = assets.prepare_demo(small_assets.root, **SMALL)
    assert time.perf_counter() - t0 < 1.0
    assert hit == small_assets


def test_interrupted_build_leaves_no_cache(tmp_path, monkeypatch):
    def interrupted(*_a, **_k):
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "train_model", interrupted)
    root = tmp_path / "cache"
    with pytest.raises(KeyboardInterrupt):
        assets.prepare_demo(root, **SMALL)
    assert not root.exists()
    assert list(tmp_path.iterdir()) == [], "temporary build folders must be cleaned up"


def test_foreign_folder_is_refused_not_deleted(tmp_path):
    root = tmp_path / "mine"
    root.mkdir()
    (root / "precious.txt").write_text("keep me")
    with pytest.raises(FileExistsError):
        assets.prepare_demo(root, **SMALL)
    assert (root / "precious.txt").read_text() == "keep me"


def test_files_are_images_in_image_folder_layout(small_assets):
    assert small_assets.classes == demo_posters.CLASSES and small_assets.badge_class == demo_posters.BADGE_CLASS
    assert sorted(d.name for d in small_assets.audit_dir.iterdir()) == sorted(demo_posters.CLASSES)
    index = discover(DatasetConfig(root=small_assets.audit_dir))
    assert index.classes == sorted(demo_posters.CLASSES) and not index.errors
    assert len(index) == len(demo_posters.CLASSES) * SMALL["n_audit_per_class"]
    for entry in index.entries:
        img = load_rgb(small_assets.audit_dir / entry.path)
        assert img.shape == (*demo_posters.POSTER_SIZE, 3) and img.dtype == np.uint8


def test_checkpoints_load_into_the_factory_and_cam_layer_is_spatial(small_assets):
    model = training.build_demo_cnn()  # the product calls the factory without arguments
    for ckpt in (small_assets.shortcut_checkpoint, small_assets.control_checkpoint):
        model.load_state_dict(torch.load(ckpt, weights_only=True))
    model.eval()
    x = training.preprocess([load_rgb(next(small_assets.audit_dir.rglob("*.png")))])
    assert x.shape == (1, 3, *demo_posters.INPUT_SIZE)
    assert model(x).shape == (1, len(demo_posters.CLASSES))
    name = find_target_layer(model, demo_posters.INPUT_SIZE)
    feats = dict(model.named_modules())[name](x)
    assert min(feats.shape[-2:]) >= 8


def test_demo_config_validates_and_matches_training(small_assets, tmp_path):
    for which in ("shortcut", "control"):
        cfg = config_from_dict(assets.demo_config(small_assets, which, tmp_path / "out"))
        assert cfg.name == f"demo-{which}"
        assert cfg.model.checkpoint == getattr(small_assets, f"{which}_checkpoint")
        assert cfg.model.input_size == demo_posters.INPUT_SIZE
        assert cfg.model.mean == demo_posters.NORM_MEAN and cfg.model.std == demo_posters.NORM_STD
        assert cfg.gate.max_text_lift == 2.0 and cfg.regions.text.enabled
    with pytest.raises(ValueError):
        assets.demo_config(small_assets, "other", tmp_path)  # type: ignore[arg-type]


def test_easyocr_finds_badge_and_title(tmp_path):
    """Real EasyOCR (offline weights): the badge and the title are both detected where drawn."""
    import easyocr
    from auditors.regions.text import weights_dir

    reader = easyocr.Reader(
        ["en"], gpu=False, model_storage_directory=str(weights_dir()), user_network_directory=str(tmp_path),
        download_enabled=False, recognizer=False, verbose=False,
    )
    rng = np.random.default_rng(11)
    posters = [demo_posters.render_poster(rng, label, badge=True) for label in range(len(demo_posters.CLASSES)) for _ in range(2)]
    for p in posters:
        (boxes,), _ = reader.detect(p.image, min_size=4, text_threshold=0.5, canvas_size=1024)
        # Drawn boxes include the tag's padding, EasyOCR's hug the glyphs: IoU ~0.6-0.8 is a hit.
        assert max((_iou(p.badge_box, b) for b in boxes), default=0) > 0.5, f"badge missed: {boxes}"
        assert max((_iou(p.title_box, b) for b in boxes), default=0) > 0.5, f"title missed: {boxes}"
