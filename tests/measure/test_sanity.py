"""The model-randomisation sanity check's parts: rank correlation and the randomised copy."""

import numpy as np
import torch

from auditors.measure.sanity import randomization_check, randomized_copy, rank_correlation

from tests.conftest import TinyCNN, build_tiny_cnn


def test_rank_correlation_and_randomized_copy():
    a = torch.rand(3, 7, 7)
    assert np.allclose(rank_correlation(a, a * 2 + 1), 1.0)
    assert np.allclose(rank_correlation(a, -a), -1.0)
    assert np.isnan(rank_correlation(torch.ones(1, 7, 7), a[:1])[0])
    model = build_tiny_cnn()
    rand, names = randomized_copy(model, "features")
    assert names == ["features", "fc"]
    assert not torch.equal(rand.fc.weight, model.fc.weight) and torch.equal(model.fc.weight, build_tiny_cnn().fc.weight)


def test_rank_correlation_of_unrelated_sparse_maps_is_zero():
    """ReLU'd maps: most pixels exactly 0. Unrelated maps must correlate ~0; breaking ties by
    pixel index (the old ranking) makes them correlate because both follow the scan order."""
    gen = torch.Generator().manual_seed(0)
    a = torch.relu(torch.randn(400, 14, 14, generator=gen) - 0.8)  # ~79% zeros
    b = torch.relu(torch.randn(400, 14, 14, generator=gen) - 0.8)
    assert (a == 0).float().mean() > 0.7
    rho = rank_correlation(a, b)
    assert abs(float(np.nanmean(rho))) < 0.01

    def index_ranks(x):  # the tie-breaking the issue measured
        return x.flatten(1).double().argsort(1).argsort(1).double()

    ra, rb = index_ranks(a), index_ranks(b)
    ra, rb = ra - ra.mean(1, keepdim=True), rb - rb.mean(1, keepdim=True)
    old = ((ra * rb).sum(1) / (ra.norm(dim=1) * rb.norm(dim=1))).mean().item()
    assert old > 0.3, "the case is built so that index tie-breaking inflates the correlation"
    # Ties are averaged exactly like scipy's Spearman.
    from scipy.stats import spearmanr

    assert np.isclose(rho[0], spearmanr(a[0].flatten().numpy(), b[0].flatten().numpy()).statistic)


def test_sanity_check_uses_the_audits_engine_options(one_torch_thread):
    from auditors.cam import CamEngine

    torch.manual_seed(0)
    engine = CamEngine(TinyCNN(3).eval(), target_layer="features", input_size=(40, 48), amp="off", channels_last=True)
    x = torch.rand(3, 3, 40, 48, generator=torch.Generator().manual_seed(1))
    out = randomization_check(engine, x, 0.8)
    assert out["preprocessing"] == {"input_size": [40, 48], "amp": "off", "channels_last": True}
    assert out["rank_correlation_mean"] is not None
