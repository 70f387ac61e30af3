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
