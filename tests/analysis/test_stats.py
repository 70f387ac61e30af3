import numpy as np

from auditors.analysis.stats import bootstrap_ci, mean_ci, ratio_ci


def test_mean_interval_covers_the_mean_and_narrows_with_n():
    rng = np.random.default_rng(1)
    small = rng.normal(0.3, 0.1, 30)
    big = rng.normal(0.3, 0.1, 3000)
    lo_s, hi_s = mean_ci(small)
    lo_b, hi_b = mean_ci(big)
    assert lo_s < small.mean() < hi_s and lo_b < big.mean() < hi_b
    assert (hi_b - lo_b) < (hi_s - lo_s) / 5
    # normal theory: half-width ~ 1.96 * sd / sqrt(n)
    assert abs((hi_b - lo_b) / 2 - 1.96 * big.std() / np.sqrt(3000)) < 0.002


def test_intervals_are_seeded_and_drop_nan_rows():
    x = np.random.default_rng(0).random(50)
    assert mean_ci(x, seed=3) == mean_ci(x, seed=3)
    assert mean_ci(x, seed=3) != mean_ci(x, seed=4)
    with_nan = np.append(x, np.nan)
    assert mean_ci(with_nan, seed=3) == mean_ci(x, seed=3)
    assert mean_ci(np.array([0.5])) is None and mean_ci(np.array([np.nan, 1.0])) is None


def test_ratio_interval_resamples_pairs():
    mass = np.array([0.5, 0.6, 0.4, 0.55, 0.45] * 20)
    area = mass / 3.0  # every image has lift exactly 3
    lo, hi = ratio_ci(mass, area)
    assert abs(lo - 3.0) < 1e-9 and abs(hi - 3.0) < 1e-9


def test_blocked_resampling_matches_the_requested_count():
    calls = []

    def stat(a):
        calls.append(a.shape[0])
        return a.mean(axis=1)

    bootstrap_ci([np.arange(2_000_000, dtype=float) % 7], stat, n_boot=10)
    assert sum(calls) == 10 and max(calls) < 10, "large inputs are resampled in blocks"
