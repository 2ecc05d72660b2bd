"""Best thresholds chosen on other images than those they are reported on."""

import pandas as pd
import pytest

from xaibench.report.selection import held_out_best_thresholds, selection_groups

# fold 0's images like threshold 0.1, fold 1's like 0.5; 0.3 is best on all images together
VALUES = {"0": {"0.1": 1.0, "0.3": 0.5, "0.5": 0.0}, "1": {"0.1": 0.0, "0.3": 0.6, "0.5": 0.9}}


def _rows(folds=True):
    rows = []
    for fold, by_thr in VALUES.items():
        for i in range(4):
            for thr, v in by_thr.items():
                rows.append(dict(dataset="d", model="m", explainer="e", layer="l", threshold=thr, perturbation="", metric="x",
                                 image_id=f"f{fold}-{i}", value=v, direction="higher", fold=fold if folds else "", seed=0))
    return pd.DataFrame(rows)


def test_the_threshold_chosen_on_the_other_fold_is_reported_on_the_held_out_one():
    (r,) = held_out_best_thresholds(_rows()).to_dict("records")
    # fold 0 gets the choice of fold 1 (0.5), where it scores 0.0; fold 1 gets 0.1, also 0.0
    assert r["chosen"] == {"0.5": 1, "0.1": 1}
    assert r["mean"] == pytest.approx(0.0) and r["n"] == 8
    assert r["in_sample_threshold"] == "0.3" and r["in_sample_mean"] == pytest.approx(0.55)
    _, how = selection_groups(_rows())
    assert "other folds" in how


def test_without_folds_the_images_are_halved_with_the_seed_and_each_half_reported_on_the_other():
    groups, how = selection_groups(_rows(folds=False), seed=0)
    assert sorted(groups) == sorted(f"f{f}-{i}" for f in "01" for i in range(4))
    assert sorted(list(groups.values()).count(g) for g in "ab") == [4, 4] and "half" in how
    assert selection_groups(_rows(folds=False), seed=0)[0] == groups
    assert selection_groups(_rows(folds=False), seed=2)[0] != groups  # seed 1 happens to draw the same halves)
    (r,) = held_out_best_thresholds(_rows(folds=False), seed=0).to_dict("records")
    assert r["in_sample_threshold"] == "0.3" and r["mean"] <= r["in_sample_mean"]


def test_fewer_than_three_thresholds_choose_nothing():
    df = _rows()
    assert held_out_best_thresholds(df[df["threshold"] != "0.3"]).empty


def test_a_pooled_metric_is_chosen_and_reported_pooled_as_its_ranking_reports_it():
    """The best-threshold table's in-sample value of a pooled metric equals the summary's (the
    ranking's) pooled statistic, not the mean of the per-image values."""
    import pandas as pd

    from xaibench.report.stats import Pooled, summarize

    rows = []
    for j in range(12):
        for t in ("0.1", "0.2", "0.3"):
            tp, fp = (1.0 + j % 3, 0.0) if j % 2 else (0.0, 5.0 + float(t[-1]))
            rows.append(dict(dataset="d", model="m", explainer="cam", layer="l", threshold=t, perturbation="", metric="pooled_iou",
                             image_id=f"i{j}", value=tp / (tp + fp), direction="higher", counts=f'{{"fp":{fp},"tp":{tp}}}'))
    df = pd.DataFrame(rows)
    pool = {"pooled_iou": Pooled(lambda c: c["tp"] / (c["tp"] + c["fp"]))}
    table = held_out_best_thresholds(df, 0, aggregates=pool)
    summary = summarize(df, 0, pool).set_index("threshold")
    r = table.iloc[0]
    assert r["in_sample_mean"] == summary.loc[r["in_sample_threshold"], "mean"]
    assert r["in_sample_mean"] != df[df.threshold == r["in_sample_threshold"]]["value"].mean()
