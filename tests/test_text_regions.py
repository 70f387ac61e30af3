"""Real EasyOCR (offline weights) on planted and real text; the content-hash cache."""

import numpy as np

from auditors.config import TextRegionConfig
from auditors.geometry import placement_for
from auditors.imageio import content_hash, load_rgb
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
    assert cold.stats == {"detected": 2, "cached": 0}
    assert sum(len(r.polygons) for r in first) > 0, "real scene-text photos contain text"
    warm = TextDetector(TextRegionConfig(canvas_size=512), RegionCache(tmp_path / "c.sqlite"))
    second = warm.detect(imgs, keys)
    assert warm.stats == {"detected": 0, "cached": 2}
    for a, b in zip(first, second):
        assert len(a.polygons) == len(b.polygons)
        for pa, pb in zip(a.polygons, b.polygons):
            np.testing.assert_allclose(pa, pb, atol=0.01)
    other = TextDetector(TextRegionConfig(canvas_size=384), cache)
    other.detect(imgs[:1], keys[:1])
    assert other.stats["detected"] == 1, "changed detector settings must miss the cache"
