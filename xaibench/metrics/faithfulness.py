"""Faithfulness by perturbation (the WHU study's M1 / M2 / M3 and IoU drop).

Each reads the model's output on the input perturbed according to the cell's mode (see
:mod:`xaibench.engine.perturbation`). Formulas are in docs/metrics.md.
"""

from __future__ import annotations

import weakref

import torch
from torchmetrics.functional.segmentation import mean_iou

from xaibench.config.vocabulary import BACKGROUND_ONLY, CONFIDENCE, ENTROPY, HIGHER, IOU_DROP, IOU_DROP_RELATIVE, IOU_DROP_TOPK, LOWER
from xaibench.engine.perturbation import perturb, top_fraction
from xaibench.engine.targets import predicted_classes, probabilities
from xaibench.metrics.base import MetricContext


def target_region(ctx: MetricContext) -> torch.Tensor:
    """The target region [B, H, W] (the ground truth for classifiers, which have none)."""
    if ctx.target.region is not None:
        return ctx.target.region.float()
    if ctx.ground_truth is None:
        raise ValueError("this metric needs a target region or ground-truth masks")
    return (ctx.ground_truth == ctx.target.class_ids.to(ctx.ground_truth.device)[:, None, None]).float()


def region_mean(values: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """Mean of values [B, H, W] over region [B, H, W]; NaN where the region is empty."""
    area = region.sum(dim=(1, 2))
    total = (values * region).sum(dim=(1, 2))
    return torch.where(area > 0, total / area.clamp_min(1), torch.full_like(total, float("nan")))


def binary_iou(pred: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Per-image IoU of two boolean masks [B, H, W] (torchmetrics); NaN where both are empty."""
    iou = mean_iou(pred.long(), truth.long(), num_classes=2, include_background=False, per_class=True, input_format="index")[:, 0]
    return torch.where(iou < 0, torch.full_like(iou, float("nan")), iou)


class Confidence:
    """Mean predicted probability of the target class over the target region, on the perturbed input."""

    name = CONFIDENCE
    direction = HIGHER  # M2, M3: a faithful map keeps the model confident
    directions = {BACKGROUND_ONLY: LOWER}  # M1: removing a faithful map's region makes confidence drop
    uses_threshold = True
    perturbation = "cell"

    def compute(self, ctx: MetricContext) -> torch.Tensor:
        logits = ctx.perturbed_logits
        cls = ctx.target.class_ids.to(logits.device)
        if logits.ndim == 4 and logits.shape[1] == 1:  # a sigmoid: the target's channel of probabilities() without the other
            p = torch.sigmoid(logits[:, 0])
            p = torch.where(cls[:, None, None] == 1, p, 1 - p)
            return region_mean(p, target_region(ctx).to(p.device))
        probs = probabilities(logits)
        if probs.ndim == 2:
            return probs[torch.arange(probs.shape[0]), cls]
        p = probs[torch.arange(probs.shape[0]), cls]
        return region_mean(p, target_region(ctx).to(p.device))


class Entropy:
    """Mean per-pixel prediction entropy (nats) over the target region, on the perturbed input."""

    name = ENTROPY
    direction = LOWER
    uses_threshold = True
    perturbation = "cell"

    def compute(self, ctx: MetricContext) -> torch.Tensor:
        logits = ctx.perturbed_logits
        if logits.ndim == 4 and logits.shape[1] == 1:  # probabilities()' two channels, summed as .sum(dim=1) does
            p = torch.sigmoid(logits[:, 0])
            q = 1 - p
            ent = -(q * torch.log(q.clamp_min(1e-12)) + p * torch.log(p.clamp_min(1e-12)))
        else:
            probs = probabilities(logits)
            ent = -(probs * torch.log(probs.clamp_min(1e-12))).sum(dim=1)
        if ent.ndim == 1:
            return ent
        return region_mean(ent, target_region(ctx).to(ent.device))


class IoUDrop:
    """IoU with ground truth of the prediction on the input with the highlighted region removed,
    minus the IoU of the prediction on the original input. Negative: the map found what mattered."""

    name = IOU_DROP
    direction = LOWER
    uses_threshold = True
    perturbation = BACKGROUND_ONLY

    def compute(self, ctx: MetricContext) -> torch.Tensor:
        before, after = _ious(ctx, self.name)
        return after - before


def _target_truth(ctx: MetricContext, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Each image's target class [B, 1, 1] and its ground-truth mask [B, H, W], on the logits' device."""
    if ctx.ground_truth is None or ctx.logits.ndim != 4:
        raise ValueError(f"{name} needs a segmentation model and ground-truth masks")
    cls = ctx.target.class_ids.to(ctx.logits.device)[:, None, None]
    return cls, ctx.ground_truth.to(ctx.logits.device) == cls


def _ious(ctx: MetricContext, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image IoU with the ground truth of the prediction on the clean and the perturbed input."""
    cls, truth = _target_truth(ctx, name)
    return clean_iou(ctx, cls, truth), binary_iou(predicted_classes(ctx.perturbed_logits) == cls, truth)


_LAST_CLEAN: list[tuple] = []  # (logits, ground truth, target: weak references; versions; IoU) of the last batch


def clean_iou(ctx: MetricContext, cls: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Per-image IoU of the prediction on the clean input with the ground truth: the same for
    every cell of a batch, so computed once per batch (the same tensors, unchanged) and reused."""
    if ctx.logits.is_inference() or ctx.ground_truth.is_inference():  # no version counter to tell a change by
        return binary_iou(predicted_classes(ctx.logits) == cls, truth)
    versions = (ctx.logits._version, ctx.ground_truth._version)
    if _LAST_CLEAN:
        logits, gt, target, seen, iou = _LAST_CLEAN[0]
        if logits() is ctx.logits and gt() is ctx.ground_truth and target() is ctx.target and seen == versions:
            return iou
    iou = binary_iou(predicted_classes(ctx.logits) == cls, truth)
    _LAST_CLEAN[:] = [(weakref.ref(ctx.logits), weakref.ref(ctx.ground_truth), weakref.ref(ctx.target), versions, iou)]
    return iou


class RelativeIoUDrop(IoUDrop):
    """:class:`IoUDrop` as a fraction of the clean IoU: -1 = the removal took every correct pixel
    away, 0 = nothing changed; comparable across images and models of different quality."""

    name = IOU_DROP_RELATIVE

    def compute(self, ctx: MetricContext) -> torch.Tensor:
        before, after = _ious(ctx, self.name)
        return torch.where(before > 0, (after - before) / before.clamp_min(1e-12), torch.full_like(before, float("nan")))


class TopKIoUDrop:
    """Area-controlled IoU drop: per image, the IoU with the ground truth of the prediction on the
    input with the top k % of pixels by the map removed (replaced by the run's fill), minus the
    clean IoU, averaged over k in ``percents``. Every map removes the same area, so a map cannot
    win by covering more (as it can under :class:`IoUDrop` at a low threshold). A map without a
    peak (constant) ranks no pixel: NaN, the image left out."""

    name = IOU_DROP_TOPK
    direction = LOWER
    uses_threshold = False
    perturbation = None

    def __init__(self, percents: list[float] | tuple[float, ...] = (5, 10, 20)):
        percents = tuple(float(k) for k in percents)
        if not percents or any(not 0 < k < 100 for k in percents):
            raise ValueError(f"percents must be one or more numbers in (0, 100), got {list(percents)}")
        self.percents = percents

    def compute(self, ctx: MetricContext) -> torch.Tensor:
        cls, truth = _target_truth(ctx, self.name)
        before = clean_iou(ctx, cls, truth)
        heat = ctx.heatmap.to(ctx.images.device)
        inputs = torch.cat([perturb(ctx.images, ~top_fraction(heat, k), ctx.fill) for k in self.percents])
        n = len(self.percents)  # the inputs are the percents' batches one after the other
        after = binary_iou(predicted_classes(ctx.forward(inputs)).to(truth.device) == cls.repeat(n, 1, 1), truth.repeat(n, 1, 1))
        drop = (after.reshape(n, -1) - before[None]).mean(0)
        flat = heat.flatten(1)
        blank = (flat.amax(1) - flat.amin(1)) <= 0
        return torch.where(blank.to(drop.device), torch.full_like(drop, float("nan")), drop)
