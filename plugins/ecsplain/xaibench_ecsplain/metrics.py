"""Image-level detection metrics: does the model say "moving area" where there is one?

They read the image-level labels (``ctx.labels``; where a dataset has none, a label is 1 when
the ground-truth mask has a foreground pixel) and the model's logits on the clean images, and
no heatmap: they are model-level metrics (``uses_map = False``), so the grid gives each model
one cell (explainer, layer and threshold empty). Each returns per-image values whose mean over
the non-NaN images is the dataset statistic:

* ``classification_accuracy``  -- 1 if the prediction equals the label, else 0;
* ``classification_recall``    -- on label-1 images: 1 if predicted positive, else 0; NaN on
  label-0 images (mean = TP / (TP + FN));
* ``classification_precision`` -- on predicted-positive images: 1 if the label is 1, else 0;
  NaN on predicted-negative images (mean = TP / (TP + FP));
* ``classification_specificity`` -- on label-0 images: 1 if predicted negative, else 0;
* ``classification_f1`` -- 1 on a true positive, 0 on a false positive or negative, NaN on a
  true negative. Its dataset statistic is not the mean m = TP / (TP + FP + FN) but the F1
  2 TP / (2 TP + FP + FN) = 2 m / (1 + m) (the metric's ``aggregate``, which the core's
  summary, bootstrap CIs and leaderboard use).

What "predicted positive" means:

* a classifier (logits [B, 1]): the logit is > 0 (sigmoid > 0.5); with several logits, the
  arg-max class is not 0;
* a segmenter (logits [B, C, H, W]): at least ``min_pixels`` pixels (default 1) are predicted
  foreground (sigmoid > 0.5, or arg-max class not 0) -- a segmentation baseline "detects" a
  moving area when its mask is not empty.
"""

from __future__ import annotations

import numpy as np
import torch

from xaibench.plugin import MetricContext, UserError

NAN = float("nan")


def predicted_positive(logits: torch.Tensor, min_pixels: int = 1) -> torch.Tensor:
    """Bool [B]: whether each image is predicted to hold the object (see the module docstring)."""
    if logits.ndim == 2:
        return logits[:, 0] > 0 if logits.shape[1] == 1 else logits.argmax(dim=1) != 0
    if logits.ndim == 4:
        fg = logits[:, 0] > 0 if logits.shape[1] == 1 else logits.argmax(dim=1) != 0
        return fg.flatten(1).sum(dim=1) >= max(int(min_pixels), 1)
    raise ValueError(f"logits of shape {tuple(logits.shape)}: expected [B, C] or [B, C, H, W]")


def image_labels(ctx: MetricContext) -> torch.Tensor:
    """Bool [B] image-level labels: ``ctx.labels`` > 0, else whether the mask has foreground."""
    if ctx.labels is not None:
        return ctx.labels.flatten() > 0
    if ctx.ground_truth is None:
        raise ValueError("classification metrics need image-level labels or ground-truth masks")
    return (ctx.ground_truth > 0).flatten(1).any(dim=1)


class _Classification:
    direction = "higher"
    uses_threshold = False
    perturbation = None
    uses_map = False  # one cell per model: the values do not depend on an explainer or layer

    def __init__(self, min_pixels: int = 1):
        """min_pixels: foreground pixels a segmenter must predict to call an image positive."""
        if min_pixels < 1:
            raise UserError(f"min_pixels must be >= 1, got {min_pixels}")
        self.min_pixels = min_pixels

    def _pair(self, ctx: MetricContext) -> tuple[torch.Tensor, torch.Tensor]:
        pred = predicted_positive(ctx.logits, self.min_pixels).cpu()
        return pred, image_labels(ctx).cpu()


def _where(defined: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    return torch.where(defined, value.float(), torch.full(value.shape, NAN))


class ClassificationAccuracy(_Classification):
    """1 where the predicted image label equals the true one, else 0 (mean = accuracy)."""

    name = "classification_accuracy"

    def compute(self, ctx: MetricContext) -> torch.Tensor:
        pred, label = self._pair(ctx)
        return (pred == label).float()


class ClassificationRecall(_Classification):
    """On label-1 images, 1 if predicted positive else 0; NaN elsewhere (mean = recall)."""

    name = "classification_recall"

    def compute(self, ctx: MetricContext) -> torch.Tensor:
        pred, label = self._pair(ctx)
        return _where(label, pred)


class ClassificationPrecision(_Classification):
    """On predicted-positive images, 1 if the label is 1 else 0; NaN elsewhere (mean = precision)."""

    name = "classification_precision"

    def compute(self, ctx: MetricContext) -> torch.Tensor:
        pred, label = self._pair(ctx)
        return _where(pred, label)


class ClassificationSpecificity(_Classification):
    """On label-0 images, 1 if predicted negative else 0; NaN elsewhere (mean = specificity)."""

    name = "classification_specificity"

    def compute(self, ctx: MetricContext) -> torch.Tensor:
        pred, label = self._pair(ctx)
        return _where(~label, ~pred)


class ClassificationF1(_Classification):
    """Image-level F1 of the detections: 1 on a true positive, 0 on a false positive or negative,
    NaN on a true negative; dataset statistic F1 = 2 m / (1 + m) with m the mean."""

    name = "classification_f1"
    statistic = "f1"

    def compute(self, ctx: MetricContext) -> torch.Tensor:
        pred, label = self._pair(ctx)
        return _where(pred | label, pred & label)

    @staticmethod
    def aggregate(values: np.ndarray) -> float:
        """F1 = 2 TP / (2 TP + FP + FN) from the per-image values (m = TP / (TP + FP + FN))."""
        m = float(np.mean(values))
        return 2 * m / (1 + m)


METRICS = (ClassificationAccuracy, ClassificationPrecision, ClassificationRecall, ClassificationSpecificity, ClassificationF1)
