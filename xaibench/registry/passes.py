"""What an explainer or metric needs from the network, declared up front.

The runner takes the union of the needs of every explainer in a grid and plans the network
passes once per model x image batch: one forward with hooks on every requested layer, one
backward (gradients to the hooked activations only) if any explainer needs gradients. Masked
forwards (Score-CAM) and tail forwards (Ablation-CAM) are issued by the explainers through the
batched callables the context hands them. Pixel attributions (Captum) read the input gradient
of the same shared backward (Saliency, Input x Gradient), or make their own differentiable
passes through the context's ``scorer`` (Integrated Gradients' steps, GradientSHAP's samples,
occlusion windows, Guided Backprop's and DeepLift's modified backwards), at most ``chunk_size``
rows per forward.
"""

from __future__ import annotations

import enum


class Pass(enum.Flag):
    """Kinds of network work a plugin can ask for."""

    NONE = 0
    ACTIVATIONS = enum.auto()  #: layer outputs of the single shared forward
    GRADIENTS = enum.auto()  #: d(target score)/d(layer output) from the single shared backward
    MASKED_FORWARDS = enum.auto()  #: full forwards of masked inputs (Score-CAM)
    TAIL_FORWARDS = enum.auto()  #: forwards of the network tail from a layer (Ablation-CAM)
    INPUT_GRADIENTS = enum.auto()  #: d(target score)/d(input) from the single shared backward
    MODEL_PASSES = enum.auto()  #: forwards and backwards of the explainer's own inputs via ctx.scorer (Captum)
