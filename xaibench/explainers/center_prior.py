"""A centred Gaussian: the baseline of object-centred crops, a map that knows neither the image
nor the model."""

from __future__ import annotations

import torch

from xaibench.config.vocabulary import INPUT_LAYER
from xaibench.explainers.base import ExplainContext
from xaibench.registry.passes import Pass


class CenterPrior:
    """A centred isotropic Gaussian, the same for every image (``sigma`` a fraction of the
    shorter side): what a method must beat where objects sit in the middle of the crop."""

    name = "center_prior"
    needs = Pass.NONE
    explains = INPUT_LAYER  # the same map at every layer: one cell, at layer "input"

    def __init__(self, sigma: float = 0.25):
        if not 0 < sigma <= 10:
            raise ValueError(f"sigma = {sigma} must be in (0, 10] (a fraction of the image's shorter side)")
        self.sigma = float(sigma)

    def explain(self, ctx: ExplainContext) -> torch.Tensor:
        b, h, w = ctx.images.shape[0], *ctx.images.shape[-2:]
        s = self.sigma * min(h, w)
        y = torch.arange(h, dtype=torch.float32) - (h - 1) / 2
        x = torch.arange(w, dtype=torch.float32) - (w - 1) / 2
        g = torch.exp(-(y[:, None] ** 2 + x[None, :] ** 2) / (2 * s * s))
        return g.expand(b, h, w).to(ctx.images.device)
