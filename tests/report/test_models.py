"""The Models section and the chance rule of the leaderboard (xaibench.report.models)."""

import pandas as pd

from xaibench.report import models


def _summary(rows):
    base = dict(dataset="d", explainer="", layer="", threshold="", perturbation="", n=16, direction="higher")
    return pd.DataFrame([{**base, **r} for r in rows])


def _seg(model, iou, lo, hi, trivial):
    return [
        dict(model=model, metric="model_pooled_iou", mean=iou, ci_low=lo, ci_high=hi),
        dict(model=model, metric="model_trivial_iou", mean=trivial, ci_low=trivial, ci_high=trivial),
    ]


def test_a_trained_segmenter_is_above_chance_and_an_untrained_one_is_not():
    s = _summary(_seg("trained", 0.84, 0.80, 0.88, 0.06) + _seg("untrained", 0.07, 0.05, 0.09, 0.06))
    chance = models.at_chance(s)
    assert list(chance) == ["untrained"] and "0.060" in chance["untrained"]


def test_a_classifier_is_at_chance_when_accuracy_reaches_the_majority_rate_or_auroc_reaches_half():
    def cls(model, acc_lo, auroc_lo):
        return [
            dict(model=model, metric="model_accuracy", mean=0.9, ci_low=acc_lo, ci_high=0.95),
            dict(model=model, metric="model_majority_rate", mean=0.7, ci_low=0.6, ci_high=0.8),
            dict(model=model, metric="model_auroc", mean=0.9, ci_low=auroc_lo, ci_high=0.97),
        ]

    s = _summary(cls("good", 0.85, 0.85) + cls("acc", 0.69, 0.85) + cls("auc", 0.85, 0.49))
    chance = models.at_chance(s)
    assert sorted(chance) == ["acc", "auc"] and "majority" in chance["acc"] and "AUROC" in chance["auc"]


def test_the_section_shows_every_value_and_the_verdicts():
    s = _summary(_seg("unet", 0.84, 0.80, 0.88, 0.06))
    text = models.section(s)
    assert "| unet | model_pooled_iou | 0.8400 [0.8000, 0.8800] | 16 | above chance |" in text
    assert "| unet | model_trivial_iou | 0.0600 [0.0600, 0.0600] | 16 | trivial baseline |" in text


def test_the_cells_of_a_model_at_chance_are_listed_apart():
    cell = dict(dataset="d", explainer="grad_cam", layer="decoder1", threshold="0.5", perturbation="", metric="localization_iou",
                mean=0.3, ci_low=0.2, ci_high=0.4, n=16, direction="higher")
    s = pd.concat([_summary(_seg("bad", 0.05, 0.02, 0.08, 0.06)), pd.DataFrame([{**cell, "model": "bad"}, {**cell, "model": "good"}])])
    text = models.apart(s, models.at_chance(s))
    assert "| bad | localization_iou | grad_cam | decoder1 | 0.5 |" in text and "| good |" not in text
