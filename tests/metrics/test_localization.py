"""Localisation metrics on maps whose answer is known: equal to the truth, empty, inverted."""

import math

import pytest
import torch

from xaibench.metrics import localization as L
from xaibench.metrics.base import MetricContext
from xaibench.targets import Target


def _ctx(heatmap, gt, threshold=0.5, logits=None):
    b = heatmap.shape[0]
    return MetricContext(
        images=torch.rand(b, 3, *heatmap.shape[-2:]),
        ground_truth=gt,
        target=Target(torch.zeros(b, dtype=torch.long), None, torch.ones(b, dtype=torch.long)),
        logits=logits if logits is not None else torch.zeros(b, 1, *heatmap.shape[-2:]),
        heatmap=heatmap,
        forward=lambda x: torch.zeros(x.shape[0], 1, *x.shape[-2:]),
        fill=torch.zeros(b, 3, *heatmap.shape[-2:]),
        threshold=torch.full((b,), threshold),
        binary=heatmap >= threshold,
    )


@pytest.fixture
def gt():
    g = torch.zeros(1, 8, 8, dtype=torch.long)
    g[0, 2:6, 2:6] = 1
    return g


def values(heatmap, gt):
    ctx = _ctx(heatmap, gt)
    names = [L.LocalizationIoU, L.LocalizationPrecision, L.LocalizationRecall, L.LocalizationF1, L.AUROC, L.MAE, L.PointingGame, L.EnergyPointingGame, L.Hausdorff]
    return {c.name: float(c().compute(ctx)[0]) for c in names}


def test_a_map_equal_to_the_truth_is_perfect(gt):
    v = values(gt.float(), gt)
    assert v["localization_iou"] == v["localization_precision"] == v["localization_recall"] == v["localization_f1"] == 1
    assert v["auroc"] == 1 and v["mae"] == 0 and v["pointing_game"] == 1 and v["energy_pointing_game"] == 1
    assert v["hausdorff"] == 0


def test_an_inverted_map_is_worst(gt):
    v = values(1 - gt.float(), gt)
    assert v["localization_iou"] == v["localization_precision"] == v["localization_recall"] == v["localization_f1"] == 0
    assert v["auroc"] == 0 and v["mae"] == 1 and v["pointing_game"] == 0 and v["energy_pointing_game"] == 0
    assert v["hausdorff"] > 0


def test_an_empty_map_has_zero_recall_and_undefined_precision(gt):
    v = values(torch.zeros(1, 8, 8), gt)
    assert v["localization_recall"] == 0 and v["localization_iou"] == 0
    assert math.isnan(v["localization_precision"]) and math.isnan(v["energy_pointing_game"]) and math.isnan(v["hausdorff"])


def test_half_right_map(gt):
    h = torch.zeros(1, 8, 8)
    h[0, 2:6, 2:4] = 1.0  # half the object, nothing else
    v = values(h, gt)
    assert v["localization_precision"] == 1 and v["localization_recall"] == 0.5
    assert abs(v["localization_iou"] - 0.5) < 1e-6 and abs(v["localization_f1"] - 2 / 3) < 1e-6


def test_no_object_makes_truth_based_scores_undefined():
    empty = torch.zeros(1, 8, 8, dtype=torch.long)
    v = values(torch.rand(1, 8, 8), empty)
    assert math.isnan(v["localization_recall"]) and math.isnan(v["auroc"]) and math.isnan(v["pointing_game"])


def test_pointing_game_tolerance(gt):
    h = torch.zeros(1, 8, 8)
    h[0, 1, 1] = 1.0  # one pixel diagonal to the object
    assert L.PointingGame().compute(_ctx(h, gt))[0] == 0
    assert L.PointingGame(tolerance=1).compute(_ctx(h, gt))[0] == 1


def test_deletion_and_insertion_follow_the_map(gt):
    """A model whose confidence is the share of object pixels left: the true map deletes fastest."""

    def forward(x):
        inside = (x[:, 0] * (gt[0] == 1)).sum((1, 2)) / 16.0  # share of object intensity kept
        logit = torch.logit(inside.clamp(1e-4, 1 - 1e-4))
        return logit[:, None, None, None].expand(-1, 1, 8, 8)

    img = torch.ones(1, 3, 8, 8)
    good, bad = gt.float(), 1 - gt.float()

    def curve(cls, heat):
        ctx = _ctx(heat, gt)
        ctx.images = img
        ctx.forward = forward
        ctx.target = Target(torch.zeros(1, dtype=torch.long), torch.ones(1, 8, 8), torch.ones(1, dtype=torch.long))
        return float(cls(steps=8).compute(ctx)[0])

    assert curve(L.DeletionAUC, good) < curve(L.DeletionAUC, bad)
    assert curve(L.InsertionAUC, good) > curve(L.InsertionAUC, bad)


def test_hausdorff_on_a_batch_with_an_image_where_map_and_truth_are_both_empty(gt):
    # torchmetrics raises on an image with both sets empty; such an image must give NaN, not abort the batch
    truth = torch.cat([gt, torch.zeros_like(gt)])
    heat = torch.cat([gt.float(), torch.zeros(1, 8, 8)])
    d = L.Hausdorff().compute(_ctx(heat, truth))
    assert d[0] == 0 and math.isnan(d[1])


@pytest.mark.parametrize("cls", [L.LocalizationIoU, L.LocalizationPrecision, L.LocalizationF1, L.MAE, L.Hausdorff])
def test_images_with_object_leaves_images_without_the_object_out(cls, gt):
    truth = torch.cat([gt, torch.zeros_like(gt)])
    heat = torch.cat([gt.float(), torch.rand(1, 8, 8)])  # second image: no object, the map highlights something
    everywhere = cls().compute(_ctx(heat, truth))
    positives = cls(images="with_object").compute(_ctx(heat, truth))
    assert positives[0] == everywhere[0]
    assert math.isnan(positives[1])
    if cls is not L.Hausdorff:
        assert not math.isnan(everywhere[1])  # defined on the negative image unless restricted


def test_images_rejects_an_unknown_value():
    with pytest.raises(ValueError, match="with_object"):
        L.LocalizationIoU(images="positive")
