"""Method-level tests (Demsar 2006): per metric and mode, the Friedman test of the methods at
their held-out settings over the images they all scored, mean ranks (1 = best), the Nemenyi
post-hoc test and its critical difference; the critical-difference diagram as a PNG; and Holm's
correction of a family of p-values.

The statistics are scipy's (``friedmanchisquare``, ``studentized_range``), scikit-posthocs'
(``posthoc_nemenyi_friedman``, ``critical_difference_diagram``) and statsmodels' (``multipletests``).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from xaibench.config.vocabulary import higher_is_better


@dataclass
class Friedman:
    """The Friedman test of ``k`` methods over ``n`` images: statistic, p-value, mean ranks
    (1 = best, best first), the Nemenyi p-values between every pair and the critical difference
    of mean ranks at alpha 0.05 (two methods whose mean ranks differ by more are different)."""

    statistic: float
    pvalue: float
    n: int
    mean_ranks: pd.Series
    posthoc: pd.DataFrame
    cd: float


def holm(pvalues) -> np.ndarray:
    """Holm-corrected p-values (NaN kept where a p-value is NaN, the family being the others).

    The arithmetic of statsmodels' ``multipletests(p, method="holm")``, step for step (so the
    same floats; a test holds them equal), without its call: that one runs ``gc.collect()``
    each time, which in a run's process costs a tenth of a second per family."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    if ok.any():
        order = np.argsort(p[ok])
        ranked = p[ok][order]
        corrected = np.minimum(np.maximum.accumulate(ranked * np.arange(len(ranked), 0, -1)), 1.0)
        unsorted = np.empty_like(corrected)
        unsorted[order] = corrected
        out[ok] = unsorted
    return out


def critical_difference(k: int, n: int, alpha: float = 0.05) -> float:
    """Nemenyi's critical difference of mean ranks: q_alpha * sqrt(k (k + 1) / (6 n)), q_alpha the
    studentized range quantile over sqrt(2) (Demsar 2006, eq. 5)."""
    q = stats.studentized_range.ppf(1 - alpha, k, np.inf) / math.sqrt(2)
    return float(q * math.sqrt(k * (k + 1) / (6 * n)))


def friedman(values: dict[str, pd.Series], direction: str) -> Friedman | None:
    """The test of the methods ``values`` (label -> value per image id) on the images every one of
    them scored; None with fewer than 3 methods or 2 such images (the test needs them)."""
    import scikit_posthocs as sp

    matrix = pd.DataFrame(values).dropna()
    if matrix.shape[1] < 3 or matrix.shape[0] < 2:
        return None
    ranks = matrix.rank(axis=1, ascending=not higher_is_better(direction))
    mean_ranks = ranks.mean().sort_values(kind="stable")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-tied images: the statistic is NaN
        stat, p = stats.friedmanchisquare(*(matrix[c].to_numpy() for c in matrix.columns))
        posthoc = sp.posthoc_nemenyi_friedman(ranks.to_numpy())
    posthoc.index = posthoc.columns = list(matrix.columns)
    return Friedman(float(stat), float(p), len(matrix), mean_ranks, posthoc, critical_difference(matrix.shape[1], len(matrix)))


def cd_diagram(test: Friedman, title: str, path: Path) -> Path:
    """The critical-difference diagram of ``test`` (scikit-posthocs), saved as a PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import scikit_posthocs as sp

    from xaibench.runs.results import atomic_write

    fig, ax = plt.subplots(figsize=(7.5, 0.5 + 0.28 * len(test.mean_ranks)))
    sp.critical_difference_diagram(test.mean_ranks, test.posthoc.fillna(1.0), ax=ax, cd=test.cd)
    ax.set_title(f"{title}\nFriedman p = {test.pvalue:.2g} over {test.n} images; mean rank (1 = best), Nemenyi CD = {test.cd:.2f}", fontsize=9)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))
    plt.close(fig)
    return path
