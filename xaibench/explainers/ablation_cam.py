"""Ablation-CAM (Desai & Ramaswamy 2020), extended to segmentation (Eurocon 2023)."""

from __future__ import annotations

import torch

from xaibench.explainers.base import ExplainContext
from xaibench.registry.passes import Pass


class AblationCAM:
    """Channel k's weight is the relative drop of the target score when channel k of the layer
    is set to zero: w_k = (y - y_k) / y. The K ablated activations are pushed through the
    network *tail* only (from the cached activation onward) where the model plugin can split
    the network there; otherwise the engine replaces the layer's output with a forward hook.
    The model is never modified.
    """

    name = "ablation_cam"
    needs = Pass.ACTIVATIONS | Pass.TAIL_FORWARDS

    def explain(self, ctx: ExplainContext) -> torch.Tensor:
        a = ctx.activations
        b, k = a.shape[:2]
        y = ctx.target.score(ctx.logits)  # [B]
        eye = torch.eye(k, device=a.device, dtype=a.dtype)
        weights = torch.empty(b, k, device=a.device, dtype=a.dtype)
        for i in range(b):
            ablated = a[i, None] * (1 - eye)[:, :, None, None]  # [K, K, h, w]: row j has channel j zeroed
            idx = torch.full((k,), i, dtype=torch.long, device=a.device)
            yk = ctx.tail_scores(ablated, idx)
            weights[i] = torch.where(y[i] != 0, (y[i] - yk) / y[i], torch.zeros_like(yk))
        return (weights[:, :, None, None] * a).sum(dim=1)
