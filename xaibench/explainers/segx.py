"""SegX-style refinement (Zhang, Zhu and Luo 2025): a base explainer's map restricted to a segmentation mask."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from xaibench.config.vocabulary import INPUT_LAYER
from xaibench.engine.targets import probabilities
from xaibench.errors import UserError
from xaibench.explainers.base import ExplainContext
from xaibench.explainers.fitting import FitContext
from xaibench.models.base import logits_of
from xaibench.registry.passes import Pass

MASKS = ("target", "ground_truth", "segmenter")
#: ``base`` for the mask alone as the map
NO_BASE = "none"


class SegX:
    """The map of ``base`` multiplied by a mask of the relevant region, optionally binarised.

    ``mask`` chooses the region:

    - ``"target"`` (default): the explained segmentation model's own predicted target region;
    - ``"ground_truth"``: the ground-truth mask (``> 0``);
    - ``"segmenter"``: as the SegX paper runs it, the mask of a *separate* segmentation model,
      ``probability > mask_threshold``. ``segmenter`` names a registered model plugin (e.g.
      ``"smp_unet"``) and ``segmenter_params`` its parameters (the ``[model]`` keys of that
      plugin, default ``{}``). It is this explainer's own network (``fit``): loaded through the
      registry on each replicate's training images with the replicate's seed, so the model
      plugin trains it on first use and caches it by its own config hash, like the explained
      models; its weights' hash is part of the heatmap cache key. The probability is that of the
      explained class (``ctx.target.class_ids``: the target class of a segmentation model, the
      predicted or ``[run] class_id`` class of a classifier) under
      :func:`xaibench.engine.targets.probabilities` of the segmenter's logits (a sigmoid for one
      channel, else a softmax); the mask is resized (nearest) to the map's size.

    ``dilation`` grows the mask by that many pixels (a square max filter), in every mode.

    ``base = "none"`` gives the mask alone as the map (1 inside, 0 outside): the composite's own
    baseline, which shows what the explanation adds to the mask (an image with an empty mask
    gets a blank map, which the pointing games leave out).

    ``top_percent`` (default: none) binarises the refined map ``base * mask`` per image: the
    ``ceil(top_percent / 100 * H * W)`` pixels of highest refined value become 1 and all others
    0 (ties broken by pixel order, row-major); a pixel whose refined value is 0 (outside the mask)
    is never kept, so an image whose masked map has fewer non-zero pixels keeps fewer. The SegX
    authors' saliency maps keep the top 5 % (``top_percent = 5``). The engine's min-max
    normalisation then leaves the kept pixels at 1 - 1e-7.

    The paper refines a classifier's Grad-CAM or GradientSHAP map by a U-Net's mask
    ``seg_model(x) > 0.5``::

        [explainer_params.segx]
        base = "grad_cam"
        mask = "segmenter"
        segmenter = "smp_unet"
        segmenter_params = {encoder = "resnet18", epochs = 8}
        mask_threshold = 0.5
        top_percent = 5

    The base map is taken from the engine, so it is computed once even when ``base`` is also in
    the grid.
    """

    name = "segx"
    needs = Pass.NONE

    def __init__(
        self, base: str = "grad_cam", mask: str = "target", dilation: int = 0, segmenter: str = "",
        segmenter_params: dict | None = None, mask_threshold: float = 0.5, top_percent: float | None = None,
    ):  # fmt: skip
        if mask not in MASKS:
            raise UserError(f"segx: mask = {mask!r} is not one of {', '.join(map(repr, MASKS))}")
        if dilation < 0:
            raise UserError(f"segx: dilation must be >= 0, got {dilation}")
        if base == "segx":
            raise UserError("segx: base cannot be 'segx' itself")
        if not base:
            raise UserError("segx: base must name an explainer, or be 'none' for the mask alone")
        if mask == "segmenter" and not segmenter:
            raise UserError("segx: mask = 'segmenter' needs segmenter = the name of a segmentation model plugin (e.g. 'smp_unet')")
        if mask != "segmenter":
            given = [k for k, v in (("segmenter", segmenter), ("segmenter_params", segmenter_params), ("mask_threshold", mask_threshold != 0.5)) if v]
            if given:
                raise UserError(f"segx: {given[0]} is used only with mask = 'segmenter' (mask is {mask!r})")
        if not 0 < mask_threshold < 1:
            raise UserError(f"segx: mask_threshold must be in (0, 1) (a probability), got {mask_threshold}")
        if top_percent is not None and not 0 < top_percent <= 100:
            raise UserError(f"segx: top_percent must be in (0, 100], got {top_percent}")
        self.base = base
        self.mask = mask
        self.dilation = dilation
        self.segmenter = segmenter
        self.segmenter_params = dict(sorted((segmenter_params or {}).items()))  # sorted: a stable cache key
        self.mask_threshold = mask_threshold
        self.top_percent = top_percent

    @property
    def explains(self) -> str:
        """The mask alone reads no layer: one cell, at layer ``input``; else as its base."""
        return INPUT_LAYER if self.base == NO_BASE else "layer"

    @property
    def composes(self) -> tuple[str, ...]:
        return () if self.base == NO_BASE else (self.base,)

    @property
    def loads_models(self) -> tuple[tuple[str, dict], ...]:
        """The model plugins ``fit`` loads (name, parameters): the runner checks them before a run."""
        return ((self.segmenter, self.segmenter_params),) if self.mask == "segmenter" else ()

    @property
    def trains_network(self) -> bool:
        """Only the ``segmenter`` mode has a network of its own (xaibench.explainers.fitting)."""
        return self.mask == "segmenter"

    def fit(self, ctx: FitContext) -> str:
        """Load (the model plugin trains and caches it on first use) the replicate's segmenter."""
        if ctx.load_model is None:
            raise UserError("segx: mask = 'segmenter' loads its segmenter through the runner, and this FitContext has no load_model; run it in a benchmark (xaibench run)")
        try:
            segmenter = ctx.load_model(self.segmenter, self.segmenter_params)
        except UserError as exc:
            raise UserError(f"segx: segmenter = {self.segmenter!r}: {exc}") from exc
        if getattr(segmenter, "task", None) == "classifier":
            raise UserError(f"segx: segmenter = {self.segmenter!r} is a classifier; the mask needs a segmentation model")
        self._segmenter = segmenter
        return f"segmenter {self.segmenter}:{segmenter.identity}"

    gallery_title = "segmenter mask"

    @property
    def gallery_image(self):
        """In the segmenter mode, once fitted: ``images [B, C, H, W] -> [B, 1, H, W]``, the
        segmenter's foreground mask (its last channel's probability > ``mask_threshold``; the
        explained class's channel for a binary task), which the run's gallery shows."""
        return self._foreground_mask if self.mask == "segmenter" and hasattr(self, "_segmenter") else None

    def _foreground_mask(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            logits = self._logits(images, max(1, images.shape[0]))
        return (probabilities(logits.float())[:, -1:] > self.mask_threshold).float().to(images.device)

    def _logits(self, images: torch.Tensor, chunk_size: int) -> torch.Tensor:
        segmenter = self._segmenter
        outs = []
        for s in range(0, images.shape[0], chunk_size):
            out = segmenter.module(images[s : s + chunk_size].to(segmenter.device))
            outs.append(logits_of(out))
        return torch.cat(outs)

    def explain(self, ctx: ExplainContext) -> torch.Tensor:
        base = None if self.base == NO_BASE else ctx.explain(self.base)
        size = tuple(ctx.images.shape[-2:]) if base is None else tuple(base.shape[-2:])
        region = self._region(ctx, size).to(ctx.images.device if base is None else base.device)
        if self.dilation:
            d = self.dilation
            region = F.max_pool2d(region[:, None], kernel_size=2 * d + 1, stride=1, padding=d)[:, 0]
        refined = region if base is None else base * region
        return refined if self.top_percent is None else keep_top(refined, self.top_percent)

    def _region(self, ctx: ExplainContext, size: tuple[int, ...]) -> torch.Tensor:
        if self.mask == "ground_truth":
            if ctx.ground_truth is None:
                raise UserError("segx: mask = 'ground_truth' needs ground-truth masks")
            return (ctx.ground_truth > 0).float()
        if self.mask == "segmenter":
            return self._segmenter_region(ctx, size)
        if ctx.target.region is None:
            raise UserError("segx: a classifier has no target region; use mask = 'ground_truth' or 'segmenter'")
        return ctx.target.region.float()

    def _segmenter_region(self, ctx: ExplainContext, size: tuple[int, ...]) -> torch.Tensor:
        """``probability of the explained class > mask_threshold`` under the segmenter, [B, *size]."""
        segmenter = getattr(self, "_segmenter", None)
        if segmenter is None:
            raise UserError("segx: mask = 'segmenter' was not fitted; run it in a benchmark (xaibench run)")
        device = segmenter.device
        with torch.no_grad():
            logits = self._logits(ctx.images, max(1, ctx.chunk_size))
        if logits.ndim != 4:
            raise UserError(f"segx: segmenter {self.segmenter!r} gives outputs of shape {tuple(logits.shape)}, a classifier's; the mask needs [B, C, H, W] logits")
        probs = probabilities(logits.float())
        classes = ctx.target.class_ids.to(device).long()
        if int(classes.max()) >= probs.shape[1]:
            raise UserError(f"segx: the explained class {int(classes.max())} is not a class of segmenter {self.segmenter!r} ({probs.shape[1]} classes)")
        p = probs[torch.arange(probs.shape[0], device=device), classes]
        region = (p > self.mask_threshold).float()
        if tuple(region.shape[-2:]) != tuple(size):
            region = F.interpolate(region[:, None], size=size, mode="nearest")[:, 0]
        return region


def keep_top(maps: torch.Tensor, percent: float) -> torch.Tensor:
    """Binary maps [B, H, W]: per image, 1 on the ``ceil(percent / 100 * H * W)`` highest-valued
    pixels (ties: the first in row-major order) that are above 0, 0 elsewhere."""
    flat = maps.reshape(maps.shape[0], -1)
    k = max(1, math.ceil(flat.shape[1] * percent / 100 - 1e-9))  # 7 % of 100 is 7, not 8
    order = torch.sort(flat, dim=1, descending=True, stable=True).indices[:, :k]
    keep = torch.zeros_like(flat, dtype=torch.bool).scatter_(1, order, True) & (flat > 0)
    return keep.reshape(maps.shape).to(maps.dtype)
