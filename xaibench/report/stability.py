"""Ranking stability across replicates: would another training run (or fold) change the ranking?

For each ranking (a metric, and its perturbation mode) the entries are ranked once per
replicate by that replicate's statistic (:func:`xaibench.report.stats.replicate_statistics`). Reported:
how often each entry is #1, Kendall's W (coefficient of concordance) of the replicates'
rankings, the mean pairwise Kendall tau, and the pairs of top entries whose order flips.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from xaibench.config.vocabulary import higher_is_better
from xaibench.runs.results import REPLICATE_COLUMNS as REPLICATE

#: what identifies an entry of a ranking, and the rankings themselves
ENTRY = ["model", "explainer", "layer", "threshold"]
RANKING = ["metric", "perturbation"]


def kendall_w(scores: np.ndarray) -> float:
    """Kendall's W of ``scores`` [raters, items] (each rater ranks the items; ties get average
    ranks, with the tie correction): 1 = every rater ranks alike, 0 = no agreement. NaN with
    fewer than 2 raters or items, or when every rater ties everything."""
    scores = np.asarray(scores, dtype=float)
    m, n = scores.shape
    if m < 2 or n < 2:
        return np.nan
    ranks = np.vstack([stats.rankdata(row) for row in scores])
    s = float(((ranks.sum(axis=0) - m * (n + 1) / 2) ** 2).sum())
    ties = sum(float((c**3 - c).sum()) for c in (np.unique(row, return_counts=True)[1] for row in scores))
    denom = m**2 * (n**3 - n) - m * ties
    return 12 * s / denom if denom > 0 else np.nan


def mean_pairwise_tau(scores: np.ndarray) -> float:
    """The mean Kendall tau-b over every pair of raters (rows of ``scores``)."""
    taus = [stats.kendalltau(a, b).statistic for a, b in itertools.combinations(np.asarray(scores, dtype=float), 2)]
    taus = [t for t in taus if not np.isnan(t)]
    return float(np.mean(taus)) if taus else np.nan


@dataclass
class Stability:
    """The stability of one ranking over its replicates."""

    metric: str
    perturbation: str
    replicates: int
    entries: int  #: entries with a value in every replicate (those W and tau are computed over)
    w: float
    tau: float
    #: entry (model, explainer, layer, threshold) -> replicates in which it is #1
    top1: dict[tuple, int] = field(default_factory=dict)
    #: (entry above, entry below in the overall ranking, replicates in which they swap)
    swaps: list[tuple[tuple, tuple, int]] = field(default_factory=list)


def ranking_stability(per_replicate: pd.DataFrame, top: int = 10) -> list[Stability]:
    """Stability of every ranking in ``per_replicate`` (one row per cell x replicate, column
    ``value``); rankings with fewer than two replicates or two entries are left out. ``swaps``
    covers the ``top`` entries of the overall ranking (the mean over replicates)."""
    out = []
    for (metric, pert), block in per_replicate.groupby(RANKING, sort=True, dropna=False):
        higher = higher_is_better(block["direction"].iloc[0])
        wide = block.pivot_table(index=REPLICATE, columns=ENTRY, values="value", aggfunc="first", dropna=False)
        wide = wide.dropna(axis=1, how="any").dropna(axis=0, how="all")
        if wide.shape[0] < 2 or wide.shape[1] < 2:
            continue
        scores = wide.to_numpy() if higher else -wide.to_numpy()  # higher score = better rank
        entries = list(wide.columns)
        best = scores.argmax(axis=1)
        top1 = {entries[j]: int((best == j).sum()) for j in sorted(set(best.tolist()))}
        order = np.argsort(-scores.mean(axis=0), kind="stable")[:top]
        swaps = []
        for a, b in itertools.combinations(order, 2):  # a is above b overall
            flips = int((scores[:, b] > scores[:, a]).sum())
            if flips:
                swaps.append((entries[a], entries[b], flips))
        swaps.sort(key=lambda t: -t[2])
        out.append(Stability(metric, pert, wide.shape[0], wide.shape[1], kendall_w(scores), mean_pairwise_tau(scores), top1, swaps))
    return out


def times_first(share: float | None, replicates: int) -> str:
    """``"2/3"``: a ``top1_share`` as replicates out of ``replicates``; ``–`` where it is NaN."""
    if share is None or pd.isna(share):
        return "–"
    return f"{round(share * replicates)}/{replicates}"


def top1_shares(results: list[Stability]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Two tables: per entry that is ever #1, the fraction of replicates in which it is #1 of its
    ranking (``top1_share``); and per ranking its Kendall's W (``ranking_w``)."""
    rows = []
    for s in results:
        for entry, count in s.top1.items():
            rows.append(dict(metric=s.metric, perturbation=s.perturbation, **dict(zip(ENTRY, entry)), top1_share=count / s.replicates))
    cols = RANKING + ENTRY + ["top1_share"]
    shares = pd.DataFrame(rows, columns=cols)
    w = pd.DataFrame([dict(metric=s.metric, perturbation=s.perturbation, ranking_w=s.w, _ranked=True) for s in results], columns=RANKING + ["ranking_w", "_ranked"])
    return shares, w


def add_stability(summary: pd.DataFrame, per_replicate: pd.DataFrame) -> pd.DataFrame:
    """``summary`` with ``top1_share`` (0 for an entry never #1) and ``ranking_w`` where the run
    has replicates; NaN in both where a ranking has one replicate (nothing to be stable across)."""
    shares, w = top1_shares(ranking_stability(per_replicate))
    out = summary.merge(w, on=RANKING, how="left").merge(shares, on=RANKING + ENTRY, how="left")
    out.loc[out["_ranked"].eq(True) & out["top1_share"].isna() & out["mean"].notna(), "top1_share"] = 0.0
    return out.drop(columns="_ranked")
