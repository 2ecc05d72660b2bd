"""The model-quality metrics on predictions whose answer is known, and against the libraries."""

import math

import numpy as np
import torch
from torchmetrics.functional.classification import binary_auroc

from xaibench.engine.targets import Target
from xaibench.metrics import model_quality as Q
from xaibench.metrics.base import MetricContext
from xaibench.report.stats import Pooled


def _ctx(logits, gt=None, labels=None):
    b = logits.shape[0]
    return MetricContext(
        images=torch.zeros(b, 3, 4, 4), ground_truth=gt, target=Target(torch.zeros(b, dtype=torch.long), None, torch.ones(b, dtype=torch.long)),
        logits=logits, heatmap=None, forward=lambda x: x, fill=torch.zeros(b, 3, 4, 4), labels=labels,
    )


def _seg_logits(pred: torch.Tensor) -> torch.Tensor:
    """One-logit segmentation output whose mask at 0.5 is ``pred`` [B, H, W]."""
    return (pred.float() * 8 - 4)[:, None]


def _pooled(metric, ctx):
    counts = metric.compute(ctx)
    names = sorted(counts)
    matrix = torch.stack([counts[k] for k in names], dim=1).numpy()
    return float(Pooled(metric.pool, images=getattr(metric, "pools_images", False))(names, matrix))


def test_a_perfect_and_an_empty_segmenter():
    gt = torch.zeros(2, 8, 8, dtype=torch.long)
    gt[:, 2:4, 2:6] = 1  # 8 of 64 pixels
    perfect, empty = _ctx(_seg_logits(gt == 1), gt), _ctx(_seg_logits(torch.zeros(2, 8, 8, dtype=torch.bool)), gt)
    assert Q.ModelIoU().compute(perfect).tolist() == [1, 1] and Q.ModelF1().compute(perfect).tolist() == [1, 1]
    assert Q.ModelIoU().compute(empty).tolist() == [0, 0]
    assert _pooled(Q.ModelPooledIoU(), perfect) == 1 and _pooled(Q.ModelPooledIoU(), empty) == 0
    assert _pooled(Q.ModelTrivialIoU(), perfect) == 8 / 64  # the all-foreground mask's IoU


def test_pooled_iou_is_a_ratio_of_sums_not_a_mean_of_ratios():
    gt = torch.zeros(2, 4, 4, dtype=torch.long)
    gt[0, :2] = 1  # 8 pixels
    gt[1, 0, 0] = 1  # 1 pixel
    pred = torch.zeros(2, 4, 4, dtype=torch.bool)
    pred[0, :2] = True  # image 0 exact, image 1 missed
    ctx = _ctx(_seg_logits(pred), gt)
    assert Q.ModelIoU().compute(ctx).tolist() == [1, 0]
    assert math.isclose(_pooled(Q.ModelPooledIoU(), ctx), 8 / 9) and math.isclose(_pooled(Q.ModelPooledF1(), ctx), 16 / 17)


def test_classifier_metrics_match_the_libraries_on_random_data():
    g = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(40, 1, generator=g), torch.randint(0, 2, (40,), generator=g)
    logits[labels == 1] += 1.0
    ctx = _ctx(logits, labels=labels)
    pred = (logits[:, 0] > 0).long()
    assert torch.equal(Q.ModelAccuracy().compute(ctx), (pred == labels).float())
    assert math.isclose(_pooled(Q.ModelAUROC(), ctx), float(binary_auroc(torch.sigmoid(logits[:, 0]), labels)), abs_tol=1e-6)
    tp, fp, fn = int(((pred == 1) & (labels == 1)).sum()), int(((pred == 1) & (labels == 0)).sum()), int(((pred == 0) & (labels == 1)).sum())
    assert math.isclose(_pooled(Q.ModelLabelF1(), ctx), 2 * tp / (2 * tp + fp + fn))
    share = float(labels.float().mean())
    assert math.isclose(_pooled(Q.ModelMajorityRate(), ctx), max(share, 1 - share))
    assert Q.ModelAUROC().pools_images  # one statistic of all images, bootstrapped by resampling them


def test_auroc_by_hand_with_ties_and_undefined_without_both_labels():
    c = {"score": np.array([0.1, 0.4, 0.4, 0.8]), "label": np.array([0.0, 0.0, 1.0, 1.0])}
    assert Q._auroc(c) == (1 + 0.5 + 1 + 1) / 4  # pairs (pos, neg): (0.4, 0.1) 1, (0.4, 0.4) 1/2, (0.8, *) 1 and 1
    assert math.isnan(Q._auroc({"score": np.array([0.2, 0.3]), "label": np.array([1.0, 1.0])}))


def test_each_kind_of_model_is_nan_in_the_other_kinds_metrics():
    seg = _ctx(torch.zeros(2, 1, 4, 4), torch.zeros(2, 4, 4, dtype=torch.long))
    cls = _ctx(torch.zeros(2, 1), labels=torch.tensor([0, 1]))
    assert Q.ModelAccuracy().compute(seg).isnan().all() and all(v.isnan().all() for v in Q.ModelAUROC().compute(seg).values())
    assert Q.ModelIoU().compute(cls).isnan().all() and all(v.isnan().all() for v in Q.ModelPooledIoU().compute(cls).values())


def test_the_empty_mask_miou_per_image_and_pooled_against_hand_counts():
    """Image 0: 8 of 64 pixels are object -> (0 + 56/64) / 2; image 1: no object -> background only, 1."""
    gt = torch.zeros(2, 8, 8, dtype=torch.long)
    gt[0, 2:4, 2:6] = 1
    ctx = _ctx(_seg_logits(gt == 1), gt)
    per_image = Q.EmptyMaskMIoU().compute(ctx)
    assert torch.allclose(per_image, torch.tensor([56 / 64 / 2, 1.0]))
    # pooled: object IoU 0 over 8 object pixels, background IoU 120 / 128
    assert abs(_pooled(Q.EmptyMaskPooledMIoU(), ctx) - (120 / 128) / 2) < 1e-9
    # the value does not depend on the model (a classifier gets it too) but needs the truth
    assert torch.equal(Q.EmptyMaskMIoU().compute(_ctx(torch.zeros(2, 2), gt)), per_image)
    assert torch.isnan(Q.EmptyMaskMIoU().compute(_ctx(torch.zeros(2, 2)))).all()


def test_the_empty_mask_scores_what_the_miou_metrics_give_an_empty_binary_map():
    from xaibench.metrics.localization import LocalizationMIoU

    gt = torch.zeros(3, 8, 8, dtype=torch.long)
    gt[0, :3] = 1
    gt[1, 5:, 5:] = 1
    ctx = _ctx(_seg_logits(gt == 1), gt)
    ctx.heatmap = torch.zeros(3, 8, 8)
    ctx.binary = torch.zeros(3, 8, 8, dtype=torch.bool)
    ctx.target = Target(torch.ones(3, dtype=torch.long), None, torch.ones(3, dtype=torch.long))
    assert torch.allclose(LocalizationMIoU().compute(ctx), Q.EmptyMaskMIoU().compute(ctx))


def test_the_empty_mask_scores_only_images_with_the_object_when_its_miou_does():
    gt = torch.zeros(2, 8, 8, dtype=torch.long)
    gt[0, 2:4, 2:6] = 1  # image 1 has no object
    ctx = _ctx(_seg_logits(gt == 1), gt)
    got = Q.EmptyMaskMIoU(images="with_object").compute(ctx)
    assert abs(float(got[0]) - 56 / 64 / 2) < 1e-6 and math.isnan(float(got[1]))
    counts = Q.EmptyMaskPooledMIoU(images="with_object").compute(ctx)
    assert all(math.isnan(float(v[1])) for v in counts.values())  # NaN counts: image 1 left out of the pool
    assert abs(float(Q.EmptyMaskPooledMIoU.pool({k: v[:1].numpy() for k, v in counts.items()})[0]) - (56 / 64) / 2) < 1e-9
