"""The summary's shortcuts give what the plain pandas they replace gives, to the last bit."""

import numpy as np
import pandas as pd
import pytest

from xaibench.report.stats import CELL, Pooled, _replicate_values, paired_p, statistic_of, statistics_by, values_by_cell


def _table(seed: int = 0, replicates=(("", 0),)) -> pd.DataFrame:
    """Two explainers x two thresholds x ten images per replicate, rows shuffled, a few NaN values."""
    rng = np.random.default_rng(seed)
    rows = [
        dict(dataset="d", model="mo", explainer=e, layer="l", threshold=t, perturbation="p", metric="m", image_id=f"i{i}",
             value=rng.normal(), direction="higher", fold=fold, seed=s, counts=f'{{"tp": {rng.integers(0, 9)}, "fp": {rng.integers(1, 9)}}}')
        for fold, s in replicates for e in ("a", "b") for t in ("0.1", "0.2") for i in range(10)
    ]
    df = pd.DataFrame(rows).sample(frac=1.0, random_state=seed).reset_index(drop=True)
    df.loc[df.index[::7], "value"] = np.nan
    return df


@pytest.mark.parametrize("replicates", [(("", 0),), (("", 0), ("", 1), ("", 2))])
def test_values_by_cell_is_each_cells_mean_per_image(replicates):
    df = _table(1, replicates)
    df.loc[(df["explainer"] == "a") & (df["image_id"] == "i3"), "value"] = np.nan  # an image with no value at all
    got = values_by_cell(df)
    want = {
        key: pd.Series(g["value"].to_numpy(dtype=float), index=g["image_id"].to_numpy()).groupby(level=0).mean()
        for key, g in df.groupby(CELL, sort=False, dropna=False)
    }
    assert set(got) == set(want)
    for key, series in want.items():
        assert list(got[key].index) == list(series.index)
        np.testing.assert_array_equal(got[key].to_numpy(), series.to_numpy())  # NaN where NaN, else equal bits


@pytest.mark.parametrize("statistic", [None, np.median, Pooled(lambda c: c["tp"] / (c["tp"] + c["fp"]))])
def test_statistics_by_is_statistic_of_each_group(statistic):
    df = _table(2).sort_values("threshold", ascending=False, kind="stable").reset_index(drop=True)  # keys not met in order
    df.loc[3, "threshold"] = np.nan  # a row without a key is in no group, as in groupby
    got = statistics_by(df, "threshold", statistic)
    want = pd.Series({t: statistic_of(rows, statistic) for t, rows in df.groupby("threshold", sort=True)}, dtype=float)
    assert list(got.index) == list(want.index)
    np.testing.assert_array_equal(got.to_numpy(), want.to_numpy())


@pytest.mark.parametrize("replicates", [(("", 0),), (("0", 0), ("1", 0)), (("", 0), ("", 1))])
def test_replicate_values_split_as_groupby_does(replicates):
    df = _table(3, replicates)
    want = [r["value"].to_numpy(dtype=float) for _, r in df.groupby(["fold", "seed"], sort=True)]
    got = _replicate_values(df)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


def test_paired_p_pairs_by_image_whatever_the_order():
    rng = np.random.default_rng(4)
    ids = [f"i{i}" for i in range(20)]
    a = pd.Series(rng.normal(size=20), index=ids)
    b = pd.Series(a.to_numpy() + rng.normal(0.5, 1, 20), index=ids)
    b.iloc[2] = np.nan
    p = paired_p(a, b)
    assert 0 < p < 1
    shuffled = b.sample(frac=1.0, random_state=0)
    assert paired_p(a, shuffled) == p
    assert paired_p(a, pd.concat([shuffled, pd.Series([9.0], index=["only_b"])])) == p  # an image only b has is left out
    assert np.isnan(paired_p(a.iloc[:1], b.iloc[:1]))


@pytest.mark.parametrize("direction", ["higher", "lower"])
def test_cross_fit_chooses_and_keeps_what_the_groupby_loop_did(direction):
    from collections import Counter

    from xaibench.config.vocabulary import best_label
    from xaibench.report.selection import cross_fit

    df = _table(5, (("", 0), ("", 1)))
    df.loc[(df["image_id"] == "i9") & (df["threshold"] == "0.2"), "value"] = 100.0 if direction == "higher" else -100.0
    groups = df["image_id"].map({f"i{i}": "ab"[i % 2] for i in range(9)})  # i9 in no group: among the others, deciding
    g = df.assign(_group=groups)
    chosen, held = Counter(), []
    for name, own in g.groupby("_group", sort=True):
        scores = pd.Series({t: statistic_of(r) for t, r in g[g["_group"] != name].groupby("threshold", sort=True)}, dtype=float).dropna()
        pick = best_label(scores, direction)
        chosen[pick] += 1
        held.append(own[own["threshold"] == pick])
    rows, got = cross_fit(df, groups, "threshold", None, direction)
    assert got == chosen and len(chosen) and list(rows.index) == list(pd.concat(held).index)


def test_groups_are_the_groupbys_keys_and_rows_in_its_order():
    from xaibench.report.stats import REPLICATE, _groups

    df = _table(6, (("1", 0), ("0", 0), ("0", 2)))
    by = CELL + REPLICATE
    got = _groups(df, by)
    want = list(df.groupby(by, sort=True, dropna=False))
    assert [k for k, _ in got] == [k for k, _ in want]
    assert all(list(df.index[pos]) == list(g.index) for (_, pos), (_, g) in zip(got, want))
    assert _groups(df.iloc[:0], by) == []
