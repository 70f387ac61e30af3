"""A box planted in a non-square original must land where the resized pixels put it."""

import numpy as np
import pytest

from auditors.data.geometry import (
    clip_polygon,
    image_area_mask,
    placement_for,
    polygon_masks,
    polygons_to_mask,
    warp_image,
    warp_mask,
    warp_points,
    xywh_to_polygon,
)
from auditors.regions import Region, border_region


def _box(x0, y0, x1, y1):
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], float)


def test_stretch_maps_box_exactly():
    p = placement_for((300, 200), (100, 100), "stretch")  # H=300, W=200 -> 100x100
    pts = warp_points(_box(40, 90, 120, 150), p)
    np.testing.assert_allclose(pts[0], [20, 30])
    np.testing.assert_allclose(pts[2], [60, 50])
    mask = polygons_to_mask([pts], (100, 100))
    assert mask.sum() == 40 * 20 and mask[30:50, 20:60].all()


@pytest.mark.parametrize("mode", ["stretch", "center_crop", "letterbox"])
def test_mapped_box_matches_the_warped_pixels(mode):
    """Paint a box white in a grey non-square image; the mapped polygon covers the white pixels."""
    img = np.full((240, 160, 3), 100, np.uint8)
    img[60:180, 40:120] = 255
    p = placement_for(img.shape[:2], (96, 96), mode)
    warped = warp_image(img, p)
    mask = Region("t", polygons=[_box(40, 60, 120, 180)]).model_mask(p)
    white = warped[..., 0] > 200
    # Interior agreement exactly; the 1-px boundary band may differ through interpolation.
    assert (white & ~mask).sum() <= 2 * (mask.sum() ** 0.5 * 4) * 0.25
    assert (mask & (warped[..., 0] < 150)).sum() == 0
    assert white.sum() > 0 and abs(int(white.sum()) - int(mask.sum())) <= 0.08 * mask.sum()


def test_center_crop_and_letterbox_offsets():
    crop = placement_for((200, 100), (50, 50), "center_crop")  # scale 0.5 -> 50x100, crop 25 rows each side
    assert (crop.scaled_w, crop.scaled_h, crop.tx, crop.ty) == (50, 100, 0, -25)
    np.testing.assert_allclose(warp_points(np.array([[0, 50]]), crop), [[0, 0]])
    box = placement_for((200, 100), (50, 50), "letterbox")  # scale 0.25 -> 25x50, pad 12 cols left
    assert (box.scaled_w, box.scaled_h, box.tx, box.ty) == (25, 50, 12, 0)
    warped = warp_image(np.full((200, 100, 3), 255, np.uint8), box)
    assert warped[:, :12].max() == 0 and warped[:, 12:37].min() == 255 and warped[:, 37:].max() == 0


def test_raster_masks_follow_the_same_mapping():
    m = np.zeros((200, 100), bool)
    m[100:, :] = True  # bottom half
    p = placement_for(m.shape, (50, 50), "center_crop")
    out = warp_mask(m, p)
    assert out[25:].all() and not out[:25].any()


def test_border_region_area_is_exact_in_model_space():
    region = border_region(200, 100, 0.1)  # 10 px left/right, 20 px top/bottom
    p = placement_for((200, 100), (100, 50), "stretch")
    mask = region.model_mask(p)
    expected = np.ones((100, 50), bool)
    expected[10:90, 5:45] = False
    assert (mask == expected).all()


def test_dilation_grows_the_mask():
    p = placement_for((10, 10), (10, 10))
    r = Region("t", polygons=[_box(4, 4, 6, 6)])
    assert r.model_mask(p).sum() == 4 and r.model_mask(p, dilation=1).sum() == 16


# --- user masks and manifest boxes follow the same mapping --------------------------------

MODES = ["stretch", "center_crop", "letterbox"]


def _painted(mode):
    """A non-square grey image with a white rectangle, and where the model sees white."""
    img = np.full((240, 160, 3), 100, np.uint8)
    img[60:180, 40:120] = 255
    p = placement_for(img.shape[:2], (96, 96), mode)
    return img, p, warp_image(img, p)[..., 0] > 200


@pytest.mark.parametrize("mode", MODES)
def test_user_mask_maps_like_the_pixels(mode):
    img, p, white = _painted(mode)
    mask = np.zeros(img.shape[:2], bool)
    mask[60:180, 40:120] = True
    got = Region("wm", mask=mask).model_mask(p)
    assert (got != white).sum() <= 0.06 * white.sum(), "raster mask and pixels land on the same model pixels"
    assert not (got & ~image_area_mask(p)).any()


@pytest.mark.parametrize("mode", MODES)
def test_manifest_box_maps_like_the_pixels(mode):
    img, p, white = _painted(mode)
    got = Region("logo", polygons=[xywh_to_polygon([40, 60, 80, 120])]).model_mask(p)
    assert (got != white).sum() <= 0.06 * white.sum()


@pytest.mark.parametrize("mode", MODES)
def test_low_resolution_mask_is_stretched_over_the_image(mode):
    img, p, white = _painted(mode)
    small = np.zeros((24, 16), bool)  # 1/10 of the image, same aspect ratio
    small[6:18, 4:12] = True
    got = Region("wm", mask=small).model_mask(p)
    assert (got != white).sum() <= 0.06 * white.sum()


@pytest.mark.parametrize("mode", MODES)
def test_complement_is_the_image_minus_the_region_never_the_padding(mode):
    img, p, white = _painted(mode)
    bg = Region("background", polygons=[xywh_to_polygon([40, 60, 80, 120])], complement=True).model_mask(p)
    fg = Region("fg", polygons=[xywh_to_polygon([40, 60, 80, 120])]).model_mask(p)
    area = image_area_mask(p)
    assert not (bg & fg).any() and ((bg | fg) == area).all()
    if mode == "letterbox":
        assert not area.all() and not bg[:, : p.tx].any(), "letterbox padding is no region"


def test_clip_polygon_keeps_the_inside_part():
    inside = clip_polygon(_box(-10, -10, 20, 30), 100, 100)
    assert polygons_to_mask([inside], (100, 100)).sum() == 20 * 30
    diamond = np.array([[50, -20], [120, 50], [50, 120], [-20, 50]], float)  # rotated box over every edge
    clipped = clip_polygon(diamond, 100, 100)
    assert len(clipped) == 8 and clipped.min() >= 0 and clipped.max() <= 100
    assert len(clip_polygon(_box(200, 200, 300, 300), 100, 100)) == 0


def test_rasteriser_is_half_open_and_handles_rotated_and_degenerate_polygons():
    assert polygons_to_mask([_box(2.5, 2.5, 3.5, 3.5)], (6, 6)).sum() == 1  # centre (3,3)+0.5 inside
    assert polygons_to_mask([_box(0, 0, 6, 6)], (6, 6)).all()
    assert polygons_to_mask([_box(1, 1, 1, 5)], (6, 6)).sum() == 0  # zero width
    assert polygons_to_mask([np.array([[0, 0], [5, 5]], float)], (6, 6)).sum() == 0  # not a polygon
    tri = polygons_to_mask([np.array([[0, 0], [10, 0], [0, 10]], float)], (10, 10))
    assert tri.sum() == 45 and tri[0, 8] and not tri[0, 9], "centres on the hypotenuse are outside (half-open)"
    rot = np.array([[50, 10], [90, 50], [50, 90], [10, 50]], float)  # diamond of area 3200
    assert abs(int(polygons_to_mask([rot], (100, 100)).sum()) - 3200) <= 80


def _centres_inside(poly: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Reference rasteriser, pixel by pixel: even-odd ray casting from each pixel centre."""
    ys, xs = np.mgrid[0 : hw[0], 0 : hw[1]] + 0.5
    inside = np.zeros(hw, bool)
    for (ax, ay), (bx, by) in zip(poly, np.roll(poly, -1, axis=0)):
        straddles = (ay <= ys) != (by <= ys)  # the scan line at the centre crosses this edge
        with np.errstate(divide="ignore", invalid="ignore"):
            x_cross = ax + (ys - ay) / (by - ay) * (bx - ax)
        inside ^= straddles & (xs < x_cross)  # crossings to the right of the centre
    return inside


def test_per_polygon_masks_match_a_pixel_by_pixel_reference_and_their_union():
    """Batched rasterising (one pass per vertex count) gives each polygon its own exact mask."""
    rng = np.random.default_rng(7)
    for _ in range(150):
        hw = tuple(int(v) for v in rng.integers(6, 60, 2))
        polys = []
        for _ in range(int(rng.integers(1, 7))):
            pts = rng.uniform(-10, max(hw) + 10, (int(rng.choice([3, 4, 4, 5, 8])), 2))
            if rng.random() < 0.5:
                pts = np.round(pts * 2) / 2  # vertices on pixel edges and centres: the boundary rule matters
            polys.append(pts)
        masks = polygon_masks(polys, hw)
        assert masks.shape == (len(polys), *hw)
        for poly, mask in zip(polys, masks):
            np.testing.assert_array_equal(mask, _centres_inside(poly, hw))
        np.testing.assert_array_equal(polygons_to_mask(polys, hw), masks.any(axis=0))
    many = [_box(x, x, x + 3, x + 2) for x in range(0, 70, 2)]  # 35 polygons: more than one union batch
    union = polygons_to_mask(many, (80, 80))
    np.testing.assert_array_equal(union, polygon_masks(many, (80, 80)).any(axis=0))
    degenerate = polygon_masks([np.array([[0, 0], [5, 5]], float), np.array([[np.nan, 1], [4, 1], [4, 4]])], (6, 6))
    assert degenerate.shape == (2, 6, 6) and not degenerate.any()
    assert polygon_masks([], (6, 6)).shape == (0, 6, 6)
