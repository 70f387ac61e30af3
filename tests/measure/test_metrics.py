"""Planted maps whose region mass is known in closed form."""

import math

import torch

from auditors.measure.metrics import region_metrics, upsample_maps


def test_planted_mass_area_lift_and_hit_are_exact():
    s = torch.ones(1, 10, 10)
    s[0, 2:4, 3:7] = 4.0  # 8 pixels of value 4 inside the box
    s[0, 8, 8] = 10.0  # the peak, outside the box
    box = torch.zeros(1, 1, 10, 10, dtype=torch.bool)
    box[0, 0, 2:4, 3:7] = True
    m = region_metrics(s, box)
    total = 91 * 1.0 + 8 * 4.0 + 10.0 - 0  # 100 pixels: 91 ones, 8 fours, 1 ten
    assert math.isclose(m["mass"].item(), 32.0 / total, rel_tol=1e-6)
    assert math.isclose(m["area"].item(), 0.08, rel_tol=1e-6)
    assert math.isclose(m["lift"].item(), (32.0 / total) / 0.08, rel_tol=1e-6)
    assert m["hit"].item() == 0.0
    near = region_metrics(s, box, tolerance=5)
    assert near["hit"].item() == 1.0 and near["mass"].item() == m["mass"].item()


def test_uniform_map_gives_lift_one_for_any_region():
    s = torch.full((2, 8, 8), 0.3)
    masks = torch.zeros(2, 2, 8, 8, dtype=torch.bool)
    masks[:, 0, :2] = True
    masks[:, 1, 3:, 5:] = True
    m = region_metrics(s, masks)
    torch.testing.assert_close(m["lift"], torch.ones(2, 2, dtype=torch.float64))


def test_degenerate_maps_and_empty_regions_are_nan_not_zero():
    s = torch.zeros(2, 4, 4)
    s[1] = float("nan")
    masks = torch.ones(2, 1, 4, 4, dtype=torch.bool)
    m = region_metrics(s, masks)
    assert torch.isnan(m["mass"]).all() and torch.isnan(m["hit"]).all()
    empty = region_metrics(torch.ones(1, 4, 4), torch.zeros(1, 1, 4, 4, dtype=torch.bool))
    assert empty["mass"].item() == 0.0 and empty["area"].item() == 0.0 and math.isnan(empty["lift"].item())


def test_upsampling_keeps_maps_non_negative_and_sized():
    up = upsample_maps(torch.rand(3, 7, 7), (224, 160))
    assert up.shape == (3, 224, 160) and (up >= 0).all()


def test_reachable_mass_is_the_best_single_cell_and_bounds_every_map():
    """The highest mass a low-resolution map can put on a region after upsampling."""
    from auditors.measure.metrics import reachable_mass

    H, W, h, w = 32, 40, 4, 5
    masks = torch.zeros(2, 3, H, W, dtype=torch.bool)
    masks[0, 0, 3:6, 10:14] = True  # a small badge: unreachable with a 4x5 map
    masks[0, 1, :2] = True
    masks[1, 0, 20:30, 0:5] = True
    reach = reachable_mass(masks, (h, w))
    assert torch.isnan(reach[1, 1]) and torch.isnan(reach[0, 2]), "empty region: undefined"
    best = torch.zeros(2, 3, dtype=torch.float64)
    for k in range(h * w):  # brute force: every one-cell map
        s = torch.zeros(2, h, w)
        s.view(2, -1)[:, k] = 1.0
        best = torch.maximum(best, torch.nan_to_num(region_metrics(upsample_maps(s, (H, W)), masks)["mass"]))
    torch.testing.assert_close(torch.nan_to_num(reach), best, rtol=1e-6, atol=1e-9)
    gen = torch.Generator().manual_seed(0)
    for _ in range(100):  # no map, however peaked, exceeds the bound
        s = torch.rand(2, h, w, generator=gen) ** 12
        mass = torch.nan_to_num(region_metrics(upsample_maps(s, (H, W)), masks)["mass"])
        assert (mass <= torch.nan_to_num(reach) + 1e-9).all()
    assert reach[0, 0] < 0.5, "a 7-cell-wide map cannot concentrate on a 12-pixel badge"
    # At full resolution any region is reachable: all mass on one of its pixels.
    torch.testing.assert_close(reachable_mass(masks[:1, :2], (H, W)), torch.ones(1, 2, dtype=torch.float64))
