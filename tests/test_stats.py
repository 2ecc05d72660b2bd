import math

import numpy as np
import pandas as pd

from xaibench.stats import bootstrap_ci, summarize


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
    from xaibench.stats import metric_aggregates

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
    from xaibench.leaderboard import rankings

    assert "| f1 [95% CI] |" in rankings(s) and "| mean [95% CI] |" in rankings(plain)
