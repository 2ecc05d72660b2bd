"""What an explainer is: a small pure function of the passes it declared it needs.

An explainer class has a ``name``, a ``needs`` (:class:`xaibench.passes.Pass` flags) and an
``explain(ctx)`` method that returns a raw map [B, h, w] for one layer. A class attribute
``normalize = False`` marks maps that are already in [0, 1] and must not be min-max scaled
(probabilities); they are only resized. It never installs hooks
and never touches the model: everything comes through the :class:`ExplainContext`. The engine
then applies ReLU, per-image min-max scaling and resizing to the input (see
:func:`xaibench.heatmaps.normalize`). Constructor keyword arguments are the explainer's
parameters (``[explainer_params.NAME]`` in a benchmark TOML).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Protocol, runtime_checkable

import torch

from xaibench.passes import Pass
from xaibench.targets import Target


@dataclass
class ExplainContext:
    """Everything an explainer may use for one batch of images and one layer.

    images: the input batch [B, C, H, W] on the model's device.
    layer: the module path explained.
    activations / gradients: the layer's output and d(score)/d(output) [B, K, h, w], from the
    shared pass (None unless declared in ``needs``).
    target: the resolved targets (one per image).
    logits: the model's output on ``images``.
    image_keys: content hashes of the images (stable seeds for stochastic explainers).
    masked_scores(inputs, idx): target scores of full forwards of ``inputs`` [N, C, H, W],
    row n scored with the target of image idx[n]; batched in chunks by the engine.
    tail_scores(activations, idx): target scores of the network tail run from this layer on
    ``activations`` [N, K, h, w] (row n belongs to image idx[n]).
    explain(name): another registered explainer's normalised map [B, H, W] for this batch and
    layer (for composites; shared with the grid, computed once).
    """

    images: torch.Tensor
    layer: str
    activations: torch.Tensor | None
    gradients: torch.Tensor | None
    target: Target
    logits: torch.Tensor
    image_keys: list[str]
    masked_scores: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    tail_scores: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    explain: Callable[[str], torch.Tensor]
    ground_truth: torch.Tensor | None = None


@runtime_checkable
class Explainer(Protocol):
    name: ClassVar[str]
    needs: ClassVar[Pass]

    def explain(self, ctx: ExplainContext) -> torch.Tensor: ...


def params_key(explainer: object) -> str:
    """Stable text of an explainer instance's parameters (part of heatmap cache keys)."""
    items = sorted((k, v) for k, v in vars(explainer).items() if not k.startswith("_"))
    return ",".join(f"{k}={v!r}" for k, v in items)
