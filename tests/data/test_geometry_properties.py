"""Property-based tests (hypothesis) of the preprocessing geometry: boxes land where their pixels went."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from auditors.data.geometry import placement_for, polygons_to_mask, warp_image, warp_mask, warp_points, xywh_to_polygon

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --------------------------------------------------------------------------- geometry


@st.composite
def placements_and_boxes(draw):
    src = (draw(st.integers(12, 90)), draw(st.integers(12, 90)))
    out = (draw(st.integers(12, 80)), draw(st.integers(12, 80)))
    mode = draw(st.sampled_from(["stretch", "center_crop", "letterbox"]))
    x0 = draw(st.integers(0, src[1] - 4))
    y0 = draw(st.integers(0, src[0] - 4))
    w = draw(st.integers(3, src[1] - x0))
    h = draw(st.integers(3, src[0] - y0))
    return src, out, mode, (x0, y0, w, h)


def _centre_distance_to_box(shape: tuple[int, int], box: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Signed distances (inside > 0) of pixel centres to the box's edges, per axis, as one min."""
    ys, xs = np.mgrid[0 : shape[0], 0 : shape[1]] + 0.5
    x0, y0 = box.min(axis=0)
    x1, y1 = box.max(axis=0)
    return np.minimum.reduce([xs - x0, x1 - xs, ys - y0, y1 - ys]), (xs, ys)


@settings(max_examples=80, deadline=None)
@given(placements_and_boxes())
def test_a_box_mapped_through_each_resize_mode_lands_where_its_pixels_went(case):
    src, out, mode, box = case
    p = placement_for(src, out, mode)
    img = np.zeros((*src, 3), np.uint8)
    x0, y0, w, h = box
    img[y0 : y0 + h, x0 : x0 + w] = 255
    warped = warp_image(img, p)[..., 0].astype(int)
    mapped = warp_points(xywh_to_polygon(box), p)
    inside, _ = _centre_distance_to_box(out, mapped)
    # Resampling blurs an edge over about one source pixel (in output pixels) plus one output pixel.
    margin = max(p.sx, p.sy) + 1.0
    deep_inside, far_outside = inside > margin, inside < -margin
    assert np.all(warped[deep_inside] >= 250), "pixels well inside the mapped box must be the box's pixels"
    assert np.all(warped[far_outside] <= 5), "pixels well outside the mapped box must not be the box's pixels"
    # Masks and polygons follow the same mapping: the warped mask agrees with the rasterised mapped box
    # everywhere except within the blur margin of its edges.
    mask = warp_mask(polygons_to_mask([xywh_to_polygon(box)], src), p)
    raster = polygons_to_mask([mapped], out)
    settled = deep_inside | far_outside
    np.testing.assert_array_equal(mask[settled], raster[settled])


@FAST
@given(st.tuples(st.integers(1, 400), st.integers(1, 400)), st.tuples(st.integers(8, 300), st.integers(8, 300)),
       st.sampled_from(["stretch", "center_crop", "letterbox"]))
def test_placements_cover_or_fit_the_canvas_as_their_mode_promises(src, out, mode):
    p = placement_for(src, out, mode)
    corners = warp_points(np.array([[0.0, 0.0], [src[1], src[0]]]), p)
    if mode == "stretch":
        np.testing.assert_allclose(corners, [[0, 0], [out[1], out[0]]])
    elif mode == "letterbox":  # whole image visible
        assert corners[0, 0] >= -1e-9 and corners[0, 1] >= -1e-9
        assert corners[1, 0] <= out[1] + 1e-9 and corners[1, 1] <= out[0] + 1e-9
    else:  # centre crop: canvas fully covered
        assert corners[0, 0] <= 1e-9 and corners[0, 1] <= 1e-9
        assert corners[1, 0] >= out[1] - 1e-9 and corners[1, 1] >= out[0] - 1e-9
