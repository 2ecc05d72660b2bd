"""Choosing from data without scoring on it: a method's best threshold, chosen on other images.

Picking the best of several thresholds and reporting its mean on the same images is
optimistic (the maximum of noisy means). Here the choice is cross-fitted: the images are split
into groups -- the folds when the run has folds, else two halves drawn with the benchmark seed
-- and for each group the threshold is chosen on the *other* groups' rows and reported on the
group's own. An image's rows in every replicate (training seed) stay in its group, so no value
of a reported image took part in choosing its threshold.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

import numpy as np
import pandas as pd

from xaibench.config.vocabulary import best_label
from xaibench.report.stats import estimate, statistics_by, with_replicates

SELECTED = ["model", "explainer", "layer", "metric", "perturbation"]


def selection_groups(results: pd.DataFrame, seed: int = 0) -> tuple[dict[str, str], str]:
    """image id -> group, and a sentence that says how the groups were made."""
    results = with_replicates(results)
    folds = results[["image_id", "fold"]].drop_duplicates()
    if (folds["fold"] != "").all() and not folds["image_id"].duplicated().any():
        return dict(zip(folds["image_id"], folds["fold"])), "chosen on the other folds' held-out images, reported on each fold's own"
    ids = sorted(results["image_id"].unique())
    order = np.random.default_rng(seed).permutation(len(ids))
    groups = {ids[j]: "ab"[rank % 2] for rank, j in enumerate(order)}
    return groups, "chosen on one half of the images and reported on the other, both ways (halves drawn with the benchmark seed)"


def cross_fit(rows: pd.DataFrame, groups: pd.Series, setting: str, statistic, direction: str) -> tuple[pd.DataFrame, Counter]:
    """For each group of ``rows`` (``groups``: a label per row, NaN for none; labels in sorted
    order), the value of column ``setting`` whose statistic is best on the other rows, and the
    group's own rows at it: those rows (group after group, each in table order) and how many
    groups chose each setting."""
    codes, names = pd.factorize(groups, sort=True)
    settings = rows[setting].to_numpy()
    chosen, held = Counter(), []
    for j in range(len(names)):
        scores = statistics_by(rows, setting, statistic, where=codes != j).dropna()  # the other groups' rows, and those of none
        if scores.empty:
            continue
        pick = best_label(scores, direction)
        chosen[pick] += 1
        held.append(np.flatnonzero((codes == j) & (settings == pick)))
    return (rows.iloc[np.concatenate(held)] if held else rows.iloc[:0]), chosen


def held_out_best_thresholds(results: pd.DataFrame, seed: int = 0, min_thresholds: int = 3, aggregates: Mapping | None = None) -> pd.DataFrame:
    """Per method (model, explainer, layer, metric, perturbation) with at least ``min_thresholds``
    numeric thresholds: ``chosen`` (threshold -> groups that chose it), ``mean`` / ``ci_low`` /
    ``ci_high`` of the held-out values, ``n``, and the in-sample optimum (``in_sample_threshold``,
    ``in_sample_mean``: best threshold and its mean on all images, the optimistic figure).
    ``aggregates``: the metrics' own statistics (a pooled IoU is chosen and reported pooled, as
    its ranking reports it, not as a mean of per-image values)."""
    aggregates = aggregates or {}
    df = with_replicates(results)
    df = df[pd.to_numeric(df["threshold"], errors="coerce").notna()]
    if df.empty:
        return pd.DataFrame(columns=SELECTED + ["chosen", "mean", "ci_low", "ci_high", "n", "in_sample_threshold", "in_sample_mean", "direction"])
    groups, _ = selection_groups(results, seed)
    df = df.assign(group=df["image_id"].map(groups))
    rows = []
    for key, g in df.groupby(SELECTED, sort=True, dropna=False):
        if g["threshold"].nunique() < min_thresholds:
            continue
        direction = g["direction"].iloc[0]
        agg = aggregates.get(key[SELECTED.index("metric")])
        held_df, chosen = cross_fit(g, g["group"], "threshold", agg, direction)
        if not chosen:
            continue
        mean, lo, hi, _ = estimate(held_df, seed, agg)
        n = int(held_df["value"].notna().sum())
        overall = statistics_by(g, "threshold", agg).dropna()
        best = best_label(overall, direction)
        rows.append(dict(zip(SELECTED, key), chosen=dict(chosen), mean=mean, ci_low=lo, ci_high=hi, n=n,
                         in_sample_threshold=best, in_sample_mean=float(overall[best]), direction=g["direction"].iloc[0]))
    return pd.DataFrame(rows, columns=SELECTED + ["chosen", "mean", "ci_low", "ci_high", "n", "in_sample_threshold", "in_sample_mean", "direction"])
