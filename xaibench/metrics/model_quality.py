"""How good the explained model is on the scored images: its clean prediction against the truth.

Model-level metrics (``uses_map = False``: one cell per model, no explainer), which the runner
adds to every benchmark so that each leaderboard opens with the model's quality
(:mod:`xaibench.report.models`). Each serves one kind of model and is NaN (the image left out)
for the other: a segmenter's logits are [B, K, H, W], a classifier's [B, K].

- Segmenters: the predicted mask of the target class is its probability > 0.5; IoU and F1 per
  image and pooled over all pixels, and ``model_trivial_iou``: the pooled IoU of the better
  trivial prediction (the empty mask scores 0, the all-foreground mask the foreground share).
- Classifiers: the image-level label is ``Sample.label`` (else whether the mask has
  foreground); positive = class 1 (for more than two classes, class 1 against the rest, and
  accuracy compares the arg-max class with the label). Accuracy per image, the positive
  class's F1 and the AUROC of its probability over the images, and ``model_majority_rate``:
  the accuracy of always answering the more frequent label.

And the references the runner adds beside a background-inclusive mIoU (``empty_mask_miou``,
``empty_mask_pooled_miou``): what the empty mask scores on the same images, per image and
pooled; they read only the ground truth, so every model (a classifier too) gets them.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.stats import rankdata

from xaibench.config.vocabulary import (
    EMPTY_MASK_MIOU,
    EMPTY_MASK_POOLED_MIOU,
    HIGHER,
    MODEL_ACCURACY,
    MODEL_AUROC,
    MODEL_F1,
    MODEL_IOU,
    MODEL_LABEL_F1,
    MODEL_MAJORITY_RATE,
    MODEL_POOLED_F1,
    MODEL_POOLED_IOU,
    MODEL_TRIVIAL_IOU,
)
from xaibench.engine.targets import probabilities
from xaibench.metrics.base import MetricContext
from xaibench.metrics.localization import IMAGES, miou_from_counts

NAN = float("nan")


class _Quality:
    direction = HIGHER
    uses_threshold = False
    perturbation = None
    uses_map = False  # one cell per model: the values do not depend on an explainer or layer


def _masks(ctx: MetricContext) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(predicted, true) bool masks [B, H, W] of each image's target class; None for a classifier."""
    if ctx.logits.ndim != 4 or ctx.ground_truth is None:
        return None
    cls = ctx.target.class_ids.to(ctx.logits.device)
    prob = probabilities(ctx.logits)[torch.arange(ctx.logits.shape[0], device=ctx.logits.device), cls]
    truth = ctx.ground_truth.to(ctx.logits.device) == cls[:, None, None]
    return prob > 0.5, truth


def _pixel_counts(ctx: MetricContext) -> dict[str, torch.Tensor]:
    """Per-image tp, fp, fn, and the pixels of the truth and of the image; NaN for a classifier."""
    masks = _masks(ctx)
    b = ctx.logits.shape[0]
    if masks is None:
        return {k: torch.full((b,), NAN, dtype=torch.float64) for k in ("tp", "fp", "fn", "truth", "pixels")}
    pred, truth = (m.flatten(1) for m in masks)
    return {
        "tp": (pred & truth).sum(1).double(),
        "fp": (pred & ~truth).sum(1).double(),
        "fn": (~pred & truth).sum(1).double(),
        "truth": truth.sum(1).double(),
        "pixels": torch.full((b,), float(truth.shape[1]), dtype=torch.float64, device=truth.device),
    }


def _iou(c):
    return c["tp"] / (c["tp"] + c["fp"] + c["fn"])


def _f1(c):
    return 2 * c["tp"] / (2 * c["tp"] + c["fp"] + c["fn"])


class ModelIoU(_Quality):
    """A segmenter's IoU of its predicted mask (probability > 0.5) per image; NaN where neither
    the prediction nor the truth has the class."""

    name = MODEL_IOU

    def compute(self, ctx: MetricContext) -> torch.Tensor:
        c = _pixel_counts(ctx)
        return _iou(c).float().cpu()


class ModelF1(_Quality):
    """A segmenter's F1 (Dice) of its predicted mask per image; NaN where both are empty."""

    name = MODEL_F1

    def compute(self, ctx: MetricContext) -> torch.Tensor:
        return _f1(_pixel_counts(ctx)).float().cpu()


class _PooledMask(_Quality):
    """A segmenter's mask pooled over the scored images: per-image TP, FP, FN, summed."""

    def compute(self, ctx: MetricContext) -> dict[str, torch.Tensor]:
        c = _pixel_counts(ctx)
        return {k: c[k] for k in ("tp", "fp", "fn")}


class ModelPooledIoU(_PooledMask):
    """A segmenter's IoU over all pixels of the scored images: sum TP / sum (TP + FP + FN)."""

    name = MODEL_POOLED_IOU
    pool = staticmethod(_iou)


class ModelPooledF1(_PooledMask):
    """A segmenter's F1 over all pixels of the scored images: 2 sum TP / (2 sum TP + sum FP + sum FN)."""

    name = MODEL_POOLED_F1
    pool = staticmethod(_f1)


class ModelTrivialIoU(_Quality):
    """The pooled IoU of the better trivial mask: the empty mask scores 0, the all-foreground mask
    sum truth / sum pixels; a segmenter whose pooled IoU is not above it is at chance."""

    name = MODEL_TRIVIAL_IOU

    @staticmethod
    def pool(c):
        return c["truth"] / c["pixels"]

    def compute(self, ctx: MetricContext) -> dict[str, torch.Tensor]:
        c = _pixel_counts(ctx)
        return {"truth": c["truth"], "pixels": c["pixels"]}


def _labels(ctx: MetricContext) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """(predicted class, true class, probability of class 1) per image; None for a segmenter."""
    if ctx.logits.ndim != 2:
        return None
    if ctx.labels is not None:
        truth = ctx.labels.flatten().long().cpu()
    elif ctx.ground_truth is not None:
        truth = (ctx.ground_truth > 0).flatten(1).any(1).long().cpu()
    else:
        raise ValueError("classifier quality needs image-level labels or ground-truth masks")
    logits = ctx.logits.detach().float().cpu()
    pred = (logits[:, 0] > 0).long() if logits.shape[1] == 1 else logits.argmax(1)
    if logits.shape[1] == 1:
        truth = (truth > 0).long()
    return pred, truth, probabilities(logits)[:, 1]


def _nan_counts(ctx: MetricContext, names: tuple[str, ...]) -> dict[str, torch.Tensor]:
    return {k: torch.full((ctx.logits.shape[0],), NAN, dtype=torch.float64) for k in names}


class ModelAccuracy(_Quality):
    """A classifier's accuracy: 1 where its predicted class equals the image's label, else 0."""

    name = MODEL_ACCURACY

    def compute(self, ctx: MetricContext) -> torch.Tensor:
        got = _labels(ctx)
        if got is None:
            return torch.full((ctx.logits.shape[0],), NAN)
        pred, truth, _ = got
        return (pred == truth).float()


class ModelLabelF1(_Quality):
    """A classifier's F1 of class 1 over the images: 2 TP / (2 TP + FP + FN)."""

    name = MODEL_LABEL_F1
    pool = staticmethod(_f1)

    def compute(self, ctx: MetricContext) -> dict[str, torch.Tensor]:
        got = _labels(ctx)
        if got is None:
            return _nan_counts(ctx, ("tp", "fp", "fn"))
        pred, truth, _ = got
        p, t = pred == 1, truth == 1
        return {"tp": (p & t).double(), "fp": (p & ~t).double(), "fn": (~p & t).double()}


def _auroc(c):
    """AUROC of ``score`` for ``label`` over the last axis (images): the Mann-Whitney U from the
    scores' ranks (ties averaged), over the positives x negatives; NaN without both."""
    score, label = np.asarray(c["score"], dtype=float), np.asarray(c["label"], dtype=float)
    ranks = rankdata(score, axis=-1)
    n1 = label.sum(-1)
    n0 = label.shape[-1] - n1
    u = (ranks * label).sum(-1) - n1 * (n1 + 1) / 2
    return np.where((n1 > 0) & (n0 > 0), u / np.maximum(n1 * n0, 1), np.nan)


class ModelAUROC(_Quality):
    """A classifier's AUROC of the probability of class 1 over the scored images (the images'
    scores and labels pooled; no per-image value)."""

    name = MODEL_AUROC
    pools_images = True
    pool = staticmethod(_auroc)

    def compute(self, ctx: MetricContext) -> dict[str, torch.Tensor]:
        got = _labels(ctx)
        if got is None:
            return _nan_counts(ctx, ("score", "label"))
        _, truth, score = got
        return {"score": score.double(), "label": (truth == 1).double()}


class ModelMajorityRate(_Quality):
    """The accuracy of always answering the more frequent image label (class 1 or not): what a
    classifier at chance reaches."""

    name = MODEL_MAJORITY_RATE

    @staticmethod
    def pool(c):
        return np.maximum(c["positive"], c["images"] - c["positive"]) / c["images"]

    def compute(self, ctx: MetricContext) -> dict[str, torch.Tensor]:
        got = _labels(ctx)
        if got is None:
            return _nan_counts(ctx, ("positive", "images"))
        _, truth, _ = got
        return {"positive": (truth == 1).double(), "images": torch.ones(truth.shape[0], dtype=torch.float64)}


def _empty_mask_counts(ctx: MetricContext) -> dict[str, torch.Tensor]:
    """Per-image tp, fp, fn, tn of the empty mask against the target class's truth (NaN without truth)."""
    b = ctx.images.shape[0]
    if ctx.ground_truth is None:
        return {k: torch.full((b,), NAN, dtype=torch.float64) for k in ("tp", "fp", "fn", "tn")}
    truth = (ctx.ground_truth.cpu() == ctx.target.class_ids.cpu()[:, None, None]).flatten(1)
    positives = truth.sum(1).double()
    zero = torch.zeros(b, dtype=torch.float64)
    return {"tp": zero, "fp": zero, "fn": positives, "tn": truth.shape[1] - positives}


class _EmptyMask(_Quality):
    """``images``: as the mIoU it stands beside (the runner passes that metric's): ``"all"``, or
    ``"with_object"`` (NaN on an image without the target class: the image left out)."""

    def __init__(self, images: str = "all"):
        if images not in IMAGES:
            raise ValueError(f"images must be one of {', '.join(IMAGES)}, got {images!r}")
        self.images = images

    def _counts(self, ctx: MetricContext) -> dict[str, torch.Tensor]:
        counts = _empty_mask_counts(ctx)
        if self.images == "with_object":
            without = counts["fn"] == 0  # the truth has no pixel of the target class
            counts = {k: torch.where(without, torch.full_like(v, NAN), v) for k, v in counts.items()}
        return counts


class EmptyMaskMIoU(_EmptyMask):
    """The per-image mIoU (``localization_miou``) of the empty mask: (0 + (N - P) / N) / 2 on an
    image with P of its N pixels in the object, 1 on an image without it."""

    name = EMPTY_MASK_MIOU

    def compute(self, ctx: MetricContext) -> torch.Tensor:
        counts = {k: v.numpy() for k, v in self._counts(ctx).items()}
        with np.errstate(divide="ignore", invalid="ignore"):
            return torch.from_numpy(miou_from_counts(counts)).float()


class EmptyMaskPooledMIoU(_EmptyMask):
    """The pooled mIoU (``pooled_miou``) of the empty mask over the scored images."""

    name = EMPTY_MASK_POOLED_MIOU
    pool = staticmethod(miou_from_counts)

    def compute(self, ctx: MetricContext) -> dict[str, torch.Tensor]:
        return self._counts(ctx)


#: the empty mask's mIoU metrics (the references of ``EMPTY_MASK_REFERENCE``)
REFERENCE_METRICS = (EmptyMaskMIoU, EmptyMaskPooledMIoU)

#: every model-quality metric, in the order the leaderboard's Models section shows them
QUALITY_METRICS = (ModelPooledIoU, ModelIoU, ModelPooledF1, ModelF1, ModelTrivialIoU, ModelAccuracy, ModelLabelF1, ModelAUROC, ModelMajorityRate)
