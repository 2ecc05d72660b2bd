"""Image-level detection metrics on hand-made logits and labels."""

from __future__ import annotations

import math

import pytest
import torch
from xaibench_ecsplain.metrics import (
    ClassificationAccuracy,
    ClassificationF1,
    ClassificationPrecision,
    ClassificationRecall,
    ClassificationSpecificity,
    predicted_positive,
)

from xaibench.plugin import MetricContext, UserError
from xaibench.testing import metric_target

NAN = float("nan")


def _ctx(logits, labels=None, truth=None):
    b = logits.shape[0]
    return MetricContext(
        images=torch.zeros(b, 2, 4, 4),
        ground_truth=truth,
        target=metric_target(logits),
        logits=logits,
        heatmap=torch.zeros(b, 4, 4),
        forward=lambda x: logits,
        fill=torch.zeros(b, 2, 4, 4),
        labels=labels,
    )


def _same(a, b):
    return all((math.isnan(x) and math.isnan(y)) or x == y for x, y in zip(a.tolist(), b))


# predictions: +, +, -, -, +, -   labels: 1, 0, 1, 0, 1, 0  -> TP 2, FP 1, FN 1, TN 2
LOGITS = torch.tensor([[2.0], [0.5], [-1.0], [-3.0], [0.1], [-0.2]])
LABELS = torch.tensor([1, 0, 1, 0, 1, 0])


def test_classifier_metrics_per_image_and_their_means():
    ctx = _ctx(LOGITS, LABELS)
    acc = ClassificationAccuracy().compute(ctx)
    rec = ClassificationRecall().compute(ctx)
    prec = ClassificationPrecision().compute(ctx)
    spec = ClassificationSpecificity().compute(ctx)
    assert _same(acc, [1, 0, 0, 1, 1, 1])
    assert _same(rec, [1, NAN, 0, NAN, 1, NAN])
    assert _same(prec, [1, 0, NAN, NAN, 1, NAN])
    assert _same(spec, [NAN, 0, NAN, 1, NAN, 1])
    # the means over the defined images are the dataset statistics
    assert acc.mean().item() == pytest.approx(4 / 6)
    assert rec.nanmean().item() == pytest.approx(2 / 3)  # TP / (TP + FN)
    assert prec.nanmean().item() == pytest.approx(2 / 3)  # TP / (TP + FP)
    assert spec.nanmean().item() == pytest.approx(2 / 3)  # TN / (TN + FP)
    for m in (ClassificationAccuracy, ClassificationPrecision, ClassificationRecall, ClassificationSpecificity, ClassificationF1):
        assert m.uses_threshold is False and m.perturbation is None and m.direction == "higher"
        assert m.uses_map is False  # model-level: one cell per model


def test_classification_f1_values_and_dataset_statistic():
    f1 = ClassificationF1().compute(_ctx(LOGITS, LABELS))
    assert _same(f1, [1, 0, 0, NAN, 1, NAN])  # TP, FP, FN, TN, TP, TN
    ok = f1[~torch.isnan(f1)].numpy()
    assert ClassificationF1.aggregate(ok) == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))  # 2 TP / (2 TP + FP + FN)
    assert ClassificationF1.aggregate(ok) != pytest.approx(ok.mean())
    # F1 = 2 P R / (P + R) from the precision and recall of the same images
    p, r = ClassificationPrecision().compute(_ctx(LOGITS, LABELS)).nanmean(), ClassificationRecall().compute(_ctx(LOGITS, LABELS)).nanmean()
    assert ClassificationF1.aggregate(ok) == pytest.approx(float(2 * p * r / (p + r)))


def test_segmenter_is_positive_when_its_mask_is_not_empty():
    logits = torch.full((3, 1, 4, 4), -5.0)
    logits[0, 0, 1, 1] = 3.0  # one foreground pixel
    logits[1, 0, :2, :2] = 3.0  # four
    assert predicted_positive(logits).tolist() == [True, True, False]
    assert predicted_positive(logits, min_pixels=2).tolist() == [False, True, False]
    truth = torch.zeros(3, 4, 4, dtype=torch.long)
    truth[0, 0, 0] = 1
    truth[2, 3, 3] = 1
    # no image-level labels: they come from the masks (1, 0, 1)
    ctx = _ctx(logits, labels=None, truth=truth)
    assert _same(ClassificationAccuracy().compute(ctx), [1, 0, 0])
    assert _same(ClassificationRecall().compute(ctx), [1, NAN, 0])
    assert _same(ClassificationPrecision(min_pixels=2).compute(ctx), [NAN, 0, NAN])
    with pytest.raises(UserError):
        ClassificationAccuracy(min_pixels=0)


def test_multi_logit_classifier_and_multiclass_segmenter():
    assert predicted_positive(torch.tensor([[2.0, 1.0], [0.0, 3.0]])).tolist() == [False, True]
    seg = torch.zeros(2, 3, 2, 2)
    seg[0, 0] = 5.0
    seg[1, 2, 0, 0] = 5.0
    assert predicted_positive(seg).tolist() == [False, True]
