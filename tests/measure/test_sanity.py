"""The model-randomisation sanity check's parts: rank correlation and the randomised copy."""

import numpy as np
import torch

from auditors.measure.sanity import randomized_copy, rank_correlation

from tests.conftest import build_tiny_cnn


def test_rank_correlation_and_randomized_copy():
    a = torch.rand(3, 7, 7)
    assert np.allclose(rank_correlation(a, a * 2 + 1), 1.0)
    assert np.allclose(rank_correlation(a, -a), -1.0)
    assert np.isnan(rank_correlation(torch.ones(1, 7, 7), a[:1])[0])
    model = build_tiny_cnn()
    rand, names = randomized_copy(model, "features")
    assert names == ["features", "fc"]
    assert not torch.equal(rand.fc.weight, model.fc.weight) and torch.equal(model.fc.weight, build_tiny_cnn().fc.weight)
