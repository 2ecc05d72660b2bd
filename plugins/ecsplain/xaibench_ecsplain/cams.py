"""Class activation maps of a one-logit classifier, as ECSPLAIN computes them.

ECSPLAIN (Bralet et al., IEEE TGRS 2025) constrains a classifier's CAM to match the
segmentation mask during training, so the CAM has to be computed *inside* the training step
and be differentiable with respect to the network's weights. :func:`multilayer_cam` does that
for the four CAM types of the paper, on several intermediate feature maps at once:

for every layer ``l`` a raw map is computed from the activations ``A`` [B, K, h, w] (and, for
the gradient CAMs, ``G = d logit / d A`` obtained with ``torch.autograd.grad(...,
create_graph=True)`` while training), then ReLU, bilinear upsampling to the input size and
per-image min-max scaling; the CAM is the mean of the per-layer maps, so it lies in [0, 1].

* ``grad_cam``  -- sum_k mean_hw(G_k) * A_k
* ``layer_cam`` -- sum_k ReLU(G_k) * A_k
* ``norm_cam``  -- || ReLU(G * A) ||_2 over the channels (the ECSPLAIN paper's own CAM)
* ``score_cam`` -- sum_k w_k A_k with w = softmax_k(logit(mask_k(x)) - logit(x)); every
  channel, upsampled and min-max scaled (``up(A_k)``), masks the input and the masked input's
  logit weighs the channel. The authors multiply their zero-centred input by ``up(A_k)``; for
  inputs in [0, 1] that is ``mask_k(x) = 0.5 + (x - 0.5) * up(A_k)`` (0.5 = coherence 0, no
  information), which is what this module does (the core ``score_cam`` with ``fill = 0.5``).
  While training, only a random 25 % of the channels of each layer are used (``fraction``), as
  the authors do; at inference every channel is.

At evaluation the CAM of a trained model is not computed here: the core explainers
``grad_cam``, ``layer_cam``, ``score_cam`` (``fill = 0.5``) and this package's ``norm_cam``
(:class:`NormCAM`) give it at the fused grid layer ``mean(c1, conv2, conv3, conv4, conv5)``
from the engine's shared forward / backward. The engine normalises each layer's map as ReLU,
min-max, bilinear resize, min-max, which equals :func:`finish` (ReLU, resize, min-max) up to
the epsilon of the min-max (bilinear weights sum to 1, so a min-max before the resize is
undone by the one after it); ``README.md`` lists where the two differ, and
``tests/test_ecsplain_cams.py`` checks that they agree.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from xaibench.plugin import ExplainContext, Pass, UserError

CAM_TYPES = ("grad_cam", "layer_cam", "score_cam", "norm_cam")
GRADIENT_CAMS = ("grad_cam", "layer_cam", "norm_cam")

_EPS = 1e-7


@contextmanager
def capture(net: nn.Module, paths: Sequence[str]) -> Iterator[dict[str, torch.Tensor]]:
    """Record the outputs of the modules at ``paths`` during the forwards run inside the block."""
    modules = dict(net.named_modules())
    missing = [p for p in paths if p not in modules]
    if missing:
        raise UserError(f"layer {missing[0]!r} is not a module of the classifier")
    store: dict[str, torch.Tensor] = {}
    handles = []
    try:
        for p in paths:

            def hook(_m, _inp, out, p=p):
                store[p] = out[0] if isinstance(out, (tuple, list)) else out

            handles.append(modules[p].register_forward_hook(hook))
        yield store
    finally:
        for h in handles:
            h.remove()


def minmax(cam: torch.Tensor) -> torch.Tensor:
    """Per-image min-max scaling of maps [B, 1, H, W] (differentiable)."""
    flat = cam.flatten(1)
    lo = flat.min(dim=1).values[:, None, None, None]
    hi = flat.max(dim=1).values[:, None, None, None]
    return (cam - lo) / (hi - lo + _EPS)


def finish(raw: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """ReLU, bilinear upsampling to ``size`` and min-max scaling of raw maps [B, 1, h, w]."""
    cam = F.relu(raw)
    if tuple(cam.shape[-2:]) != tuple(size):
        cam = F.interpolate(cam, size=tuple(size), mode="bilinear", align_corners=False)
    return minmax(cam)


def channel_norm(x: torch.Tensor) -> torch.Tensor:
    """L2 norm over channels [B, K, h, w] -> [B, 1, h, w], with a gradient that stays finite at 0."""
    return torch.sqrt(x.pow(2).sum(dim=1, keepdim=True) + 1e-12)


def raw_gradient_cam(cam_type: str, a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Raw map [B, 1, h, w] of a gradient CAM from activations and gradients [B, K, h, w]."""
    if cam_type == "grad_cam":
        return (g.mean(dim=(2, 3), keepdim=True) * a).sum(dim=1, keepdim=True)
    if cam_type == "layer_cam":
        return (F.relu(g) * a).sum(dim=1, keepdim=True)
    if cam_type == "norm_cam":
        return channel_norm(F.relu(g * a))
    raise ValueError(f"{cam_type!r} is not a gradient CAM ({', '.join(GRADIENT_CAMS)})")


def _grad_enabled_input(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``x``, made to require grad when no parameter does (so the activations have a graph)."""
    if x.requires_grad or any(p.requires_grad for p in net.parameters()):
        return x
    return x.detach().requires_grad_(True)


def multilayer_cam(
    net: nn.Module,
    x: torch.Tensor,
    layers: Sequence[str],
    cam_type: str,
    *,
    create_graph: bool = False,
    fraction: float = 1.0,
    chunk_size: int = 64,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean CAM of ``layers`` [B, 1, H, W] in [0, 1] and the logits [B, 1] of ``net`` on ``x``.

    ``create_graph=True`` (training) keeps the CAM differentiable w.r.t. the weights: the
    gradient CAMs take their gradients with ``create_graph=True`` and Score-CAM keeps the graph
    of its masked forwards. ``fraction`` < 1 makes Score-CAM use a random subset of that share
    of the channels of every layer (drawn from ``generator`` or the global torch RNG).
    Without ``create_graph`` the result is detached.
    """
    if cam_type not in CAM_TYPES:
        raise UserError(f"cam_type {cam_type!r} is not one of {', '.join(CAM_TYPES)}")
    if not layers:
        raise UserError("ECSPLAIN needs at least one CAM layer")
    size = x.shape[-2:]
    with torch.enable_grad() if (create_graph or cam_type in GRADIENT_CAMS) else torch.no_grad():
        if cam_type in GRADIENT_CAMS:
            x = _grad_enabled_input(net, x)
        with capture(net, layers) as feats:
            logits = net(x)
        acts = [feats[p] for p in layers]
        if cam_type in GRADIENT_CAMS:
            grads = torch.autograd.grad(logits[:, 0].sum(), acts, create_graph=create_graph)
            maps = [finish(raw_gradient_cam(cam_type, a, g), size) for a, g in zip(acts, grads)]
        else:
            maps = [_score_cam_layer(net, x, a, logits, fraction, chunk_size, generator) for a in acts]
        cam = torch.stack(maps).mean(dim=0)
    if not create_graph:
        cam, logits = cam.detach(), logits.detach()
    return cam, logits


def _score_cam_layer(
    net: nn.Module,
    x: torch.Tensor,
    a: torch.Tensor,
    logits: torch.Tensor,
    fraction: float,
    chunk_size: int,
    generator: torch.Generator | None,
    fill: float = 0.5,
) -> torch.Tensor:
    b, k = a.shape[:2]
    if fraction < 1.0:
        n = max(1, int(round(fraction * k)))
        idx = torch.randperm(k, generator=generator)[:n].to(a.device)
        a = a[:, idx]
        k = n
    up = F.interpolate(a, size=tuple(x.shape[-2:]), mode="bilinear", align_corners=False)
    flat = up.flatten(2)
    lo = flat.min(dim=2).values[..., None, None]
    hi = flat.max(dim=2).values[..., None, None]
    up = (up - lo) / (hi - lo + 1e-6)
    # the authors multiply their [-1, 1] input by the mask; in [0, 1] that is masking towards 0.5
    masked = (fill + (x[:, None] - fill) * up[:, :, None]).flatten(0, 1)  # [B * k, C, H, W], image-major
    scores = torch.cat([net(masked[s : s + chunk_size])[:, 0] for s in range(0, masked.shape[0], chunk_size)])
    weights = torch.softmax(scores.reshape(b, k) - logits[:, :1], dim=1)
    raw = (a * weights[:, :, None, None]).sum(dim=1, keepdim=True)
    return finish(raw, x.shape[-2:])


class NormCAM:
    """Norm-CAM (ECSPLAIN, Bralet et al. 2025): the L2 norm over channels of
    ReLU(gradient x activation), at one layer or at each layer of a fused ``mean(...)`` layer.

    The raw map is :func:`channel_norm`, the function the training-time CAM uses (its 1e-12
    under the square root keeps the training gradient finite and shifts the map by at most
    1e-6 before the min-max); the engine then applies ReLU, min-max, resizing and min-max."""

    name = "norm_cam"
    needs = Pass.ACTIVATIONS | Pass.GRADIENTS

    def explain(self, ctx: ExplainContext) -> torch.Tensor:
        return channel_norm(F.relu(ctx.gradients * ctx.activations))[:, 0]
