"""Property-based tests (hypothesis) of the region metrics: the README definitions on random maps and masks."""

from __future__ import annotations

import math

import numpy as np
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from auditors.measure.metrics import region_metrics

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --------------------------------------------------------------------------- metrics

sizes = st.tuples(st.integers(2, 12), st.integers(2, 12))


@st.composite
def map_and_labels(draw, n_regions=st.integers(1, 4)):
    """A non-negative finite map with positive sum and a partition of its pixels into R labels."""
    h, w = draw(sizes)
    r = draw(n_regions)
    # zeros (ReLU) or normal floats: subnormal values underflow to 0 when scaled, a float limit, not a metric property
    values = draw(arrays(np.float64, (h, w), elements=st.one_of(st.just(0.0), st.floats(1e-100, 1e6))))
    assume(values.sum() > 0)
    labels = draw(arrays(np.int64, (h, w), elements=st.integers(0, r - 1)))
    return values, labels, r


def _metrics(values: np.ndarray, masks: np.ndarray, tolerance: int = 0) -> dict[str, np.ndarray]:
    out = region_metrics(torch.from_numpy(values)[None], torch.from_numpy(masks)[None], tolerance)
    return {k: v[0].numpy() for k, v in out.items()}


@FAST
@given(map_and_labels())
def test_masses_of_a_partition_are_in_0_1_and_sum_to_1(case):
    values, labels, r = case
    masks = np.stack([labels == i for i in range(r)])
    m = _metrics(values, masks)
    assert np.all((m["mass"] >= 0) & (m["mass"] <= 1 + 1e-12))
    assert math.isclose(float(m["mass"].sum()), 1.0, rel_tol=0, abs_tol=1e-9)
    assert math.isclose(float(m["area"].sum()), 1.0, abs_tol=1e-12)
    assert m["hit"].sum() == 1.0, "the argmax pixel is in exactly one region of a partition"
    np.testing.assert_allclose(m["area"], [(labels == i).mean() for i in range(r)])


@FAST
@given(map_and_labels(), st.floats(1e-6, 1e6))
def test_lift_and_mass_are_invariant_to_scaling_the_map(case, scale):
    values, labels, r = case
    masks = np.stack([labels == i for i in range(r)])
    a, b = _metrics(values, masks), _metrics(values * scale, masks)
    np.testing.assert_allclose(b["mass"], a["mass"], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(b["lift"], a["lift"], rtol=1e-9, equal_nan=True)
    np.testing.assert_array_equal(b["hit"], a["hit"])


@FAST
@given(map_and_labels(n_regions=st.just(1)))
def test_an_empty_mask_has_zero_mass_zero_area_and_undefined_lift(case):
    values, _, _ = case
    m = _metrics(values, np.zeros((1, *values.shape), bool))
    assert m["mass"][0] == 0 and m["area"][0] == 0 and m["hit"][0] == 0
    assert math.isnan(m["lift"][0])


@FAST
@given(sizes, st.sampled_from([0.0, float("nan"), float("inf")]), st.data())
def test_zero_and_non_finite_maps_have_undefined_mass_and_hit_never_zero(hw, bad, data):
    values = data.draw(arrays(np.float64, hw, elements=st.floats(0, 10)))
    if bad == 0.0:
        values = np.zeros(hw)
    else:
        values[data.draw(st.integers(0, hw[0] - 1)), data.draw(st.integers(0, hw[1] - 1))] = bad
    mask = data.draw(arrays(np.bool_, (1, *hw)))
    m = _metrics(values, mask)
    assert math.isnan(m["mass"][0]) and math.isnan(m["hit"][0]), "a degenerate map is never '0 mass on the region'"
    assert math.isclose(m["area"][0], mask.mean())
