"""The model's own output as a map: how a segmentation baseline is scored as a "segmenter"."""

from __future__ import annotations

import torch

from xaibench.engine.targets import probabilities
from xaibench.errors import UserError
from xaibench.explainers.base import ExplainContext
from xaibench.registry.passes import Pass


class ModelOutput:
    """The predicted probability of the target class at each pixel (not min-max scaled), so a
    segmentation model's output goes through the same localisation metrics as a CAM. Use it
    with ``layers = ["output"]``; it reads no layer and costs no pass beyond the shared forward."""

    name = "model_output"
    needs = Pass.NONE
    normalize = False

    def explain(self, ctx: ExplainContext) -> torch.Tensor:
        if ctx.logits.ndim != 4:
            raise UserError("model_output needs a segmentation model (logits [B, C, H, W]); a classifier has no map")
        probs = probabilities(ctx.logits)
        cls = ctx.target.class_ids.to(probs.device)
        return probs[torch.arange(probs.shape[0], device=probs.device), cls]
