"""Localisation against ground truth: the map (binarised at the cell's threshold, or as it is)
compared with the ground-truth region of the target class. Formulas in docs/metrics.md.

AUROC and the Hausdorff distance come from torchmetrics; values that are
undefined for an image (e.g. recall on an image without the object) are NaN and left out of
means and confidence intervals. The ``pooled_*`` metrics return per-image pixel counts and pool
them over the cell's images (ratio of sums; see :mod:`xaibench.metrics.base`).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torchmetrics.functional.classification import binary_auroc
from torchmetrics.functional.segmentation import hausdorff_distance

from xaibench.config.vocabulary import HIGHER, LOCALIZATION_MIOU, LOWER, POOLED_MIOU
from xaibench.metrics.base import MetricContext

NAN = float("nan")


def truth_region(ctx: MetricContext) -> torch.Tensor:
    """Ground-truth mask [B, H, W] (bool) of each image's target class."""
    if ctx.ground_truth is None:
        raise ValueError("localisation metrics need ground-truth masks")
    cls = ctx.target.class_ids.to(ctx.ground_truth.device)[:, None, None]
    return (ctx.ground_truth == cls).to(ctx.heatmap.device)


def _ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    num, den = num.double(), den.double()
    return torch.where(den > 0, num / den.clamp_min(1), torch.full_like(num, NAN)).float()


def _stats(ctx: MetricContext) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-image TP, FP, FN counts of the binarised map against the truth.

    Counted directly: torchmetrics' ``binary_stat_scores(multidim_average="samplewise")``
    fails on a batch of one image (it squeezes the batch dimension away, 1.9.0).
    """
    pred, truth = ctx.binary.flatten(1).bool(), truth_region(ctx).flatten(1)
    tp = (pred & truth).sum(1)
    return tp, (pred & ~truth).sum(1), (~pred & truth).sum(1)


def pixel_counts(ctx: MetricContext) -> dict[str, torch.Tensor]:
    """Per-image pixel counts ``tp``, ``fp``, ``fn``, ``tn`` of the binarised map against the truth."""
    tp, fp, fn = _stats(ctx)
    return {"tp": tp, "fp": fp, "fn": fn, "tn": ctx.binary[0].numel() - tp - fp - fn}


def _precision(c):
    return c["tp"] / (c["tp"] + c["fp"])


def _recall(c):
    return c["tp"] / (c["tp"] + c["fn"])


def _iou(c):
    return c["tp"] / (c["tp"] + c["fp"] + c["fn"])


def miou_from_counts(c):
    """Mean of the target IoU and the background IoU TN / (TN + FP + FN), over those defined."""
    fg, bg = _iou(c), c["tn"] / (c["tn"] + c["fp"] + c["fn"])
    return np.where(np.isnan(fg), bg, np.where(np.isnan(bg), fg, (fg + bg) / 2))


IMAGES = ("all", "with_object")


class _Localization:
    """Base of the metrics that compare a map with the ground truth.

    ``images = "with_object"`` scores only images whose ground truth holds the target class
    (NaN elsewhere), as detection + localisation studies do (ECSPLAIN averages Dice over the
    tiles with a moving area); the default ``"all"`` scores every image where the value is
    defined. Subclasses implement ``_compute``.
    """

    direction = HIGHER
    uses_threshold = False
    perturbation = None

    def __init__(self, images: str = "all"):
        if images not in IMAGES:
            raise ValueError(f"images must be one of {', '.join(IMAGES)}, got {images!r}")
        self.images = images

    def compute(self, ctx: MetricContext) -> torch.Tensor | dict[str, torch.Tensor]:
        out = self._compute(ctx)
        if isinstance(out, dict):  # a pooled metric's counts: NaN leaves an image out
            return {k: self._restrict(ctx, v.double()) for k, v in out.items()}
        return self._restrict(ctx, out.float())

    def _restrict(self, ctx: MetricContext, values: torch.Tensor) -> torch.Tensor:
        if self.images == "with_object":
            has = truth_region(ctx).flatten(1).any(1).to(values.device)
            values = torch.where(has, values, torch.full_like(values, NAN))
        return values

    def _compute(self, ctx: MetricContext) -> torch.Tensor | dict[str, torch.Tensor]:
        raise NotImplementedError


class _Binarised(_Localization):
    uses_threshold = True


class LocalizationIoU(_Binarised):
    """IoU of the binarised map with the ground-truth region: TP / (TP + FP + FN)."""

    name = "localization_iou"

    def _compute(self, ctx):
        tp, fp, fn = _stats(ctx)
        return _ratio(tp, tp + fp + fn)


class LocalizationPrecision(_Binarised):
    """Share of highlighted pixels inside the ground-truth region: TP / (TP + FP)."""

    name = "localization_precision"

    def _compute(self, ctx):
        tp, fp, _ = _stats(ctx)
        return _ratio(tp, tp + fp)


class LocalizationRecall(_Binarised):
    """Share of the ground-truth region highlighted: TP / (TP + FN)."""

    name = "localization_recall"

    def _compute(self, ctx):
        tp, _, fn = _stats(ctx)
        return _ratio(tp, tp + fn)


class LocalizationF1(_Binarised):
    """F1 (Dice) of the binarised map and the ground truth: 2 TP / (2 TP + FP + FN)."""

    name = "localization_f1"

    def _compute(self, ctx):
        tp, fp, fn = _stats(ctx)
        return _ratio(2 * tp, 2 * tp + fp + fn)


class LocalizationMIoU(_Binarised):
    """Mean IoU of the two classes, object and background: the mean of TP / (TP + FP + FN) and
    TN / (TN + FP + FN), over those defined."""

    name = LOCALIZATION_MIOU

    def _compute(self, ctx):
        counts = {k: v.double().cpu().numpy() for k, v in pixel_counts(ctx).items()}
        with np.errstate(divide="ignore", invalid="ignore"):
            return torch.from_numpy(miou_from_counts(counts)).float()


class _Pooled(_Binarised):
    """A pixel metric pooled over the cell's images: ``compute`` gives each image's ``counts``,
    the dataset statistic is ``pool`` of their sums (each image's value: ``pool`` of its own)."""

    counts: tuple[str, ...] = ()

    def _compute(self, ctx):
        c = pixel_counts(ctx)
        return {k: c[k] for k in self.counts}


class PooledPrecision(_Pooled):
    """Precision of all pixels of the cell's images: sum TP / sum (TP + FP)."""

    name = "pooled_precision"
    counts = ("tp", "fp")
    pool = staticmethod(_precision)


class PooledRecall(_Pooled):
    """Recall of all pixels of the cell's images: sum TP / sum (TP + FN)."""

    name = "pooled_recall"
    counts = ("tp", "fn")
    pool = staticmethod(_recall)


class PooledIoU(_Pooled):
    """IoU of all pixels of the cell's images: sum TP / sum (TP + FP + FN)."""

    name = "pooled_iou"
    counts = ("tp", "fp", "fn")
    pool = staticmethod(_iou)


class PooledMIoU(_Pooled):
    """Mean of the pooled object IoU and the pooled background IoU sum TN / sum (TN + FP + FN)."""

    name = POOLED_MIOU
    counts = ("tp", "fp", "fn", "tn")
    pool = staticmethod(miou_from_counts)


class Hausdorff(_Binarised):
    """Symmetric Hausdorff distance (pixels) between the binarised map and the ground truth."""

    name = "hausdorff"
    direction = LOWER

    def _compute(self, ctx):
        truth = truth_region(ctx)
        binary = ctx.binary.bool()
        # Only images where both sets are non-empty: torchmetrics raises when both are empty.
        ok = binary.flatten(1).any(1) & truth.flatten(1).any(1)
        out = torch.full((binary.shape[0],), NAN, device=binary.device)
        if ok.any():
            d = hausdorff_distance(binary[ok].long(), truth[ok].long(), num_classes=2, include_background=False, input_format="index")[:, 0]
            d = d.float().to(out.device)
            out[ok] = torch.where(torch.isfinite(d), d, torch.full_like(d, NAN))
        return out


class AUROC(_Localization):
    """Area under the ROC curve of the map's values as a pixel classifier of the ground truth."""

    name = "auroc"

    def _compute(self, ctx):
        truth = truth_region(ctx)
        out = []
        for m, t in zip(ctx.heatmap, truth):
            if t.all() or not t.any():
                out.append(NAN)
            else:
                out.append(float(binary_auroc(m.flatten(), t.flatten().long())))
        return torch.tensor(out)


class MAE(_Localization):
    """Mean absolute error between the map and the binary ground truth."""

    name = "mae"
    direction = LOWER

    def _compute(self, ctx):
        return (ctx.heatmap - truth_region(ctx).float()).abs().flatten(1).mean(1)


class PointingGame(_Localization):
    """1 if the map's maximum falls inside the ground-truth region (within ``tolerance``
    pixels), else 0; NaN for images without the object (Zhang et al. 2018). A map with no peak
    (constant: all zero, say) scores NaN, as ``energy_pointing_game`` does; where several pixels
    share the maximum, the score is the share of them inside the region (the expected hit when
    the tie is broken at random), not whichever comes first in row-major order."""

    name = "pointing_game"

    def __init__(self, tolerance: int = 0, images: str = "all"):
        super().__init__(images)
        self.tolerance = tolerance

    def _compute(self, ctx):
        truth = truth_region(ctx).float()
        if self.tolerance:
            k = 2 * self.tolerance + 1
            truth = torch.nn.functional.max_pool2d(truth[:, None], k, stride=1, padding=self.tolerance)[:, 0]
        flat = ctx.heatmap.flatten(1)
        top = flat.max(1, keepdim=True).values
        peak = flat == top  # every pixel at the maximum
        hit = (peak & truth.flatten(1).bool()).sum(1) / peak.sum(1)
        has_peak = flat.min(1).values < top[:, 0]
        has = truth_region(ctx).flatten(1).any(1)
        return torch.where(has & has_peak, hit.to(flat.dtype), torch.full_like(hit, NAN, dtype=flat.dtype))


class EnergyPointingGame(_Localization):
    """Share of the map's energy inside the ground-truth region, sum(map * gt) / sum(map)
    (Score-CAM paper); NaN for images without the object or with an all-zero map."""

    name = "energy_pointing_game"

    def _compute(self, ctx):
        truth = truth_region(ctx).float()
        inside = (ctx.heatmap * truth).flatten(1).sum(1)
        total = ctx.heatmap.flatten(1).sum(1)
        has = truth.flatten(1).any(1)
        return torch.where(has & (total > 0), inside / total.clamp_min(1e-12), torch.full_like(total, NAN))


def _confidence(logits: torch.Tensor, ctx: MetricContext, rows: torch.Tensor) -> torch.Tensor:
    from xaibench.engine.targets import probabilities
    from xaibench.metrics.faithfulness import region_mean, target_region

    probs = probabilities(logits)
    cls = ctx.target.class_ids.to(probs.device)[rows]
    p = probs[torch.arange(probs.shape[0], device=probs.device), cls]
    if p.ndim == 1:
        return p
    return region_mean(p, target_region(ctx).to(p.device)[rows])


class _Curve:
    """Deletion / insertion (Petsiuk et al. 2018): pixels ordered by the map, most salient first,
    are removed from the image (deletion) or revealed on the fill (insertion) in ``steps``
    equal parts; the score is the target confidence after each step and the metric its area
    under the curve (trapezoids on [0, 1]). All steps of all images go through the model in
    batched chunks."""

    uses_threshold = False
    perturbation = None
    insert = False

    def __init__(self, steps: int = 16):
        if steps < 1:
            raise ValueError("steps must be >= 1")
        self.steps = steps

    def compute(self, ctx):
        b = ctx.images.shape[0]
        order = ctx.heatmap.flatten(1).argsort(dim=1, descending=True)
        rank = torch.empty_like(order)
        rank.scatter_(1, order, torch.arange(order.shape[1], device=order.device).expand_as(order))
        n = order.shape[1]
        inputs, rows = [], []
        for k in range(self.steps + 1):
            shown = (rank < math.ceil(n * k / self.steps)).reshape(ctx.heatmap.shape)  # [B, H, W]
            keep = shown if self.insert else ~shown
            keep = keep[:, None].to(ctx.images.dtype)
            inputs.append(ctx.images * keep + ctx.fill * (1 - keep))
            rows.append(torch.arange(b, device=ctx.images.device))
        logits = ctx.forward(torch.cat(inputs))
        conf = _confidence(logits, ctx, torch.cat(rows)).reshape(self.steps + 1, b)
        return torch.trapezoid(conf.T.double(), dx=1.0 / self.steps).float()


class DeletionAUC(_Curve):
    """Area under the deletion curve: a faithful map makes confidence fall fast (lower is better)."""

    name = "deletion_auc"
    direction = LOWER
    insert = False


class InsertionAUC(_Curve):
    """Area under the insertion curve: a faithful map makes confidence rise fast (higher is better)."""

    name = "insertion_auc"
    direction = HIGHER
    insert = True
