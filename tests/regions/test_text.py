"""Real EasyOCR (offline weights) on planted and real text; the content-hash cache."""

import cv2
import numpy as np

from auditors.config.schema import TextRegionConfig
from auditors.data.geometry import placement_for
from auditors.data.decoding import content_hash, load_rgb
from auditors.regions import RegionCache, TextDetector
from tests.conftest import draw_word


def _overlap(mask_box, poly_mask):
    return (mask_box & poly_mask).sum() / mask_box.sum()


def test_planted_word_is_found_where_it_was_printed(tmp_path):
    img = np.full((160, 120, 3), 240, np.uint8)
    x0, y0, x1, y1 = draw_word(img, "SALE", (20, 100), scale=1.0)
    det = TextDetector(TextRegionConfig(), RegionCache(tmp_path / "c.sqlite"))
    (region,) = det.detect([img], ["k1"])
    assert len(region.polygons) >= 1
    p = placement_for(img.shape[:2], img.shape[:2])
    found = region.model_mask(p)
    truth = np.zeros(img.shape[:2], bool)
    truth[y0:y1, x0:x1] = True
    assert _overlap(truth, found) > 0.8, "the detected polygon must cover the printed word"
    assert found.sum() < 4 * truth.sum(), "and not much more than it"


def test_blank_image_has_no_text(tmp_path):
    det = TextDetector(TextRegionConfig(), None)
    (region,) = det.detect([np.full((64, 64, 3), 128, np.uint8)], ["blank"])
    assert region.polygons == [] and region.is_empty


def test_cache_skips_detection_and_settings_invalidate_it(scenetext_dir, tmp_path):
    files = sorted(scenetext_dir.glob("scenetext0*.jpg"))[:2]
    imgs = [load_rgb(f) for f in files]
    keys = [content_hash(f.read_bytes()) for f in files]
    cache = RegionCache(tmp_path / "c.sqlite")
    cold = TextDetector(TextRegionConfig(canvas_size=512), cache)
    first = cold.detect(imgs, keys)
    assert cold.stats == {"detected": 2, "cached": 0, "failed": 0}
    assert sum(len(r.polygons) for r in first) > 0, "real scene-text photos contain text"
    warm = TextDetector(TextRegionConfig(canvas_size=512), RegionCache(tmp_path / "c.sqlite"))
    second = warm.detect(imgs, keys)
    assert warm.stats == {"detected": 0, "cached": 2, "failed": 0}
    for a, b in zip(first, second):
        assert len(a.polygons) == len(b.polygons)
        for pa, pb in zip(a.polygons, b.polygons):
            np.testing.assert_allclose(pa, pb, atol=0.01)
    other = TextDetector(TextRegionConfig(canvas_size=384), cache)
    other.detect(imgs[:1], keys[:1])
    assert other.stats["detected"] == 1, "changed detector settings must miss the cache"


# --- detector fidelity, scores, batching --------------------------------------------------

def _reader():
    from auditors.regions.text import _get_reader

    return _get_reader(("en",), False, False)


def test_boxes_equal_easyocr_detect_at_the_same_canvas(scenetext_dir):
    """Our batched driver reproduces Reader.detect (fp32, same canvas, same thresholds) to a pixel:
    folding batch norm into the convolutions changes float rounding, nothing else."""
    img = load_rgb(scenetext_dir / "imageTextN.png")
    cfg = TextRegionConfig(canvas_size=384, precision="fp32", min_score=0.0, min_size=20)
    (region,) = TextDetector(cfg).detect([img], ["n"])
    horizontal, free = _reader().detect(img, canvas_size=384, min_size=20)
    h, w = img.shape[:2]
    expected = [np.clip(np.array([[b[0], b[2]], [b[1], b[2]], [b[1], b[3]], [b[0], b[3]]], float), 0, [w, h]) for b in horizontal[0]]
    assert len(region.polygons) == len(horizontal[0]) + len(free[0]) > 10
    for got, exp in zip(region.polygons, expected):
        np.testing.assert_allclose(got, exp, atol=1.01)


def test_scores_are_real_and_min_score_filters_without_redetecting(scenetext_dir, tmp_path):
    img = load_rgb(scenetext_dir / "scenetext_segmented_word04.jpg")
    cache = RegionCache(tmp_path / "c.sqlite")
    loose = TextDetector(TextRegionConfig(canvas_size=320, min_score=0.0, text_threshold=0.5), cache).detect([img], ["a"])[0]
    scores = np.array(loose.scores)
    assert len(scores) >= 2 and np.isfinite(scores).all() and (scores > 0.4).all() and (scores <= 1.0).all()
    assert scores.std() > 0, "scores differ between boxes: they are measured, not constants"
    cut = float(np.median(scores))
    det = TextDetector(TextRegionConfig(canvas_size=320, min_score=cut, text_threshold=0.5), cache)
    strict = det.detect([img], ["a"])[0]
    assert len(strict.polygons) == int((scores >= cut).sum()) < len(scores)
    assert min(strict.scores) >= cut
    assert det.stats["cached"] == 1, "min_score filters cached boxes: no new detection"


def test_batched_detection_matches_one_at_a_time():
    imgs = []
    for word in ("OPEN", "SALE", "HELLO"):
        img = np.full((120, 200, 3), 235, np.uint8)
        draw_word(img, word, (15, 70), scale=1.2)
        imgs.append(img)
    det = TextDetector(TextRegionConfig(batch_size=3))
    together = det.detect(imgs, ["a", "b", "c"])
    alone = [det.detect([im], [k])[0] for im, k in zip(imgs, ["x", "y", "z"])]
    for t, a in zip(together, alone):
        assert len(t.polygons) == len(a.polygons) >= 1
        for pt, pa in zip(t.polygons, a.polygons):
            np.testing.assert_allclose(pt, pa, atol=2)


def test_rotated_text_keeps_a_rotated_polygon():
    img = np.full((260, 260, 3), 240, np.uint8)
    draw_word(img, "ROTATED", (40, 140), scale=1.3, thickness=3)
    m = cv2.getRotationMatrix2D((130, 130), 30, 1.0)
    img = cv2.warpAffine(img, m, (260, 260), borderValue=(240, 240, 240))
    (region,) = TextDetector(TextRegionConfig()).detect([img], ["rot"])
    assert region.polygons
    edges = [np.diff(np.vstack([p, p[:1]]), axis=0) for p in region.polygons]
    slanted = [e for e in edges if np.all(np.abs(e).min(axis=1) > 5)]
    assert slanted, "at least one box has no axis-aligned edge (EasyOCR's free_list quad)"


def test_read_stores_strings_and_confidences(tmp_path):
    img = np.full((100, 220, 3), 245, np.uint8)
    draw_word(img, "SALE", (20, 65), scale=1.5, thickness=3)
    cache = RegionCache(tmp_path / "c.sqlite")
    (region,) = TextDetector(TextRegionConfig(read=True), cache).detect([img], ["sale"])
    assert region.texts and region.texts[0].upper().replace(" ", "") == "SALE"
    assert 0 < region.text_scores[0] <= 1
    warm = TextDetector(TextRegionConfig(read=True), cache)
    (again,) = warm.detect([img], ["sale"])
    assert warm.stats["cached"] == 1 and again.texts == region.texts


# --- bad input: defined results, never a crash ------------------------------------------

def test_tiny_flat_and_odd_inputs_in_one_batch():
    det = TextDetector(TextRegionConfig())
    imgs = [
        np.zeros((8, 8, 3), np.uint8),
        np.full((1, 300, 3), 30, np.uint8),
        np.zeros((8, 8), np.uint8),  # not RGB: an error for this image only
        np.zeros((8, 8, 3), np.float32),
    ]
    regions = det.detect(imgs, ["t1", "t2", "t3", "t4"])
    assert [r.is_failed for r in regions] == [False, False, True, True]
    assert regions[0].polygons == [] and regions[1].polygons == []
    assert "H x W x 3" in regions[2].error and "uint8" in regions[3].error
    assert det.stats["failed"] == 2


def test_all_text_image_is_mostly_text():
    img = np.full((240, 240, 3), 250, np.uint8)
    for row in range(8):
        draw_word(img, "TEXT WORDS", (4, 26 + 29 * row), scale=0.85, thickness=2)
    (region,) = TextDetector(TextRegionConfig()).detect([img], ["all"])
    mask = region.original_mask(240, 240)
    assert len(region.polygons) >= 6 and mask.mean() > 0.5


def test_huge_image_is_downscaled_and_boxes_come_back_in_original_pixels():
    img = np.full((10000, 10000, 3), 235, np.uint8)
    x0, y0, x1, y1 = draw_word(img, "HUGE", (3000, 6000), scale=40, thickness=80)
    (region,) = TextDetector(TextRegionConfig(canvas_size=512)).detect([img], ["huge"])
    assert region.polygons, "the word is ~50 px tall on the 512 px canvas"
    box = np.vstack(region.polygons)
    assert box[:, 0].min() < x0 + 400 and box[:, 0].max() > x1 - 400
    assert box[:, 1].min() < y0 + 400 and box[:, 1].max() > y1 - 400
    assert box.min() >= 0 and box.max() <= 10000
