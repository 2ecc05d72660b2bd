"""Replicate statistics: the two-level bootstrap, Kendall's W, the ranking-stability tables."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from xaibench.report.stability import kendall_w, mean_pairwise_tau, ranking_stability
from xaibench.report.stats import replicate_statistics, summarize, two_level_bootstrap_ci


def test_two_level_ci_matches_the_hand_computed_distribution():
    # replicates A = [0, 1], B = [10, 11]. Drawing replicates (AA 1/4, AB 1/2, BB 1/4) then images,
    # the statistic is 0 with probability 1/4 * 1/16 = 1.6% and <= 0.25 with 1/4 * 5/16 = 7.8%,
    # so the 2.5% quantile is 0.25; by symmetry the 97.5% one is 10.75
    lo, hi = two_level_bootstrap_ci([np.array([0.0, 1.0]), np.array([10.0, 11.0])], seed=0, n_resamples=4000)
    assert (lo, hi) == (0.25, 10.75)
    # no spread within replicates: the mean of 3 draws from {1, 3, 5}, extremes 1/27 = 3.7% each
    assert two_level_bootstrap_ci([np.full(4, 1.0), np.full(4, 3.0), np.full(4, 5.0)], seed=1) == (1.0, 5.0)


def test_two_level_ci_is_wider_than_the_image_bootstrap_when_replicates_disagree():
    rng = np.random.default_rng(0)
    groups = [rng.normal(mu, 0.1, 20) for mu in (0.0, 0.5, 1.0)]
    lo2, hi2 = two_level_bootstrap_ci(groups, seed=0)
    pooled = np.concatenate(groups)
    res = stats.bootstrap((pooled,), np.mean, method="percentile", random_state=np.random.default_rng(0))
    assert hi2 - lo2 > 3 * (res.confidence_interval.high - res.confidence_interval.low)
    assert lo2 < 0.5 < hi2
    # one replicate: the ordinary bootstrap, NaN left out
    one = two_level_bootstrap_ci([np.array([1.0, 2.0, np.nan, 4.0])], seed=0)
    assert one[0] < 7 / 3 < one[1]


def test_kendall_w_is_one_for_identical_rankings_and_matches_the_hand_value():
    same = np.array([[1, 2, 3, 4], [10, 20, 30, 40], [0.1, 0.2, 0.3, 0.4]])
    assert kendall_w(same) == pytest.approx(1.0)
    # rank sums 6, 7, 8, 9 (mean 7.5): S = 5, W = 12 S / (m^2 (n^3 - n)) = 60 / 540
    mixed = np.array([[1, 2, 3, 4], [1, 2, 3, 4], [4, 3, 2, 1]])
    assert kendall_w(mixed) == pytest.approx(60 / 540)
    assert math.isnan(kendall_w(np.array([[1, 2, 3]])))


def test_kendall_w_matches_scipys_friedman_statistic_with_ties():
    rng = np.random.default_rng(4)
    scores = rng.integers(0, 4, size=(5, 7)).astype(float)  # many ties
    chi2 = stats.friedmanchisquare(*scores.T).statistic
    m, n = scores.shape
    assert kendall_w(scores) == pytest.approx(chi2 / (m * (n - 1)))


def test_mean_pairwise_tau():
    assert mean_pairwise_tau(np.array([[1, 2, 3], [1, 2, 3], [3, 2, 1]])) == pytest.approx((1 - 1 - 1) / 3)


def _table(values, direction="higher"):
    """values: {explainer: [value in replicate 0, 1, ...]}, two images per replicate (v - 0.1, v + 0.1)."""
    rows = []
    for e, per_rep in values.items():
        for seed, v in enumerate(per_rep):
            for i, d in enumerate((-0.1, 0.1)):
                rows.append(dict(dataset="d", model="m", explainer=e, layer="l", threshold="", perturbation="", metric="x",
                                 image_id=f"i{i}", value=v + d, direction=direction, fold="", seed=seed))
    return pd.DataFrame(rows)


def test_ranking_stability_counts_top1_and_the_pairs_that_swap():
    df = _table({"a": [3.0, 3.0, 1.0], "b": [2.0, 2.5, 2.0], "c": [0.0, 0.0, 0.5]})
    (s,) = ranking_stability(replicate_statistics(df))
    key = lambda e: ("m", e, "l", "")  # noqa: E731
    assert s.replicates == 3 and s.entries == 3
    assert s.top1 == {key("a"): 2, key("b"): 1}
    assert s.swaps == [(key("a"), key("b"), 1)]  # a above b overall (7/3 > 6.5/3), b wins replicate 2
    scores = np.array([[3, 2, 0], [3, 2.5, 0], [1, 2, 0.5]])
    assert s.w == pytest.approx(kendall_w(scores))
    lower = ranking_stability(replicate_statistics(_table({"a": [3.0, 3.0, 1.0], "b": [2.0, 2.5, 2.0]}, "lower")))[0]
    assert lower.top1 == {key("b"): 2, key("a"): 1}


def test_the_summary_of_replicates_gives_their_mean_spread_and_stability():
    df = _table({"a": [3.0, 3.0, 1.0], "b": [2.0, 2.5, 2.0]})
    s = summarize(df).set_index("explainer")
    assert s.loc["a", "mean"] == pytest.approx(7 / 3) and s.loc["a", "replicates"] == 3
    assert s.loc["a", "replicate_sd"] == pytest.approx(np.std([3, 3, 1], ddof=1))
    assert s.loc["a", "n"] == 6
    assert s.loc["a", "top1_share"] == pytest.approx(2 / 3) and s.loc["b", "top1_share"] == pytest.approx(1 / 3)
    assert s.loc["a", "ranking_w"] == pytest.approx(kendall_w(np.array([[3, 2], [3, 2.5], [1, 2]])))
    assert s.loc["a", "ci_low"] < 1.2 and s.loc["a", "ci_high"] > 2.9  # all three draws of replicate 2: 1/27 > 2.5%
    one = summarize(df[df["seed"] == 0]).set_index("explainer")
    assert one.loc["a", "replicates"] == 1 and math.isnan(one.loc["a", "replicate_sd"]) and math.isnan(one.loc["a", "top1_share"])
