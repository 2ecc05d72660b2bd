"""What a metric is: per-image scores of one heatmap (binarised, perturbed or not).

A metric class declares, as class attributes:

- ``name``; ``direction``: ``"higher"`` or ``"lower"`` is better (leaderboards rank by it);
- ``uses_threshold``: whether it reads the map binarised at the cell's threshold;
- ``perturbation``: ``"cell"`` (one value per perturbation mode of the grid), a fixed mode
  name (e.g. ``"background_only"`` for IoU drop), or ``None`` (no perturbed input).

An optional ``uses_map = False`` marks a model-level metric (classifier accuracy, say): it reads
only the model's output, gets one cell per model (explainer, layer, threshold and perturbation
empty), and ``ctx.heatmap`` is None.
An optional ``aggregate`` staticmethod (1-D array of the non-NaN per-image values -> float) replaces the
mean as the metric's dataset statistic in summaries and leaderboards (e.g. an F1 over images),
named by an optional ``statistic`` string; CIs are bootstrapped with it.
An optional ``directions`` dict overrides ``direction`` per perturbation mode (confidence
should drop under M1 but stay under M2). ``compute(ctx)`` returns a float tensor [B] (NaN where the value is undefined for an image,
e.g. an empty target region). Metrics never call the model directly: perturbed inputs are
batched by the runner, and ``ctx.forward`` batches any other inputs a metric needs.

A **pooled** metric (a ratio of sums: the IoU of all pixels of all images, which no function of
the per-image IoUs gives) declares ``pool`` instead of ``aggregate``, and its ``compute(ctx)``
returns additive per-image counts, a dict of name -> real tensor [B] (``{"tp": ..., "fp": ...,
"fn": ...}``; NaN counts leave an image out, e.g. one without the object)::

    @staticmethod
    def pool(c):  # dict of name -> float64 numpy arrays of one shape; elementwise
        return c["tp"] / (c["tp"] + c["fp"] + c["fn"])  # 0 / 0 is NaN: undefined

The core calls ``pool`` on each image's own counts (the per-image ``value`` of the results;
NaN where undefined), stores the counts in the results' ``counts`` column, and takes as the
dataset statistic (``statistic`` "pooled") ``pool`` of the counts summed over the cell's images
(with replicates, over each replicate's images, then the mean over replicates); bootstrap CIs
resample images with their counts, paired tests compare the per-image values. ``pool`` must be
elementwise numpy arithmetic (``+ - * /``, ``np.where``), as it also runs on arrays of bootstrap
resamples' sums. With ``pools_images = True`` ``pool`` receives the per-image counts themselves
(arrays [..., images]) and reduces over the last axis, for a statistic that is no ratio of sums
(an AUROC of image scores and labels); such a metric has no per-image value (NaN).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Protocol, runtime_checkable

import torch

from xaibench.engine.targets import Target


@dataclass
class MetricContext:
    """One heatmap of one grid cell for a batch of images.

    images [B, C, H, W]; ground_truth [B, H, W] class ids (or None); target: resolved targets;
    logits: the model's output on the clean images; heatmap [B, H, W] in [0, 1];
    threshold [B] (per image: Otsu differs by image) and binary [B, H, W] (heatmap >= threshold)
    when the metric uses a threshold; perturbed_logits: output on the perturbed input of the
    cell's mode; forward(inputs) -> logits, batched in chunks; fill [B, C, H, W]: what removed
    pixels are replaced with; labels [B]: image-level labels where the dataset has them.
    """

    images: torch.Tensor
    ground_truth: torch.Tensor | None
    target: Target
    logits: torch.Tensor
    heatmap: torch.Tensor | None
    forward: Callable[[torch.Tensor], torch.Tensor]
    fill: torch.Tensor
    labels: torch.Tensor | None = None
    threshold: torch.Tensor | None = None
    binary: torch.Tensor | None = None
    perturbed_logits: torch.Tensor | None = None


@runtime_checkable
class Metric(Protocol):
    name: ClassVar[str]
    direction: ClassVar[str]
    uses_threshold: ClassVar[bool]
    perturbation: ClassVar[str | None]

    def compute(self, ctx: MetricContext) -> torch.Tensor | dict[str, torch.Tensor]: ...


def direction(metric: object, perturbation: str = "") -> str:
    """Whether ``higher`` or ``lower`` is better for ``metric`` under ``perturbation``."""
    return getattr(metric, "directions", {}).get(perturbation, metric.direction)
