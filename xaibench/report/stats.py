"""Aggregation per cell: mean, std, n and a 95% bootstrap CI (scipy.stats.bootstrap), and the
paired Wilcoxon signed-rank test of each method against the best one in its column.

With replicates (``fold`` / ``seed`` columns, :mod:`xaibench.runs.replicates`), a cell's value is
the mean over replicates of each replicate's statistic, its CI a two-level bootstrap
(resample replicates, then images within each), and ``replicate_sd`` the spread across them.

A metric whose dataset statistic is not a mean of per-image values (an F1 over images, say)
declares ``aggregate(values) -> float`` (a 1-D array of the non-NaN per-image values); the
cell's ``mean`` column then holds that statistic, its CI is bootstrapped with it, and the
``statistic`` column names it. A pooled metric (a ratio of sums, such as the IoU of all pixels)
declares ``pool`` instead (:class:`Pooled`): its statistic is ``pool`` of its per-image counts
summed over the images (``counts`` column), and its bootstraps resample images with their counts.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping

import numpy as np
import pandas as pd
from scipy import stats

from xaibench.config.vocabulary import best_label
from xaibench.report.method_tests import holm
from xaibench.report.stability import add_stability
from xaibench.runs.results import CELL_COLUMNS, COUNTS, REPLICATE_COLUMNS, decode_counts

Aggregate = Callable[[np.ndarray], float]

CELL = CELL_COLUMNS
REPLICATE = REPLICATE_COLUMNS


def with_replicates(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with the replicate columns (fold "" and seed 0 where a table has none: one replicate)."""
    missing = {k: v for k, v in (("fold", ""), ("seed", 0)) if k not in df}
    return df.assign(**missing) if missing else df


class Pooled:
    """A pooled dataset statistic: ``pool`` (dict of count name -> float array, elementwise) of
    per-image counts summed over images. Called on a matrix [..., images, names] of counts it
    returns the statistic [...] of each stack of images (NaN where ``pool`` is undefined). With
    ``images`` (a metric's ``pools_images``), ``pool`` gets the per-image counts themselves,
    arrays [..., images], and reduces over the last axis (an AUROC of image scores and labels)."""

    __name__ = "pooled"

    def __init__(self, pool: Callable[[dict[str, np.ndarray]], np.ndarray], images: bool = False):
        self.pool, self.images = pool, images

    def __call__(self, names: list[str], counts: np.ndarray) -> np.ndarray:
        arrays = counts if self.images else counts.sum(axis=-2)  # [..., images, names] or [..., names]
        shape = counts.shape[:-2]
        if not names:
            return np.full(shape, np.nan)
        with np.errstate(divide="ignore", invalid="ignore"):
            out = np.asarray(self.pool({k: arrays[..., j] for j, k in enumerate(names)}), dtype=float)
        return np.broadcast_to(out, shape)

    def resampled(self, names: list[str], counts: np.ndarray, rng: np.random.Generator, m: int) -> np.ndarray:
        """The statistic of ``m`` resamples (images drawn with replacement with their counts) [m]."""
        n = len(counts)
        step = max(1, 4_000_000 // max(1, counts.size))  # resamples per chunk: bounded memory
        return np.concatenate([self(names, counts[rng.integers(0, n, size=(min(step, m - s), n))]) for s in range(0, m, step)])


def counts_of(rows: pd.DataFrame) -> tuple[list[str], np.ndarray]:
    """The count names and [images with counts, names] matrix of some rows (none without the column)."""
    return decode_counts(rows[COUNTS]) if COUNTS in rows else ([], np.zeros((0, 0)))


def pooled_bootstrap_ci(names: list[str], counts: np.ndarray, statistic: Pooled, seed: int = 0, n_resamples: int = 2000) -> tuple[float, float]:
    """95% percentile bootstrap CI of a pooled statistic: images resampled with their counts
    (resamples where the statistic is undefined are left out)."""
    if not len(counts):
        return (np.nan, np.nan)
    dist = statistic.resampled(names, counts, np.random.default_rng(seed), n_resamples)
    return _percentiles(dist)


def _percentiles(dist: np.ndarray) -> tuple[float, float]:
    dist = dist[~np.isnan(dist)]
    return (float(np.percentile(dist, 2.5)), float(np.percentile(dist, 97.5))) if len(dist) else (np.nan, np.nan)


def two_level_bootstrap_ci(
    groups: list[np.ndarray], seed: int = 0, n_resamples: int = 2000, statistic: Aggregate | None = None
) -> tuple[float, float]:
    """95% percentile CI of the mean over replicates of a per-replicate statistic (the mean of
    its non-NaN values, or ``statistic``): each resample draws the replicates with replacement,
    then each drawn replicate's values with replacement. One replicate: :func:`bootstrap_ci`."""
    groups = [g[~np.isnan(g)] for g in groups]
    groups = [g for g in groups if len(g)]
    if len(groups) < 2:
        return bootstrap_ci(groups[0], seed, n_resamples, statistic) if groups else (np.nan, np.nan)

    def draw(g: np.ndarray, rng: np.random.Generator, m: int) -> np.ndarray:
        draws = g[rng.integers(0, len(g), size=(m, len(g)))]
        return draws.mean(axis=1) if statistic is None else [statistic(d) for d in draws]

    dist = _slot_statistics(groups, seed, n_resamples, draw).mean(axis=1)
    return float(np.percentile(dist, 2.5)), float(np.percentile(dist, 97.5))


def pooled_two_level_ci(names: list[str], groups: list[np.ndarray], statistic: Pooled, seed: int = 0, n_resamples: int = 2000) -> tuple[float, float]:
    """:func:`two_level_bootstrap_ci` of a pooled statistic: ``groups`` are the replicates' count
    matrices [images, names]; each drawn replicate's images are resampled with their counts and
    pooled (a slot where that is undefined is left out of its resample's mean)."""
    groups = [g for g in groups if len(g)]
    if len(groups) < 2:
        return pooled_bootstrap_ci(names, groups[0], statistic, seed, n_resamples) if groups else (np.nan, np.nan)
    slots = _slot_statistics(groups, seed, n_resamples, lambda g, rng, m: statistic.resampled(names, g, rng, m))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a resample with every slot undefined: NaN, left out
        return _percentiles(np.nanmean(slots, axis=1))


def _slot_statistics(groups: list, seed: int, n_resamples: int, draw: Callable) -> np.ndarray:
    """[n_resamples, R]: each resample draws R of the R replicates with replacement (the slots),
    then ``draw(group, rng, m)`` gives the statistic of m resamples of a drawn replicate's images."""
    rng = np.random.default_rng(seed)
    r = len(groups)
    picks = rng.integers(0, r, size=(n_resamples, r))
    slot_stats = np.empty((n_resamples, r))
    for j in range(r):
        for k, g in enumerate(groups):
            rows = np.flatnonzero(picks[:, j] == k)
            if len(rows):
                slot_stats[rows, j] = draw(g, rng, len(rows))
    return slot_stats


def statistic_of(rows: pd.DataFrame, statistic: Aggregate | Pooled | None = None) -> float:
    """The statistic of some rows: the mean of their non-NaN values, a metric's ``aggregate`` of
    them, or its pool of their counts; NaN when they have none."""
    if isinstance(statistic, Pooled):
        names, counts = counts_of(rows)
        return float(statistic(names, counts)) if len(counts) else np.nan
    return _statistic(rows["value"].to_numpy(dtype=float), statistic)


def _statistic(values: np.ndarray, statistic: Aggregate | None) -> float:
    ok = values[~np.isnan(values)]
    return (float(statistic(ok)) if statistic else float(ok.mean())) if len(ok) else np.nan


def statistics_by(rows: pd.DataFrame, by: str, statistic: Aggregate | Pooled | None = None, where: np.ndarray | None = None) -> pd.Series:
    """:func:`statistic_of` the rows of each value of column ``by`` (values sorted, NaN left out,
    as ``groupby(by, sort=True)`` iterates them), without making a frame per group where the
    statistic needs only the values; ``where``: a mask of the rows to use (all by default)."""
    among = np.arange(len(rows)) if where is None else np.flatnonzero(where)
    codes, labels = pd.factorize(rows[by].to_numpy()[among], sort=True)  # NaN: -1, in no part
    parts = [(labels[j], among[pos]) for j, pos in enumerate(_positions(codes, len(labels)))]
    if isinstance(statistic, Pooled):
        return pd.Series({k: statistic_of(rows.iloc[pos], statistic) for k, pos in parts}, dtype=float)
    values = rows["value"].to_numpy(dtype=float)
    return pd.Series({k: _statistic(values[pos], statistic) for k, pos in parts}, dtype=float)


def replicate_statistics(df: pd.DataFrame, aggregates: Mapping[str, Aggregate | Pooled] | None = None) -> pd.DataFrame:
    """One row per cell x replicate: the replicate's statistic (``value``: the mean of its images,
    or the metric's own aggregate) and ``direction``. The input of the ranking-stability tables."""
    aggregates = aggregates or {}
    df = with_replicates(df)
    values, direction = df["value"].to_numpy(dtype=float), df["direction"].to_numpy()
    rows = []
    for key, pos in _groups(df, CELL + REPLICATE):
        agg = aggregates.get(key[CELL.index("metric")])
        value = statistic_of(df.iloc[pos], agg) if isinstance(agg, Pooled) else _statistic(values[pos], agg)
        rows.append(dict(zip(CELL + REPLICATE, key), value=value, direction=direction[pos[0]]))
    return pd.DataFrame(rows, columns=CELL + REPLICATE + ["value", "direction"])


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


def _one_replicate(rows: pd.DataFrame) -> bool:
    """Every row is of one replicate (a run without replicates); False where a key is NaN."""
    keys = [rows[c].to_numpy() for c in REPLICATE]
    return bool(len(rows)) and all(not pd.isna(k[0]) and (k == k[0]).all() for k in keys)


def _replicate_values(rows: pd.DataFrame) -> list[np.ndarray]:
    """The ``value`` column of each replicate of ``rows`` (as ``groupby(REPLICATE, sort=True)``
    splits it), without the groupby where every row is of one replicate."""
    if _one_replicate(rows):
        return [rows["value"].to_numpy(dtype=float)]
    return [r["value"].to_numpy(dtype=float) for _, r in rows.groupby(REPLICATE, sort=True)]


def _groups(df: pd.DataFrame, by: list[str]) -> list[tuple[tuple, np.ndarray]]:
    """(key, row positions in table order) of each group of ``df.groupby(by, sort=True,
    dropna=False)``, in its order, without cutting the table into a frame per group."""
    codes = df.groupby(by, sort=True, dropna=False).ngroup().to_numpy()
    columns = [df[c].to_numpy() for c in by]
    return [(tuple(c[pos[0]] for c in columns), pos) for pos in _positions(codes, codes.max() + 1 if len(codes) else 0)]


def _positions(codes: np.ndarray, n: int) -> list[np.ndarray]:
    """The row positions of each code 0 .. n-1 in ``codes``, each in table order (a negative
    code is in none)."""
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(n + 1))
    return [order[bounds[j] : bounds[j + 1]] for j in range(n)]


def estimate(rows: pd.DataFrame, seed: int = 0, statistic: Aggregate | Pooled | None = None) -> tuple[float, float, float, np.ndarray]:
    """The value of a set of rows (with replicate columns) and its 95% CI: with several
    replicates, the mean of each replicate's statistic (the mean of its non-NaN values, or
    ``statistic``) and the two-level bootstrap; with one, the statistic of all rows and the image
    bootstrap. Also returns the replicates' statistics (those with a value). A :class:`Pooled`
    statistic pools each replicate's counts and resamples images with their counts."""
    if isinstance(statistic, Pooled):
        return _estimate_pooled(rows, seed, statistic)
    return _estimate_values(_replicate_values(rows), rows["value"].to_numpy(dtype=float), seed, statistic)


def _estimate_values(groups: list[np.ndarray], v: np.ndarray, seed: int, statistic: Aggregate | None) -> tuple[float, float, float, np.ndarray]:
    """:func:`estimate` of the values ``v`` of some rows (in table order), ``groups`` their replicates' values."""
    ok = [x[~np.isnan(x)] for x in groups]
    per_rep = np.array([(float(statistic(x)) if statistic else float(x.mean())) for x in ok if len(x)])
    if len(per_rep) > 1:
        lo, hi = two_level_bootstrap_ci(groups, seed, statistic=statistic)
        return float(per_rep.mean()), lo, hi, per_rep
    lo, hi = bootstrap_ci(v, seed, statistic=statistic)
    v = v[~np.isnan(v)]
    return ((float(statistic(v)) if statistic else float(v.mean())) if len(v) else np.nan), lo, hi, per_rep


def _estimate_pooled(rows: pd.DataFrame, seed: int, statistic: Pooled) -> tuple[float, float, float, np.ndarray]:
    names, counts = counts_of(rows)
    groups = [counts_of(r)[1] for _, r in rows.groupby(REPLICATE, sort=True)]
    per_rep = np.array([float(statistic(names, g)) for g in groups if len(g)])
    per_rep = per_rep[~np.isnan(per_rep)]
    if len(per_rep) > 1:
        lo, hi = pooled_two_level_ci(names, groups, statistic, seed)
        return float(per_rep.mean()), lo, hi, per_rep
    lo, hi = pooled_bootstrap_ci(names, counts, statistic, seed)
    return statistic_of(rows, statistic), lo, hi, per_rep


def summarize(
    df: pd.DataFrame, seed: int = 0, aggregates: Mapping[str, Aggregate | Pooled] | None = None, per_replicate: pd.DataFrame | None = None
) -> pd.DataFrame:
    """One row per cell: mean (or the metric's own statistic, see the module docstring; with
    replicates the mean of the replicates' statistics), std (over images), ci_low, ci_high,
    n (non-NaN rows; for a pooled metric the rows whose counts enter the pool), direction,
    statistic, replicates (those with a value), replicate_sd, and with replicates top1_share / ranking_w (:func:`xaibench.report.stability.add_stability`, from
    ``per_replicate``: :func:`replicate_statistics` of ``df``, computed here when not given)."""
    aggregates = aggregates or {}
    df = with_replicates(df)
    values, direction, one = df["value"].to_numpy(dtype=float), df["direction"].to_numpy(), _one_replicate(df)
    rows = []
    for key, pos in _groups(df, CELL):
        cell = dict(zip(CELL, key))
        agg = aggregates.get(cell["metric"])
        v = values[pos]
        ok = v[~np.isnan(v)]
        pooled = isinstance(agg, Pooled)
        g = None if one and not pooled else df.iloc[pos]  # the cell's rows as a frame only where counts or replicates are read
        value, lo, hi, per_rep = _estimate_values([v], v, seed, agg) if g is None else estimate(g, seed, agg)
        rows.append(
            dict(
                cell,
                mean=value,
                std=float(ok.std(ddof=1)) if len(ok) > 1 else np.nan,
                ci_low=lo,
                ci_high=hi,
                n=int(len(counts_of(g)[1]) if pooled else len(ok)),
                direction=direction[pos[0]],
                statistic=getattr(agg, "__name__", "aggregate") if agg else "mean",
                replicates=int(len(per_rep)),
                replicate_sd=float(per_rep.std(ddof=1)) if len(per_rep) > 1 else np.nan,
            )
        )
    columns = CELL + ["mean", "std", "ci_low", "ci_high", "n", "direction", "statistic", "replicates", "replicate_sd"]
    out = add_paired_tests(df, pd.DataFrame(rows, columns=columns))
    if df.groupby(REPLICATE).ngroups > 1:
        return add_stability(out, replicate_statistics(df, aggregates) if per_replicate is None else per_replicate)
    return out.assign(top1_share=np.nan, ranking_w=np.nan)


def summary_of(df: pd.DataFrame, seed: int, aggregates: Mapping[str, Aggregate | Pooled]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The summary (:func:`summarize`, with ranking stability) and the per-replicate statistics it
    is made from: what a run writes and what a leaderboard of run directories recomputes."""
    per_replicate = replicate_statistics(df, aggregates)
    return summarize(df, seed, aggregates, per_replicate), per_replicate


def metric_aggregates(metrics: Mapping[str, object]) -> dict[str, Aggregate | Pooled]:
    """``{name: metric.aggregate}`` for the metrics (instances or classes) that declare one
    (a ``staticmethod``; the summary's ``statistic`` column shows the metric's ``statistic``
    attribute, default ``"aggregate"``), and ``Pooled(metric.pool)`` for those that declare a pool."""
    out: dict[str, Aggregate | Pooled] = {}
    for name, m in metrics.items():
        fn = getattr(m, "aggregate", None)
        if callable(getattr(m, "pool", None)):
            out[name] = Pooled(m.pool, images=bool(getattr(m, "pools_images", False)))
        elif callable(fn):

            def named(values: np.ndarray, fn=fn) -> float:
                return fn(values)

            named.__name__ = str(getattr(m, "statistic", "aggregate"))
            out[name] = named
    return out


def paired_p(a: pd.Series, b: pd.Series) -> float:
    """Two-sided Wilcoxon signed-rank p-value of per-image values ``a`` against ``b`` (both
    indexed by image id), on the images where both have a value: 1.0 when every difference is
    0, NaN with fewer than 2 pairs."""
    if a.index.equals(b.index):  # the usual case, one set of images: no alignment to do
        x, y = a.to_numpy(dtype=float), b.to_numpy(dtype=float)
    else:
        pair = pd.concat([a.rename("a"), b.rename("b")], axis=1, join="inner")
        x, y = pair["a"].to_numpy(dtype=float), pair["b"].to_numpy(dtype=float)
    both = ~(np.isnan(x) | np.isnan(y))
    x, y = x[both], y[both]
    if len(x) < 2:
        return np.nan
    if np.allclose(x - y, 0):
        return 1.0
    return float(stats.wilcoxon(x, y).pvalue)


def values_by_cell(df: pd.DataFrame) -> dict[tuple, pd.Series]:
    """Each cell's per-image values, indexed by image id, keyed by the tuple of its ``CELL``
    columns; an image scored in several replicates (training seeds) gets the mean of its
    values, so paired tests pair images, not repeated trainings of the same image."""
    df = df[df["image_id"].notna()]
    if df.empty:
        return {}
    # one groupby of every cell x image (the same mean as one per cell), cut into cells: sorted, so each cell's rows are one run
    means = df.groupby(CELL + ["image_id"], sort=True, dropna=False)["value"].mean()
    new_cell = np.zeros(len(means), dtype=bool)
    new_cell[0] = True
    for codes in means.index.codes[: len(CELL)]:  # a cell starts where one of its columns changes
        new_cell[1:] |= codes[1:] != codes[:-1]
    starts = np.flatnonzero(new_cell)
    ends = np.r_[starts[1:], len(means)]
    cells = means.index.droplevel("image_id")
    images, values = means.index.get_level_values("image_id").rename(None), means.to_numpy(dtype=float)
    return {cells[a]: pd.Series(values[a:b], index=images[a:b]) for a, b in zip(starts, ends)}


def add_paired_tests(df: pd.DataFrame, summary: pd.DataFrame) -> pd.DataFrame:
    """Columns ``best`` (this cell is the best explainer of its column) and ``p_vs_best``: the
    Wilcoxon signed-rank p-value (:func:`paired_p`) of this explainer against the best one on
    the same images, within each (dataset, model, layer, threshold, perturbation, metric) column,
    Holm-corrected over all such comparisons of a metric and mode (one family)."""
    column = [c for c in CELL if c != "explainer"]
    values = values_by_cell(df)
    keys = list(zip(*(summary[c] for c in CELL)))
    mean, direction = summary["mean"].to_numpy(dtype=float), summary["direction"].to_numpy()
    best, p = np.zeros(len(summary), dtype=bool), np.full(len(summary), np.nan)
    for idx in summary.groupby(column, dropna=False).indices.values():  # positions, in table order
        block = idx[~np.isnan(mean[idx])]
        if not len(block):
            continue
        top = best_label(pd.Series(mean[block], index=block), direction[block[0]])
        best[top] = True
        for i in block[block != top]:
            p[i] = paired_p(values[keys[i]], values[keys[top]])
    for idx in summary.groupby(["metric", "perturbation"], dropna=False).indices.values():  # one family per metric and mode
        p[idx] = holm(p[idx])
    return summary.assign(best=best, p_vs_best=p)
