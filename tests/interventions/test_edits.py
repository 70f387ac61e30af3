"""Inpainting and placebo edits: equal area, same local shape, never on the region (any shape: frames,
spanning text, diagonal watermarks), inside image content, seeded per image; a removed frame is gone."""

import cv2
import numpy as np
import pytest

from auditors.data.geometry import image_area_mask, placement_for, polygons_to_mask, warp_image
from auditors.interventions.edits import dilate, image_seed, inpaint, placebo_mask, plan_intervention
from auditors.regions.border import border_region
from tests.conftest import SCENETEXT, draw_word


def _photo(name: str = "scenetext01.jpg", size: int = 96) -> np.ndarray:
    img = cv2.imread(str(SCENETEXT / name))
    assert img is not None, name
    return np.ascontiguousarray(cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)[:, :, ::-1])


def _frame_mask(size: int, fraction: float) -> np.ndarray:
    return polygons_to_mask(border_region(size, size, fraction).polygons, (size, size))


def _rigid_overlap(mask: np.ndarray, seed: int) -> float:
    """What the old design (translate the whole mask) could best do: its least overlap."""
    h, w = mask.shape
    ys, xs = np.nonzero(mask)
    rng = np.random.default_rng(seed)
    best = 1.0
    for _ in range(200):
        dy = int(rng.integers(-ys.min(), h - ys.max()))
        dx = int(rng.integers(-xs.min(), w - xs.max()))
        moved = np.zeros_like(mask)
        moved[ys + dy, xs + dx] = True
        best = min(best, (moved & mask).sum() / mask.sum())
    return best


def test_placebo_has_equal_area_same_shape_and_avoids_the_region():
    mask = np.zeros((64, 64), bool)
    mask[5:15, 10:40] = True
    res = placebo_mask(mask, np.random.default_rng(0))
    assert res.status == "ok" and res.overlap == 0.0 and res.n_pieces == 1
    assert res.mask.sum() == mask.sum() and not (res.mask & mask).any()
    ys, xs = np.nonzero(res.mask)
    assert (ys.max() - ys.min() + 1, xs.max() - xs.min() + 1) == (10, 30), "a piece that fits keeps its shape"


@pytest.mark.parametrize("size,fraction", [(64, 0.05), (96, 0.1), (224, 0.05)])
def test_frame_placebo_never_touches_the_frame(size, fraction):
    frame = dilate(_frame_mask(size, fraction), 2)
    assert _rigid_overlap(frame, 0) > 0.5, "the case is built to break a translated copy"
    for seed in range(5):
        res = placebo_mask(frame, np.random.default_rng(seed))
        assert res.status == "ok" and res.overlap == 0.0
        assert res.mask.sum() == frame.sum() and not (res.mask & frame).any()
        assert res.n_pieces > 1, "a frame cannot be placed whole inside itself"


def test_spanning_text_placebo_on_a_real_photo():
    """Title at the top, credits at the bottom: any rigid shift lands on one of them."""
    img = _photo(size=128)
    boxes = [draw_word(img, "THE TITLE", (8, 22), 0.7, 2), draw_word(img, "CREDITS ROLL", (6, 118), 0.55, 1)]
    text = np.zeros((128, 128), bool)
    for x0, y0, x1, y1 in boxes:
        text[y0:y1, x0:x1] = True
    removed = dilate(text, 2)
    assert _rigid_overlap(removed, 0) > 0.0
    for seed in range(10):
        plan = plan_intervention(img, text, method="telea", radius=3, margin=2, seed=seed, tries=200)
        assert plan.has_placebo and plan.placebo_overlap == 0.0
        assert plan.placebo_mask.sum() == plan.removed_mask.sum()
        assert not (plan.placebo_mask & plan.removed_mask).any()
        # The placebo edit leaves the text pixels untouched; the removal changes them.
        assert (plan.placebo[text] == img[text]).all() and (plan.removed[text] != img[text]).any()


def test_placebo_stays_inside_letterboxed_content():
    img = _photo("scenetext02.jpg", 120)[:, :60]  # tall image: letterbox pads left and right
    p = placement_for(img.shape[:2], (64, 64), "letterbox")
    view, content = warp_image(img, p), image_area_mask(p)
    assert (~content).sum() > 0.4 * content.size
    mask = np.zeros((64, 64), bool)
    mask[10:18, 18:46] = True
    for seed in range(10):
        plan = plan_intervention(view, mask, method="telea", radius=3, margin=1, seed=seed, tries=200, content=content)
        assert plan.has_placebo and not (plan.placebo_mask & ~content).any()
        assert plan.placebo_mask.sum() == plan.removed_mask.sum()


def test_no_valid_placebo_is_reported_not_faked():
    big = np.ones((32, 32), bool)
    big[12:20, 12:20] = False  # 94% of the image
    res = placebo_mask(big, np.random.default_rng(0))
    assert res.mask is None and res.status == "too_large"
    img = np.full((32, 32, 3), 120, np.uint8)
    plan = plan_intervention(img, big, method="telea", radius=3, margin=0, seed=0, tries=50)
    assert not plan.has_placebo and plan.placebo is None and plan.placebo_status == "too_large"
    # Room in total but not for any piece: the free content is a checkerboard of single pixels.
    region = np.zeros((32, 32), bool)
    region[2:6, 2:6] = True
    content = (np.indices((32, 32)).sum(0) % 2 == 0) | region
    res = placebo_mask(region, np.random.default_rng(0), tries=200, content=content)
    assert res.mask is None and res.status == "no_room"


def test_token_placebo_avoids_all_other_text():
    img = _photo(size=96)
    token = np.zeros((96, 96), bool)
    token[4:14, 4:30] = True
    other = np.zeros((96, 96), bool)
    other[30:70, 10:90] = True  # a big block of other text
    for seed in range(10):
        plan = plan_intervention(img, token, method="telea", radius=3, margin=2, seed=seed, tries=200, avoid=other)
        assert plan.has_placebo and not (plan.placebo_mask & dilate(other, 2)).any()


def test_inpainting_removes_text_and_leaves_the_rest():
    img = np.full((48, 48, 3), 200, np.uint8)
    img[20:28, 10:38] = 0  # a dark "word"
    mask = np.zeros((48, 48), bool)
    mask[20:28, 10:38] = True
    out = inpaint(img, dilate(mask, 1))
    assert out[20:28, 10:38].min() > 150, "the dark word is filled from the grey surround"
    assert (out[~dilate(mask, 1)] == img[~dilate(mask, 1)]).all()


@pytest.mark.parametrize("name", ["scenetext01.jpg", "scenetext04.jpg", "licenseplate_motion.jpg"])
def test_a_removed_frame_is_gone_pixel_wise(name):
    """A thick red frame on a real photo: after removal no frame pixel is red-ish, and the result
    is the same as removing the border of the frame-less photo (nothing of the frame survives)."""
    size, width = 128, 10
    clean = _photo(name, size)
    framed = clean.copy()
    frame = np.zeros((size, size), bool)
    frame[:width] = frame[-width:] = True
    frame[:, :width] = frame[:, -width:] = True
    framed[frame] = (225, 20, 25)
    border = _frame_mask(size, width / size + 0.001)
    a = plan_intervention(framed, border, method="telea", radius=3, margin=2, seed=0, tries=200)
    b = plan_intervention(clean, border, method="telea", radius=3, margin=2, seed=0, tries=200)

    def frame_coloured(v):  # within 40 of the frame's red in every channel
        return (np.abs(v.astype(int) - (225, 20, 25)).max(axis=-1) < 40)[frame]

    assert frame_coloured(framed).all()
    share, own = frame_coloured(a.removed).mean(), frame_coloured(clean).mean()
    # No more frame-red than the photo itself has there (the licence-plate photo has a red car).
    assert share <= max(own, 0.01) + 0.01, f"{share:.1%} of the frame is still frame-red after removal"
    # Removal reads only pixels outside the removed area: framed and clean give the same image.
    np.testing.assert_array_equal(a.removed, b.removed)
    # The placebo leaves the frame in place.
    assert (a.placebo[frame] == framed[frame]).all()


def test_plan_intervention_is_seeded_per_image():
    img = np.random.default_rng(0).integers(0, 255, (32, 32, 3), np.uint8)
    mask = np.zeros((32, 32), bool)
    mask[2:6, 2:12] = True
    kw = dict(method="telea", radius=3, margin=1, tries=100)
    a = plan_intervention(img, mask, seed=image_seed(0, "ab" * 16, "text"), **kw)
    b = plan_intervention(img, mask, seed=image_seed(0, "ab" * 16, "text"), **kw)
    c = plan_intervention(img, mask, seed=image_seed(0, "cd" * 16, "text"), **kw)
    assert (a.placebo_mask == b.placebo_mask).all() and (a.removed == b.removed).all()
    assert not (a.placebo_mask == c.placebo_mask).all()
    assert a.removed_mask.sum() == a.placebo_mask.sum() == dilate(mask, 1).sum()
    assert plan_intervention(img, np.zeros_like(mask), seed=0, **kw) is None



def test_custom_diagonal_watermark_gets_a_disjoint_placebo():
    """A custom region spanning the image both ways (a diagonal watermark band) on a real photo."""
    img = _photo("scenetext03.jpg", 96)
    yy, xx = np.indices((96, 96))
    band = np.abs(yy - xx) < 4  # 8 px wide, corner to corner
    assert _rigid_overlap(dilate(band, 2), 0) > 0.0, "any shift of the whole band crosses it"
    for seed in range(5):
        plan = plan_intervention(img, band, method="telea", radius=3, margin=2, seed=seed, tries=200)
        assert plan.has_placebo and plan.placebo_overlap == 0.0
        assert plan.placebo_mask.sum() == plan.removed_mask.sum() and not (plan.placebo_mask & plan.removed_mask).any()
