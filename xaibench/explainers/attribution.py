"""Pixel attributions (Saliency, Input x Gradient, Integrated Gradients, GradientSHAP, Occlusion,
DeepLift, Guided Backprop), through Captum, explaining the same target as every CAM.

Each explains the input, not a layer (``explains = "input"``: one grid cell, layer ``input``).
Captum's attribution [B, C, H, W] becomes a map [B, H, W] by summing over channels (a pixel's
attribution is the sum of its channels'); ``sign = "positive"`` (default) keeps the evidence for
the target (the engine's ReLU, as for CAMs), ``sign = "absolute"`` takes the magnitude. The map
then goes through the same min-max normalisation, thresholds, perturbations and metrics.

Costs per batch of B images (see docs/explainers.md): Saliency and Input x Gradient read the
input gradient of the ONE shared backward (free beside the CAMs); Integrated Gradients costs
``n_steps`` forwards and backwards per image, GradientSHAP ``n_samples``, Occlusion one forward
per window position, DeepLift and Guided Backprop one (modified) backward (Guided Grad-CAM's
Guided Backprop is the same one, computed once per batch). Steps, samples and
windows are batched, at most ``[run] chunk_size`` rows per forward.
"""

from __future__ import annotations

import contextlib
import copy
import warnings
import weakref
from collections import Counter
from collections.abc import Iterator

import numpy as np
import torch
from captum import attr as captum_attr

from xaibench.engine.perturbation import fill_values
from xaibench.errors import UserError
from xaibench.explainers.base import ExplainContext
from xaibench.registry.passes import Pass

SIGNS = ("positive", "absolute")
BASELINES = ("zero", "blur", "image_mean")


def check_sign(name: str, sign: str) -> str:
    if sign not in SIGNS:
        raise UserError(f"{name}: sign = {sign!r} is not one of {', '.join(map(repr, SIGNS))}")
    return sign


def reduce_channels(attribution: torch.Tensor, sign: str) -> torch.Tensor:
    """A map [B, H, W] from an attribution [B, C, H, W]: the channel sum, or its magnitude."""
    total = attribution.sum(dim=1)
    return total.abs() if sign == "absolute" else total


def baseline_of(images: torch.Tensor, baseline: str | float) -> torch.Tensor:
    """The reference input: zeros, a blurred copy, each image's channel mean, or a constant."""
    if isinstance(baseline, (int, float)):
        return torch.full_like(images, float(baseline))
    if baseline == "image_mean":
        return images.mean(dim=(2, 3), keepdim=True).expand_as(images).clone()
    return fill_values(images, baseline)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Captum's notices that it sets hooks and requires_grad on the inputs it is given (what
    it is asked to do, every batch) silenced; its other warnings pass."""
    with warnings.catch_warnings():
        for text in ("Setting forward, backward hooks", "Setting backward hooks", "did not already require gradients"):
            warnings.filterwarnings("ignore", message=f".*{text}", category=UserWarning)
        yield


@contextlib.contextmanager
def seeded(image_key: str, seed: int) -> Iterator[None]:
    """Torch's and numpy's global generators (which Captum draws from) seeded by the image's
    content and ``seed``, restored afterwards: the same image always gets the same map."""
    value = (int(image_key[:12], 16) + seed) % (2**32)
    state = np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(value)
        np.random.seed(value)
        try:
            yield
        finally:
            np.random.set_state(state)


class _Attribution:
    """A pixel attribution: the channel reduction and its ``sign`` parameter."""

    explains = "input"
    needs = Pass.MODEL_PASSES

    def __init__(self, sign: str = "positive"):
        self.sign = check_sign(self.name, sign)

    def explain(self, ctx: ExplainContext) -> torch.Tensor:
        with torch.enable_grad(), quiet():
            attribution = self.attribute(ctx, ctx.images.detach(), torch.arange(ctx.images.shape[0], device=ctx.images.device))
        return reduce_channels(attribution.detach(), self.sign)

    def attribute(self, ctx: ExplainContext, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class _WithBaseline(_Attribution):
    def __init__(self, baseline: str | float = "zero", sign: str = "positive"):
        super().__init__(sign)
        if not isinstance(baseline, (int, float)) and baseline not in BASELINES:
            raise UserError(f"{self.name}: baseline = {baseline!r} is not a number or one of {', '.join(map(repr, BASELINES))}")
        self.baseline = baseline


def _positive(name: str, key: str, value: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise UserError(f"{name}: {key} must be a positive integer, got {value!r}")
    return value


class Saliency(_Attribution):
    """Saliency (Simonyan et al. 2014): the gradient's magnitude, |d score / d input|
    (Captum's ``Saliency``, ``abs=True``), from the shared backward."""

    name = "saliency"
    needs = Pass.INPUT_GRADIENTS

    def explain(self, ctx: ExplainContext) -> torch.Tensor:
        return reduce_channels(ctx.input_gradients.abs(), self.sign)


class InputXGradient(_Attribution):
    """Input x Gradient (Shrikumar et al. 2016), from the shared backward."""

    name = "input_x_gradient"
    needs = Pass.INPUT_GRADIENTS

    def explain(self, ctx: ExplainContext) -> torch.Tensor:
        return reduce_channels(ctx.images * ctx.input_gradients, self.sign)


class IntegratedGradients(_WithBaseline):
    """Integrated Gradients (Sundararajan et al. 2017): ``n_steps`` points on the path from the
    baseline (``method`` is Captum's quadrature, default Gauss-Legendre), batched by chunk_size."""

    name = "integrated_gradients"

    def __init__(self, n_steps: int = 32, method: str = "gausslegendre", baseline: str | float = "zero", sign: str = "positive"):
        super().__init__(baseline, sign)
        self.n_steps = _positive(self.name, "n_steps", n_steps)
        methods = ("gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid")
        if method not in methods:
            raise UserError(f"{self.name}: method = {method!r} is not one of {', '.join(map(repr, methods))}")
        self.method = method

    def attribute(self, ctx, x, idx):
        ig = captum_attr.IntegratedGradients(ctx.scorer)
        batch = max(ctx.chunk_size, x.shape[0])  # Captum fits chunk // B steps in each forward
        return ig.attribute(x, baselines=baseline_of(x, self.baseline), additional_forward_args=(idx,), n_steps=self.n_steps, method=self.method, internal_batch_size=batch)


class GradientShap(_WithBaseline):
    """GradientSHAP (Lundberg & Lee 2017): the gradient at ``n_samples`` random points between
    the input (plus Gaussian noise of ``stdevs``) and the ``baseline``, times (input - baseline),
    averaged (Captum's ``GradientShap`` with a one-image baseline distribution). Seeded per image (``seed`` and the image's content); the samples of one image are batched
    by chunk_size (Captum's NoiseTunnel with ``nt_samples_batch_size``)."""

    name = "gradient_shap"

    def __init__(self, n_samples: int = 16, stdevs: float = 0.0, baseline: str | float = "zero", seed: int = 0, sign: str = "positive"):
        super().__init__(baseline, sign)
        self.n_samples = _positive(self.name, "n_samples", n_samples)
        if not isinstance(stdevs, (int, float)) or stdevs < 0:
            raise UserError(f"{self.name}: stdevs must be a number >= 0, got {stdevs!r}")
        self.stdevs = float(stdevs)
        self.seed = seed

    def attribute(self, ctx, x, idx):
        out = []
        for i in range(x.shape[0]):  # one image at a time: its map does not depend on its batch
            with seeded(ctx.image_keys[i], self.seed):
                out.append(self.one(ctx.scorer, x[i : i + 1], idx[i : i + 1], ctx.chunk_size))
        return torch.cat(out)

    def one(self, scorer, x: torch.Tensor, idx: torch.Tensor, chunk_size: int) -> torch.Tensor:
        """Captum's GradientShap, with the samples batched by ``chunk_size``."""
        nt = captum_attr.NoiseTunnel(_InputBaselineXGradient(scorer))
        return nt.attribute(
            x,
            nt_type="smoothgrad",
            nt_samples=self.n_samples,
            nt_samples_batch_size=max(1, min(self.n_samples, chunk_size)),
            stdevs=self.stdevs,
            draw_baseline_from_distrib=True,
            baselines=baseline_of(x, self.baseline),
            additional_forward_args=(idx,),
        )


def _InputBaselineXGradient(scorer):  # noqa: N802 (Captum's class, not public in captum.attr)
    from captum.attr._core.gradient_shap import InputBaselineXGradient

    return InputBaselineXGradient(scorer)


class Occlusion(_WithBaseline):
    """Occlusion (Zeiler & Fergus 2014): the score drop when a ``window`` x ``window`` patch
    (all channels) is replaced by the baseline, slid by ``stride`` (default window // 2); the
    window positions are batched by chunk_size."""

    name = "occlusion"

    def __init__(self, window: int = 8, stride: int | None = None, baseline: str | float = "zero", sign: str = "positive"):
        super().__init__(baseline, sign)
        self.window = _positive(self.name, "window", window)
        self.stride = _positive(self.name, "stride", stride) if stride is not None else max(1, window // 2)

    def attribute(self, ctx, x, idx):
        c = x.shape[1]
        occ = captum_attr.Occlusion(ctx.scorer)
        per_eval = max(1, ctx.chunk_size // x.shape[0])
        return occ.attribute(
            x,
            sliding_window_shapes=(c, self.window, self.window),
            strides=(c, self.stride, self.stride),
            baselines=baseline_of(x, self.baseline),
            additional_forward_args=(idx,),
            perturbations_per_eval=per_eval,
        )


class DeepLift(_WithBaseline):
    """DeepLift (Shrikumar et al. 2017) with Captum's Rescale rule against ``baseline``: one
    forward of inputs and baselines and one modified backward. Captum attaches the rule to
    nonlinearity *modules* and refuses a module called twice in one forward (a ResNet block's
    ``relu``), so such a module is given, for the call, one copy per call site (the rule is
    per call site; the copies share nothing that changes the forward). A functional activation
    (``F.relu``) has no module and passes the plain gradient, as in Captum."""

    name = "deeplift"

    def attribute(self, ctx, x, idx):
        with _no_inplace(ctx.scorer), _unshared(ctx.scorer, x[:1], idx[:1]):
            return captum_attr.DeepLift(ctx.scorer).attribute(x, baselines=baseline_of(x, self.baseline), additional_forward_args=(idx,))


class _PerCall(torch.nn.Module):
    """A module called n times per forward, as n copies used in call order."""

    def __init__(self, module: torch.nn.Module, n: int):
        super().__init__()
        self.copies = torch.nn.ModuleList(copy.deepcopy(module) for _ in range(n))
        self._calls = 0

    def forward(self, *args, **kwargs):
        module = self.copies[self._calls % len(self.copies)]
        self._calls += 1
        return module(*args, **kwargs)


@contextlib.contextmanager
def _unshared(scorer: torch.nn.Module, x: torch.Tensor, idx: torch.Tensor) -> Iterator[None]:
    """Every nonlinearity module Captum's DeepLift hooks that one forward (of ``x``) calls more
    than once replaced, for the duration, by a :class:`_PerCall` of it; restored afterwards."""
    from captum.attr._core.deep_lift import SUPPORTED_NON_LINEAR

    calls: Counter = Counter()
    handles = [m.register_forward_hook(lambda m, i, o: calls.update([m])) for m in scorer.modules() if type(m) in SUPPORTED_NON_LINEAR]
    try:
        with torch.no_grad():
            scorer(x, idx)
    finally:
        for h in handles:
            h.remove()
    swapped = []
    for parent in list(scorer.modules()):
        for name, child in list(parent._modules.items()):
            if child is not None and calls[child] > 1:
                parent._modules[name] = _PerCall(child, calls[child])
                swapped.append((parent, name, child))
    try:
        yield
    finally:
        for parent, name, child in swapped:
            parent._modules[name] = child


class GuidedBackprop(_Attribution):
    """Guided Backprop (Springenberg et al. 2015): the gradient with every ReLU module's
    backward passing positive gradients only; one forward and one modified backward."""

    name = "guided_backprop"

    def attribute(self, ctx, x, idx):
        return guided_backprop(ctx.scorer, x, idx)


#: scorer (one batch of one engine run) -> (inputs, their key, Guided Backprop attribution)
_GUIDED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def guided_backprop(scorer: torch.nn.Module, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Captum's Guided Backprop of ``scorer`` at ``x``, computed once per batch: Guided Backprop's
    and Guided Grad-CAM's maps of a batch read the same attribution (the same scorer, images and
    rows), as the shared pass is read by every CAM. Kept while the scorer lives; not to be written."""
    key = (x.data_ptr(), x.shape, x.stride(), x.dtype, x.device, x._version, idx.tolist())
    memo = _GUIDED.get(scorer)
    if memo is not None and memo[1] == key:
        return memo[2].clone()
    with _no_inplace(scorer):
        out = captum_attr.GuidedBackprop(scorer).attribute(x, additional_forward_args=(idx,)).detach()
    _GUIDED[scorer] = (x, key, out)  # x held: its memory (the key's address) is not reused meanwhile
    return out


@contextlib.contextmanager
def _no_inplace(module: torch.nn.Module) -> Iterator[None]:
    """In-place activations switched off while Captum hooks them (a backward hook cannot see
    a tensor modified in place); the model is left as it was."""
    switched = [m for m in module.modules() if getattr(m, "inplace", False) is True]
    for m in switched:
        m.inplace = False
    try:
        yield
    finally:
        for m in switched:
            m.inplace = True
