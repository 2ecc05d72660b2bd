import math

import numpy as np
import pandas as pd
import pytest

from xaibench.report.stats import bootstrap_ci, summarize


def _df(values_by_explainer, direction="higher", metric="m"):
    rows = []
    for e, values in values_by_explainer.items():
        for i, v in enumerate(values):
            rows.append(dict(dataset="d", model="mo", explainer=e, layer="l", threshold="0.1", perturbation="", metric=metric, image_id=f"i{i}", value=v, direction=direction))
    return pd.DataFrame(rows)


def test_bootstrap_ci_contains_the_mean_and_shrinks_with_n():
    rng = np.random.default_rng(0)
    small, big = rng.normal(1, 1, 10), rng.normal(1, 1, 400)
    lo_s, hi_s = bootstrap_ci(small)
    lo_b, hi_b = bootstrap_ci(big)
    assert lo_s < small.mean() < hi_s and lo_b < big.mean() < hi_b
    assert hi_b - lo_b < hi_s - lo_s
    assert bootstrap_ci(np.array([2.0, 2.0])) == (2.0, 2.0)
    assert all(math.isnan(x) for x in bootstrap_ci(np.array([np.nan])))


def test_summary_marks_the_best_and_tests_the_others_against_it():
    rng = np.random.default_rng(1)
    base = rng.normal(0, 1, 30)
    df = _df({"good": base + 2.0, "same": base + 1.99 + rng.normal(0, 0.001, 30), "bad": base})
    s = summarize(df).set_index("explainer")
    assert s.loc["good", "best"] and not s.loc["bad", "best"]
    assert s.loc["bad", "p_vs_best"] < 0.01  # a real difference
    assert s.loc["good", "n"] == 30 and math.isnan(s.loc["good", "p_vs_best"])
    low = summarize(_df({"good": base + 2.0, "bad": base}, direction="lower")).set_index("explainer")
    assert low.loc["bad", "best"]


def test_nan_values_are_left_out():
    s = summarize(_df({"e": [1.0, float("nan"), 3.0]}))
    assert s.loc[0, "n"] == 2 and s.loc[0, "mean"] == 2.0


class _F1:
    """Image-level F1 as a metric would declare it: 1 = TP, 0 = FP or FN, NaN = TN."""

    statistic = "f1"

    @staticmethod
    def aggregate(values):
        m = values.mean()
        return 2 * m / (1 + m)


def test_a_metric_with_its_own_statistic_is_summarised_by_it():
    from xaibench.report.stats import metric_aggregates

    # 6 TP, 2 FP, 2 FN, 5 TN -> F1 = 12 / 16 = 0.75 (the mean of the values would be 0.6)
    values = [1.0] * 6 + [0.0] * 4 + [np.nan] * 5
    df = _df({"a": values}, metric="f1_metric")
    plain = summarize(df)
    agg = metric_aggregates({"f1_metric": _F1, "other": object()})
    assert list(agg) == ["f1_metric"]
    s = summarize(df, aggregates=agg)
    assert abs(plain["mean"].iloc[0] - 0.6) < 1e-12 and plain["statistic"].iloc[0] == "mean"
    assert abs(s["mean"].iloc[0] - 0.75) < 1e-12 and s["statistic"].iloc[0] == "f1"
    assert s["ci_low"].iloc[0] < 0.75 < s["ci_high"].iloc[0] and s["ci_high"].iloc[0] <= 1
    assert s["n"].iloc[0] == 10
    from xaibench.report.leaderboard import rankings

    assert "| f1 [95% CI] |" in rankings(s) and "| mean [95% CI] |" in rankings(plain)


def _counted(images, explainer="a", fold="", seed=0):
    """Tidy rows of pooled_iou: ``images`` maps an image id to its (TP, FP, FN)."""
    from xaibench.runs.results import encode_counts

    rows = []
    for image_id, (tp, fp, fn) in images.items():
        value = tp / (tp + fp + fn) if tp + fp + fn else float("nan")
        rows.append(dict(dataset="d", model="mo", explainer=explainer, layer="l", threshold="0.5", perturbation="", metric="pooled_iou",
                         image_id=image_id, value=value, direction="higher", fold=fold, seed=seed, counts=encode_counts({"tp": tp, "fp": fp, "fn": fn})))
    return pd.DataFrame(rows)


def _pooled_aggregates():
    from xaibench.metrics.localization import PooledIoU
    from xaibench.report.stats import metric_aggregates

    return metric_aggregates({"pooled_iou": PooledIoU})


def test_a_pooled_metric_is_summarised_by_the_ratio_of_its_summed_counts():
    # A: IoU 1; B: 4 / 14. Mean of images 9/14, pooled 8 / 18.
    df = _counted({"A": (4, 0, 0), "B": (4, 2, 8)})
    s = summarize(df, aggregates=_pooled_aggregates()).iloc[0]
    assert s["mean"] == pytest.approx(8 / 18) and s["statistic"] == "pooled" and s["n"] == 2
    assert summarize(df)["mean"].iloc[0] == pytest.approx(9 / 14)  # without its pool: the mean of images
    # resampling the two images with their counts: {A, A} -> 1, {A, B} -> 8/18, {B, B} -> 2/7
    assert (s["ci_low"], s["ci_high"]) == pytest.approx((2 / 7, 1))


def test_an_image_without_a_value_still_adds_its_counts_and_an_empty_pool_is_nan():
    df = _counted({"A": (4, 0, 0), "B": (4, 2, 8), "C": (0, 0, 0), "D": (0, 3, 0)})
    s = summarize(df, aggregates=_pooled_aggregates()).iloc[0]
    assert s["mean"] == pytest.approx(8 / 21) and s["n"] == 4  # C has no IoU of its own, but is in the pool
    empty = summarize(_counted({"C": (0, 0, 0)}), aggregates=_pooled_aggregates()).iloc[0]
    assert math.isnan(empty["mean"]) and math.isnan(empty["ci_low"]) and empty["n"] == 1


def test_with_two_replicates_a_pooled_cell_is_the_mean_of_each_replicates_pool():
    from xaibench.report.stats import replicate_statistics

    one = _counted({"A": (4, 0, 0), "B": (4, 2, 8)}, fold="0")  # pooled 8/18
    two = _counted({"C": (3, 1, 0), "D": (0, 0, 4)}, fold="1")  # pooled 3/8 (mean of images 3/8 too: 0.75 and 0)
    df = pd.concat([one, two], ignore_index=True)
    agg = _pooled_aggregates()
    per = replicate_statistics(df, agg).set_index("fold")["value"]
    assert per["0"] == pytest.approx(8 / 18) and per["1"] == pytest.approx(3 / 8)
    s = summarize(df, aggregates=agg).iloc[0]
    assert s["mean"] == pytest.approx((8 / 18 + 3 / 8) / 2) and s["replicates"] == 2 and s["n"] == 4
    assert s["replicate_sd"] == pytest.approx(np.std([8 / 18, 3 / 8], ddof=1))
    # each slot pools a resample of one replicate's images: between D alone (0) and A alone (1)
    assert 0 <= s["ci_low"] < s["mean"] < s["ci_high"] <= 1


def test_pooled_bootstraps_resample_images_with_their_counts():
    from xaibench.metrics.localization import PooledIoU
    from xaibench.report.stats import Pooled, pooled_bootstrap_ci, pooled_two_level_ci

    pool = Pooled(PooledIoU.pool)
    names = ["fn", "fp", "tp"]
    a, b = np.array([[0.0, 0, 4]]), np.array([[8.0, 2, 4]])
    assert pooled_bootstrap_ci(names, a, pool) == (1.0, 1.0)  # one image: every resample is itself
    assert pooled_bootstrap_ci(names, np.zeros((0, 3)), pool) == pytest.approx((np.nan, np.nan), nan_ok=True)
    # two replicates of one image each: each resample is the mean of two draws of {1, 2/7}
    assert pooled_two_level_ci(names, [a, b], pool, seed=0) == pytest.approx((2 / 7, 1))
    lo, hi = pooled_two_level_ci(names, [np.concatenate([a, b])] * 2, pool, seed=0)
    assert 2 / 7 <= lo < 8 / 18 < hi <= 1


def test_paired_tests_of_a_pooled_metric_pair_the_per_image_values():
    from xaibench.report.stats import paired_p, values_by_cell

    rng = np.random.default_rng(0)
    images = {f"i{k}": (int(rng.integers(1, 9)), int(rng.integers(0, 5)), int(rng.integers(0, 5))) for k in range(12)}
    worse = {k: (tp, fp + 2, fn) for k, (tp, fp, fn) in images.items()}
    df = pd.concat([_counted(images, "good"), _counted(worse, "bad")], ignore_index=True)
    s = summarize(df, aggregates=_pooled_aggregates()).set_index("explainer")
    assert s.loc["good", "best"] and s.loc["good", "statistic"] == "pooled"
    cells = values_by_cell(df)
    key = lambda e: ("d", "mo", e, "l", "0.5", "", "pooled_iou")  # noqa: E731
    assert s.loc["bad", "p_vs_best"] == paired_p(cells[key("bad")], cells[key("good")]) < 0.01
