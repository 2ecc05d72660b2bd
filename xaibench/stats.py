"""Aggregation per cell: mean, std, n and a 95% bootstrap CI (scipy.stats.bootstrap), and the
paired Wilcoxon signed-rank test of each method against the best one in its column.

A metric whose dataset statistic is not a mean of per-image values (an F1 over images, say)
declares ``aggregate(values) -> float`` (a 1-D array of the non-NaN per-image values); the
cell's ``mean`` column then holds that statistic, its CI is bootstrapped with it, and the
``statistic`` column names it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import pandas as pd
from scipy import stats

Aggregate = Callable[[np.ndarray], float]

CELL = ["dataset", "model", "explainer", "layer", "threshold", "perturbation", "metric"]


def bootstrap_ci(values: np.ndarray, seed: int = 0, n_resamples: int = 2000, statistic: Aggregate | None = None) -> tuple[float, float]:
    """95% percentile bootstrap CI of the mean (or of ``statistic``) of the non-NaN ``values``."""
    values = values[~np.isnan(values)]
    if len(values) == 0:
        return (np.nan, np.nan)
    if len(values) < 2 or np.ptp(values) == 0:
        if np.ptp(values) != 0:
            return (np.nan, np.nan)
        v = float(statistic(values)) if statistic else float(values[0])
        return (v, v)
    res = stats.bootstrap(
        (values,), statistic or np.mean, confidence_level=0.95, n_resamples=n_resamples, method="percentile",
        random_state=np.random.default_rng(seed), vectorized=statistic is None,
    )
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def summarize(df: pd.DataFrame, seed: int = 0, aggregates: Mapping[str, Aggregate] | None = None) -> pd.DataFrame:
    """One row per cell: mean (or the metric's own statistic, see the module docstring), std,
    ci_low, ci_high, n (non-NaN images), direction, statistic."""
    aggregates = aggregates or {}
    rows = []
    for key, g in df.groupby(CELL, sort=True, dropna=False):
        cell = dict(zip(CELL, key))
        agg = aggregates.get(cell["metric"])
        v = g["value"].to_numpy(dtype=float)
        ok = v[~np.isnan(v)]
        lo, hi = bootstrap_ci(v, seed, statistic=agg)
        value = (float(agg(ok)) if agg else float(ok.mean())) if len(ok) else np.nan
        rows.append(
            dict(
                cell,
                mean=value,
                std=float(ok.std(ddof=1)) if len(ok) > 1 else np.nan,
                ci_low=lo,
                ci_high=hi,
                n=int(len(ok)),
                direction=g["direction"].iloc[0],
                statistic=getattr(agg, "__name__", "aggregate") if agg else "mean",
            )
        )
    out = pd.DataFrame(rows, columns=CELL + ["mean", "std", "ci_low", "ci_high", "n", "direction", "statistic"])
    return add_paired_tests(df, out)


def metric_aggregates(metrics: Mapping[str, object]) -> dict[str, Aggregate]:
    """``{name: metric.aggregate}`` for the metrics (instances or classes) that declare one
    (a ``staticmethod``); the summary's ``statistic`` column shows the metric's ``statistic``
    attribute (default ``"aggregate"``)."""
    out: dict[str, Aggregate] = {}
    for name, m in metrics.items():
        fn = getattr(m, "aggregate", None)
        if callable(fn):

            def named(values: np.ndarray, fn=fn) -> float:
                return fn(values)

            named.__name__ = str(getattr(m, "statistic", "aggregate"))
            out[name] = named
    return out


def paired_p(a: pd.Series, b: pd.Series) -> float:
    """Two-sided Wilcoxon signed-rank p-value of per-image values ``a`` against ``b`` (both
    indexed by image id), on the images where both have a value: 1.0 when every difference is
    0, NaN with fewer than 2 pairs."""
    pair = pd.concat([a.rename("a"), b.rename("b")], axis=1, join="inner").dropna()
    if len(pair) < 2:
        return np.nan
    if np.allclose(pair["a"] - pair["b"], 0):
        return 1.0
    return float(stats.wilcoxon(pair["a"], pair["b"]).pvalue)


def values_by_cell(df: pd.DataFrame) -> dict[tuple, pd.Series]:
    """Each cell's per-image values, indexed by image id, keyed by the tuple of its ``CELL`` columns."""
    return {
        key: pd.Series(g["value"].to_numpy(dtype=float), index=g["image_id"].to_numpy()).groupby(level=0).first()
        for key, g in df.groupby(CELL, sort=False, dropna=False)
    }


def add_paired_tests(df: pd.DataFrame, summary: pd.DataFrame) -> pd.DataFrame:
    """Columns ``best`` (this cell is the best explainer of its column) and ``p_vs_best``: the
    Wilcoxon signed-rank p-value (:func:`paired_p`) of this explainer against the best one on
    the same images, within each (dataset, model, layer, threshold, perturbation, metric) column."""
    summary = summary.copy()
    summary["best"] = False
    summary["p_vs_best"] = np.nan
    column = ["dataset", "model", "layer", "threshold", "perturbation", "metric"]
    values = values_by_cell(df)
    for _, idx in summary.groupby(column, dropna=False).groups.items():
        block = summary.loc[idx].dropna(subset=["mean"])
        if block.empty:
            continue
        higher = block["direction"].iloc[0] == "higher"
        best = block["mean"].idxmax() if higher else block["mean"].idxmin()
        summary.loc[best, "best"] = True
        b = values[tuple(summary.loc[best, CELL])]
        for i in block.index:
            if i != best:
                summary.loc[i, "p_vs_best"] = paired_p(values[tuple(summary.loc[i, CELL])], b)
    return summary
