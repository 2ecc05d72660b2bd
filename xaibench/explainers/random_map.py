"""A random map: the sanity baseline every real explainer must beat."""

from __future__ import annotations

import torch

from xaibench.explainers.base import ExplainContext
from xaibench.registry.passes import Pass


class RandomMap:
    """Uniform noise at 1/8 of the input resolution (so it is spatially smooth once resized),
    seeded by ``seed`` and the image's content: the same image always gets the same map."""

    name = "random"
    needs = Pass.NONE

    def __init__(self, seed: int = 0):
        self.seed = seed

    def explain(self, ctx: ExplainContext) -> torch.Tensor:
        h, w = ctx.images.shape[-2:]
        maps = []
        for key in ctx.image_keys:
            g = torch.Generator().manual_seed((int(key[:12], 16) + self.seed) % (2**63))
            maps.append(torch.rand(max(1, h // 8), max(1, w // 8), generator=g))
        return torch.stack(maps).to(ctx.images.device)
