"""Method-level statistics: Friedman, Nemenyi's critical difference, Holm, the CD diagram."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from xaibench.report.method_tests import cd_diagram, critical_difference, friedman, holm


def _series(values):
    return pd.Series(values, index=[f"i{j}" for j in range(len(values))])


def test_friedman_against_a_hand_computed_example():
    # A > B > C on each of 4 images (higher is better): rank sums 4, 8, 12;
    # chi2 = 12 / (n k (k + 1)) * sum(R^2) - 3 n (k + 1) = 0.25 * 224 - 48 = 8
    vals = {"A": _series([0.9, 0.8, 0.7, 0.95]), "B": _series([0.5, 0.4, 0.6, 0.5]), "C": _series([0.1, 0.2, 0.3, 0.0])}
    t = friedman(vals, "higher")
    assert t.statistic == pytest.approx(8.0)
    assert t.pvalue == pytest.approx(math.exp(-4))  # chi2 with 2 dof: sf(x) = exp(-x / 2)
    assert list(t.mean_ranks.index) == ["A", "B", "C"] and list(t.mean_ranks) == [1.0, 2.0, 3.0]
    assert t.n == 4
    lower = friedman(vals, "lower")
    assert list(lower.mean_ranks.index) == ["C", "B", "A"]


def test_friedman_uses_only_the_images_every_method_scored_and_needs_three_methods():
    vals = {"A": _series([1.0, 2, 3, 4]), "B": _series([0.0, 1, 2, np.nan]), "C": _series([0.5, 0.5, 0.5, 0.5])}
    assert friedman(vals, "higher").n == 3
    assert friedman({"A": vals["A"], "B": vals["B"]}, "higher") is None


def test_friedman_and_nemenyi_agree_with_the_libraries_on_random_data():
    import scikit_posthocs as sp

    rng = np.random.default_rng(0)
    data = rng.normal(size=(30, 5)) + np.arange(5) * 0.3
    vals = {f"m{j}": _series(data[:, j]) for j in range(5)}
    t = friedman(vals, "higher")
    ref = stats.friedmanchisquare(*data.T)
    assert t.statistic == pytest.approx(ref.statistic) and t.pvalue == pytest.approx(ref.pvalue)
    ranks = pd.DataFrame(data).rank(axis=1, ascending=False)
    expected = sp.posthoc_nemenyi_friedman(ranks.to_numpy())
    assert np.allclose(t.posthoc.to_numpy(), expected.to_numpy())
    assert t.mean_ranks["m4"] == pytest.approx(ranks[4].mean())


def test_critical_difference_matches_demsars_table():
    # Demsar 2006, Table 5(a): q_0.05 = 2.343 for k = 3, 2.569 for k = 4
    assert critical_difference(3, 4) == pytest.approx(2.343 * math.sqrt(3 * 4 / 24), abs=1e-3)
    assert critical_difference(4, 10) == pytest.approx(2.569 * math.sqrt(4 * 5 / 60), abs=1e-3)


def test_holm_by_hand_and_nan_kept():
    # sorted 0.01, 0.03, 0.04 -> 0.03, 0.06, max(0.06, 0.04) = 0.06
    assert np.allclose(holm([0.01, 0.04, 0.03]), [0.03, 0.06, 0.06])
    out = holm([0.01, np.nan, 0.04])
    assert np.isnan(out[1]) and np.allclose(out[[0, 2]], [0.02, 0.04])
    assert holm([]).shape == (0,)



def test_holm_equals_statsmodels_exactly():
    from statsmodels.stats.multitest import multipletests

    rng = np.random.default_rng(3)
    for size in (1, 2, 7, 40):
        p = rng.uniform(size=size) ** 3  # small ones, large ones (corrected past 1 -> 1)
        p[: size // 3] = p[0]  # ties
        assert np.array_equal(holm(p), multipletests(p, method="holm")[1])

def test_cd_diagram_writes_a_png(tmp_path):
    rng = np.random.default_rng(1)
    vals = {f"m{j}": _series(rng.normal(size=12) + j) for j in range(4)}
    path = cd_diagram(friedman(vals, "higher"), "iou", tmp_path / "cd.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
