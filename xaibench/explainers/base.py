"""What an explainer is: a small pure function of the passes it declared it needs.

An explainer class has a ``name``, a ``needs`` (:class:`xaibench.registry.passes.Pass` flags) and an
``explain(ctx)`` method that returns a raw map [B, h, w] for one layer. A class attribute
``normalize = False`` marks maps that are already in [0, 1] and must not be min-max scaled
(probabilities); they are only resized. A class attribute ``explains = "input"`` marks a pixel
attribution, which explains the input rather than a layer: a grid gives it one cell, layer
``input``, whatever its layers axis says. It never installs hooks
and never touches the model: everything comes through the :class:`ExplainContext`. The engine
then applies ReLU, per-image min-max scaling and resizing to the input (see
:func:`xaibench.engine.heatmaps.normalize`). Constructor keyword arguments are the explainer's
parameters (``[explainer_params.NAME]`` in a benchmark TOML).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import ClassVar, Protocol, runtime_checkable

import torch

from xaibench.config.vocabulary import INPUT_LAYER
from xaibench.engine.targets import Target
from xaibench.registry.passes import Pass


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
    input_gradients: d(score)/d(images) [B, C, H, W] from the shared backward (``Pass.INPUT_GRADIENTS``).
    scorer: the target score as a differentiable module, ``scorer(inputs, idx) -> [N]``
    (:class:`xaibench.engine.capture.Scorer`; ``Pass.MODEL_PASSES``), for Captum and other
    attribution libraries; call it on at most ``chunk_size`` rows at a time.
    chunk_size: ``[run] chunk_size``, the most rows one forward should carry.
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
    input_gradients: torch.Tensor | None = None
    scorer: torch.nn.Module | None = None
    chunk_size: int = 16


@runtime_checkable
class Explainer(Protocol):
    name: ClassVar[str]
    needs: ClassVar[Pass]

    def explain(self, ctx: ExplainContext) -> torch.Tensor: ...


def explains_input(explainer: object, explainers: Mapping[str, object] | None = None) -> bool:
    """Whether an explainer (class or instance) explains the input, not a layer. With the
    benchmark's ``explainers`` (name -> instance), a composite explains the input when all its
    bases do (SegX of GradientSHAP is a pixel attribution too: one cell, layer ``input``)."""
    bases = getattr(explainer, "composes", ()) if explainers is not None else ()
    if bases and all(b in explainers for b in bases):
        return all(explains_input(explainers[b], explainers) for b in bases)
    return getattr(explainer, "explains", "layer") == INPUT_LAYER


def params_key(explainer: object) -> str:
    """Stable text of an explainer instance's parameters (part of heatmap cache keys)."""
    items = sorted((k, v) for k, v in vars(explainer).items() if not k.startswith("_"))
    return ",".join(f"{k}={v!r}" for k, v in items)
