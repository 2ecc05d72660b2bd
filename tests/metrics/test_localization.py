"""Localisation metrics on maps whose answer is known: equal to the truth, empty, inverted."""

import math

import pytest
import torch

from xaibench.engine.targets import Target
from xaibench.metrics import localization as L
from xaibench.metrics.base import MetricContext


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


@pytest.mark.parametrize("fill", [0.0, 0.7])
def test_a_map_without_a_peak_does_not_score_in_the_pointing_game(gt, fill):
    # before: argmax of a constant map is pixel (0, 0), a hit whenever (0, 0) is in the object
    corner = gt.clone()
    corner[0, 0, 0] = 1
    for truth in (gt, corner):
        assert math.isnan(float(L.PointingGame().compute(_ctx(torch.full((1, 8, 8), fill), truth))[0]))


def test_tied_maxima_score_the_share_of_them_inside_the_object(gt):
    h = torch.zeros(1, 8, 8)
    h[0, 0, 0] = h[0, 3, 3] = 1.0  # one peak outside, one inside (row-major first is outside)
    assert float(L.PointingGame().compute(_ctx(h, gt))[0]) == 0.5
    h[0, 4, 4] = h[0, 5, 5] = 1.0  # three of four peaks inside
    assert float(L.PointingGame().compute(_ctx(h, gt))[0]) == 0.75


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


# -- pixel counts pooled over images -----------------------------------------------------------------


def _two_images():
    """A: truth row 0, map row 0 (TP 4). B: truth rows 0-2, map row 0 and two pixels of row 3
    (TP 4, FP 2, FN 8, TN 2). 4 x 4 pixels each."""
    gt = torch.zeros(2, 4, 4, dtype=torch.long)
    gt[0, 0], gt[1, :3] = 1, 1
    heat = torch.zeros(2, 4, 4)
    heat[:, 0] = 1.0
    heat[1, 3, :2] = 1.0
    return heat, gt


def _scored(cls, heat, gt, **params):
    from xaibench.registry.contracts import check_scores

    m = cls(**params)
    return check_scores(m.compute(_ctx(heat, gt)), m, cls.name, heat.shape[0], "a test")


def _pooled(cls, counts):
    from xaibench.report.stats import Pooled

    names = sorted(counts)
    matrix = torch.stack([counts[k] for k in names], 1).numpy()
    return float(Pooled(cls.pool)(names, matrix[~torch.stack(list(counts.values())).isnan().any(0).numpy()]))


def test_pooled_iou_is_a_ratio_of_sums_not_the_mean_of_image_ious():
    heat, gt = _two_images()
    values, counts = _scored(L.PooledIoU, heat, gt)
    assert counts["tp"].tolist() == [4, 4] and counts["fp"].tolist() == [0, 2] and counts["fn"].tolist() == [0, 8]
    assert values.tolist() == pytest.approx([1, 2 / 7])  # the image's own IoU: 4 / 14
    assert float(values.mean()) == pytest.approx(9 / 14)  # what localization_iou's mean would say
    assert _pooled(L.PooledIoU, counts) == pytest.approx(8 / 18)  # sum TP / sum (TP + FP + FN)
    assert _pooled(L.PooledPrecision, _scored(L.PooledPrecision, heat, gt)[1]) == pytest.approx(8 / 10)  # mean of images: 5/6
    assert _pooled(L.PooledRecall, _scored(L.PooledRecall, heat, gt)[1]) == pytest.approx(8 / 16)  # mean of images: 2/3
    # for pooled counts IoU = 1 / (1/P + 1/R - 1) exactly: 1 / (1.25 + 2 - 1) = 4/9
    assert 1 / (1 / 0.8 + 1 / 0.5 - 1) == pytest.approx(_pooled(L.PooledIoU, counts))


def test_miou_is_the_mean_of_object_and_background_iou():
    heat, gt = _two_images()
    v, counts = _scored(L.PooledMIoU, heat, gt)
    assert counts["tn"].tolist() == [12, 2]
    assert v.tolist() == pytest.approx([1, (2 / 7 + 2 / 12) / 2]) and (2 / 7 + 2 / 12) / 2 == pytest.approx(19 / 84)  # B: background 2 / (2 + 2 + 8)
    assert L.LocalizationMIoU().compute(_ctx(heat, gt)).tolist() == v.tolist()
    assert _pooled(L.PooledMIoU, counts) == pytest.approx((8 / 18 + 14 / 24) / 2)  # 37/72


def test_pooled_metrics_score_each_image_as_the_per_image_metric():
    torch.manual_seed(0)
    gt = (torch.rand(5, 8, 8) > 0.6).long()
    gt[0] = 0  # no object
    heat = torch.rand(5, 8, 8)
    heat[1] = 0  # nothing highlighted
    for pooled, plain in [(L.PooledPrecision, L.LocalizationPrecision), (L.PooledRecall, L.LocalizationRecall), (L.PooledIoU, L.LocalizationIoU), (L.PooledMIoU, L.LocalizationMIoU)]:
        values, _ = _scored(pooled, heat, gt)
        assert torch.equal(values.isnan(), plain().compute(_ctx(heat, gt)).isnan())
        assert torch.equal(values.nan_to_num(-1), plain().compute(_ctx(heat, gt)).nan_to_num(-1)), pooled.name


def test_an_image_without_the_object_enters_the_pool_unless_images_is_with_object():
    heat, gt = _two_images()
    heat = torch.cat([heat, torch.zeros(2, 4, 4)])
    heat[2, 1, :3] = 1.0  # C: no object, 3 pixels highlighted (FP 3); D: no object, nothing highlighted
    gt = torch.cat([gt, torch.zeros(2, 4, 4, dtype=torch.long)])
    values, counts = _scored(L.PooledIoU, heat, gt)
    assert values[2] == 0 and math.isnan(values[3])  # D: IoU undefined, but its (zero) counts enter the pool
    assert _pooled(L.PooledIoU, counts) == pytest.approx(8 / 21)
    miou = L.LocalizationMIoU().compute(_ctx(heat, gt))
    assert miou[2] == pytest.approx(13 / 32) and miou[3] == 1  # D: only the background IoU is defined
    values, counts = _scored(L.PooledIoU, heat, gt, images="with_object")
    assert values[:2].tolist() == pytest.approx([1, 2 / 7]) and values[2:].isnan().all() and counts["tp"][2:].isnan().all()
    assert _pooled(L.PooledIoU, counts) == pytest.approx(8 / 18)
