import math

import pytest
import torch

from xaibench.engine.perturbation import top_fraction
from xaibench.engine.targets import Target
from xaibench.metrics.base import MetricContext, direction
from xaibench.metrics.faithfulness import Confidence, Entropy, IoUDrop, TopKIoUDrop, binary_iou

BIG = 20.0  # a logit this large is a probability of 1 to float precision


def _ctx(perturbed, logits=None, region=None, gt=None):
    b, _, h, w = perturbed.shape
    region = torch.ones(b, h, w) if region is None else region
    return MetricContext(
        images=torch.zeros(b, 3, h, w),
        ground_truth=gt,
        target=Target(torch.zeros(b, dtype=torch.long), region, torch.ones(b, dtype=torch.long)),
        logits=perturbed if logits is None else logits,
        heatmap=torch.zeros(b, h, w),
        forward=lambda x: None,
        fill=torch.zeros(b, 3, h, w),
        perturbed_logits=perturbed,
    )


def test_confidence_is_the_mean_target_probability_over_the_region():
    logits = torch.full((2, 1, 4, 4), -BIG)
    logits[0] = BIG  # image 0: certain object everywhere; image 1: certain background
    region = torch.zeros(2, 4, 4)
    region[:, :2] = 1
    got = Confidence().compute(_ctx(logits, region=region))
    assert torch.allclose(got, torch.tensor([1.0, 0.0]), atol=1e-6)
    half = Confidence().compute(_ctx(torch.zeros(1, 1, 4, 4)))
    assert torch.allclose(half, torch.tensor([0.5]))
    empty = Confidence().compute(_ctx(logits[:1], region=torch.zeros(1, 4, 4)))
    assert math.isnan(float(empty[0]))


def test_entropy_is_zero_when_certain_and_log2_when_undecided():
    assert Entropy().compute(_ctx(torch.full((1, 1, 4, 4), BIG)))[0] < 1e-6
    assert torch.allclose(Entropy().compute(_ctx(torch.zeros(1, 1, 4, 4))), torch.tensor([math.log(2)]))


def test_iou_drop_of_a_map_that_removed_the_object_is_minus_the_clean_iou():
    gt = torch.zeros(1, 4, 4, dtype=torch.long)
    gt[0, :2] = 1
    clean = torch.where(gt[:, None] == 1, BIG, -BIG).float()  # a perfect prediction: IoU 1
    removed = torch.full_like(clean, -BIG)  # after removal nothing is predicted: IoU 0
    assert torch.allclose(IoUDrop().compute(_ctx(removed, logits=clean, gt=gt)), torch.tensor([-1.0]))
    assert torch.allclose(IoUDrop().compute(_ctx(clean, logits=clean, gt=gt)), torch.tensor([0.0]))


def test_binary_iou_and_directions():
    a = torch.zeros(2, 4, 4, dtype=torch.bool)
    b = torch.zeros(2, 4, 4, dtype=torch.bool)
    a[0, :2], b[0, :1] = True, True
    got = binary_iou(a, b)
    assert abs(float(got[0]) - 0.5) < 1e-6 and math.isnan(float(got[1]))
    assert direction(Confidence(), "background_only") == "lower"
    assert direction(Confidence(), "highlighted_only") == "higher"
    assert direction(IoUDrop(), "background_only") == "lower"


def test_relative_iou_drop_divides_by_the_clean_iou():
    from xaibench.metrics.faithfulness import RelativeIoUDrop

    gt = torch.zeros(2, 4, 4, dtype=torch.long)
    gt[:, :2] = 1  # 8 object pixels
    clean = torch.full((2, 1, 4, 4), -BIG)
    clean[0, 0, :2] = BIG  # image 0: perfect, IoU 1
    clean[1, 0, :1] = BIG  # image 1: half the object, IoU 0.5
    after = torch.full_like(clean, -BIG)
    after[:, 0, :1, :2] = BIG  # 2 correct pixels left: IoU 0.25 on both
    got = RelativeIoUDrop().compute(_ctx(after, logits=clean, gt=gt))
    assert torch.allclose(got, torch.tensor([(0.25 - 1) / 1, (0.25 - 0.5) / 0.5]))
    plain = IoUDrop().compute(_ctx(after, logits=clean, gt=gt))
    assert torch.allclose(plain, torch.tensor([-0.75, -0.25]))  # the plain drop is bounded by the clean IoU
    nothing = torch.full_like(clean, -BIG)
    assert torch.isnan(RelativeIoUDrop().compute(_ctx(after, logits=nothing, gt=gt))).all()  # clean IoU 0


def _bright_model(x):
    """A 'segmenter' that predicts the object wherever the first channel is bright (> 0.5)."""
    return torch.where(x[:, :1] > 0.5, BIG, -BIG)


def _topk_ctx(heatmap):
    """One 10 x 10 image, bright (and the object) on its first 4 rows: 40 pixels; fill zero."""
    images = torch.zeros(1, 3, 10, 10)
    images[:, :, :4] = 1.0
    gt = torch.zeros(1, 10, 10, dtype=torch.long)
    gt[:, :4] = 1
    calls = []

    def forward(x):
        calls.append(x.shape[0])
        return _bright_model(x)

    ctx = MetricContext(
        images=images, ground_truth=gt, target=Target(torch.ones(1, dtype=torch.long), None, torch.ones(1, dtype=torch.long)),
        logits=_bright_model(images), heatmap=heatmap, forward=forward, fill=torch.zeros(1, 3, 10, 10),
    )
    return ctx, calls


def test_area_controlled_iou_drop_removes_exactly_k_percent_and_averages_over_k():
    # a map highest on the object: removing 5 / 10 / 20 of its 40 pixels leaves IoU 35/40, 30/40, 20/40
    on_object = torch.zeros(1, 10, 10)
    on_object[:, :4] = torch.linspace(1.0, 0.5, 40).reshape(4, 10)
    ctx, calls = _topk_ctx(on_object)
    got = TopKIoUDrop().compute(ctx)
    expected = ((35 / 40 - 1) + (30 / 40 - 1) + (20 / 40 - 1)) / 3
    assert abs(float(got[0]) - expected) < 1e-6 and calls == [3]  # one batched forward, 3 inputs
    # a map highest off the object removes only background: nothing changes, whatever it covers
    off_object = 1.0 - on_object
    assert float(TopKIoUDrop().compute(_topk_ctx(off_object)[0])[0]) == 0.0
    # own percents; a map with no peak scores nothing (NaN), as the pointing game on a blank map
    assert abs(float(TopKIoUDrop(percents=[10]).compute(_topk_ctx(on_object)[0])[0]) - (30 / 40 - 1)) < 1e-6
    assert math.isnan(float(TopKIoUDrop().compute(_topk_ctx(torch.full((1, 10, 10), 0.3))[0])[0]))


def test_top_fraction_ties_break_row_major_and_area_is_exact():
    flat = torch.zeros(1, 4, 5)
    got = top_fraction(flat, 10)  # 2 of 20 pixels, all tied: the first two in row-major order
    assert got.sum() == 2 and got[0, 0, :2].all()
    ramp = torch.arange(20.0).reshape(1, 4, 5)
    assert top_fraction(ramp, 25)[0].flatten().nonzero().flatten().tolist() == [15, 16, 17, 18, 19]


def test_area_controlled_iou_drop_rejects_percents_outside_0_100():
    for bad in ([], [0], [100], [5, 120]):
        with pytest.raises(ValueError, match="percents"):
            TopKIoUDrop(percents=bad)


def test_the_clean_iou_is_reused_across_cells_only_while_its_inputs_are_the_same_tensors_unchanged():
    from types import SimpleNamespace

    from xaibench.engine.targets import resolve
    from xaibench.metrics.faithfulness import clean_iou

    torch.manual_seed(0)
    logits, gt = torch.randn(2, 1, 8, 8), (torch.rand(2, 8, 8) > 0.5).long()
    ctx = SimpleNamespace(logits=logits, ground_truth=gt, target=resolve(None, logits))
    cls, truth = torch.ones(2, 1, 1, dtype=torch.long), gt == 1

    def fresh():
        return binary_iou((logits[:, 0] > 0).long() == cls, truth)

    first = clean_iou(ctx, cls, truth)
    assert clean_iou(ctx, cls, truth) is first  # the next cell of the batch: reused
    logits.neg_()  # changed in place: computed again
    assert torch.equal(clean_iou(ctx, cls, truth), fresh()) and not torch.equal(first, fresh())
    with torch.inference_mode():
        frozen = logits.clone()
    ctx.logits = frozen  # no version counter: never reused
    assert clean_iou(ctx, cls, truth) is not clean_iou(ctx, cls, truth)
