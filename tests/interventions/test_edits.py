"""Inpainting and placebo edits: equal area, seeded per image, the rest of the image untouched."""

import numpy as np

from auditors.interventions.edits import dilate, image_seed, inpaint, placebo_mask, plan_intervention


def test_placebo_has_equal_area_same_shape_and_avoids_the_region():
    mask = np.zeros((64, 64), bool)
    mask[5:15, 10:40] = True
    placebo, overlap = placebo_mask(mask, np.random.default_rng(0))
    assert overlap == 0.0 and placebo.sum() == mask.sum() and not (placebo & mask).any()
    ys, xs = np.nonzero(placebo)
    assert (ys.max() - ys.min() + 1, xs.max() - xs.min() + 1) == (10, 30)


def test_placebo_reports_unavoidable_overlap():
    mask = np.ones((10, 10), bool)
    mask[:, 8:] = False  # 80% of the image: any placement overlaps
    placebo, overlap = placebo_mask(mask, np.random.default_rng(0), tries=50)
    assert placebo.sum() == mask.sum() and 0 < overlap <= 1


def test_inpainting_removes_text_and_leaves_the_rest():
    img = np.full((48, 48, 3), 200, np.uint8)
    img[20:28, 10:38] = 0  # a dark "word"
    mask = np.zeros((48, 48), bool)
    mask[20:28, 10:38] = True
    out = inpaint(img, dilate(mask, 1))
    assert out[20:28, 10:38].min() > 150, "the dark word is filled from the grey surround"
    assert (out[~dilate(mask, 1)] == img[~dilate(mask, 1)]).all()


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
