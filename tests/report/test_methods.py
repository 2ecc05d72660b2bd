"""The held-out method table: settings chosen on other images, baselines, fewer images."""

import numpy as np
import pandas as pd

from xaibench.report.methods import blocks, method_scores
from xaibench.report.methods import section as methods_section
from xaibench.report.selection import selection_groups
from xaibench.report.stats import Pooled

IDS = [f"i{j:02d}" for j in range(16)]


def _row(explainer, layer, threshold, image, value, metric="m", direction="higher", model="net"):
    return dict(dataset="d", model=model, explainer=explainer, layer=layer, threshold=threshold, perturbation="", metric=metric,
                image_id=image, value=value, direction=direction)


def test_no_image_is_scored_with_a_setting_it_helped_choose():
    """Setting 0.1 is best on half a, 0.2 on half b: held out, a's images get 0.2 (chosen on b)
    and b's get 0.1; choosing in-sample would give every image its own best and fail this."""
    groups, _ = selection_groups(pd.DataFrame({"image_id": IDS}), 0)
    rows = []
    for i in IDS:
        own_best = "0.1" if groups[i] == "a" else "0.2"
        for t in ("0.1", "0.2"):
            rows.append(_row("cam", "l", t, i, 1.0 if t == own_best else 0.0))
    scores = method_scores(pd.DataFrame(rows), 0)
    per_image = scores.values[("net", "cam", "m", "")]
    assert (per_image == 0.0).all()
    assert scores.table.iloc[0]["mean"] == 0.0
    assert scores.table.iloc[0]["settings"] == "l @ 0.1 (1/2), l @ 0.2 (1/2)"


def _baseline_results(rng):
    rows = []
    for i in IDS:
        rows.append(_row("random", "input", "", i, rng.normal(0.2, 0.05)))
        rows.append(_row("center_prior", "input", "", i, rng.normal(0.3, 0.05)))
        rows.append(_row("good", "l", "", i, rng.normal(0.8, 0.05)))
        rows.append(_row("same", "l", "", i, rng.normal(0.3, 0.05)))
    return rows


def test_methods_are_compared_with_the_better_baseline():
    scores = method_scores(pd.DataFrame(_baseline_results(np.random.default_rng(0))), 0)
    t = scores.table.set_index("explainer")
    assert t.loc["good", "baseline"] == "center_prior" and t.loc["good", "beats_baseline"] is True
    assert t.loc["good", "vs_baseline"] > 0.4 and t.loc["good", "p_vs_baseline"] < 0.05
    assert t.loc["same", "beats_baseline"] is False
    assert t.loc["random", "beats_baseline"] is None  # the baselines are not compared with themselves
    md = methods_section(scores)
    line = next(l for l in md.splitlines() if "| same |" in l)
    assert line.endswith("✗ |") and "| baseline |" in next(l for l in md.splitlines() if "| random |" in l)


def test_an_entry_with_fewer_images_is_flagged_and_never_ranked_above():
    rows = _baseline_results(np.random.default_rng(0))
    groups, _ = selection_groups(pd.DataFrame({"image_id": IDS}), 0)
    few = [i for i in IDS if groups[i] == "a"][:2] + [i for i in IDS if groups[i] == "b"][:2]
    rows += [_row("lucky", "l", "", i, 5.0) for i in few]  # the best mean, on 4 images only
    scores = method_scores(pd.DataFrame(rows), 0)
    (blk,) = blocks(scores)
    assert "lucky" not in set(blk.full["explainer"]) and list(blk.fewer["explainer"]) == ["lucky"]
    assert blk.full.iloc[0]["explainer"] == "good"
    md = methods_section(scores)
    assert "| – (n < 16) | net | lucky |" in md
    assert blk.test is not None and "lucky" not in blk.test.mean_ranks.index


def test_a_pooled_metric_is_reported_with_its_pool_not_the_mean_of_images():
    rows = []
    for j, i in enumerate(IDS):
        tp, fp = (1.0, 0.0) if j % 2 else (0.0, 9.0)
        row = _row("cam", "l", "", i, tp / (tp + fp))
        row["counts"] = f'{{"tp": {tp}, "fp": {fp}}}'
        rows.append(row)
    df = pd.DataFrame(rows)
    pool = Pooled(lambda c: c["tp"] / (c["tp"] + c["fp"]))
    scores = method_scores(df, 0, {"m": pool})
    assert scores.table.iloc[0]["mean"] == 8 / (8 + 72)  # pooled, not the mean of images (0.5)
    assert scores.table.iloc[0]["statistic"] == "pooled"


def test_a_metric_without_perturbation_borrows_another_models_baselines():
    rows = _baseline_results(np.random.default_rng(0))
    rows += [_row("cam", "l", "", i, 0.9, model="other") for i in IDS]
    t = method_scores(pd.DataFrame(rows), 0).table.set_index(["model", "explainer"])
    assert t.loc[("other", "cam"), "baseline"] == "center_prior" and t.loc[("other", "cam"), "beats_baseline"] is True
    perturbed = [dict(r, perturbation="background_only") for r in rows]
    t = method_scores(pd.DataFrame(perturbed), 0).table.set_index(["model", "explainer"])
    assert t.loc[("other", "cam"), "baseline"] == ""  # a perturbation metric depends on the model: no borrowing
