"""The shared pass: one forward with hooks on every requested layer, one backward if asked.

Hooks are registered here and nowhere else, and always removed in ``finally``. The backward
uses ``torch.autograd.grad`` with the hooked activations as the only inputs, so no parameter
gradient is computed or accumulated and the user's model is left exactly as it was.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from xaibench.config.vocabulary import INPUT_LAYER
from xaibench.models.base import logits_of


@dataclass
class Captured:
    """Outputs of the shared pass (all detached)."""

    logits: torch.Tensor
    activations: dict[str, torch.Tensor] = field(default_factory=dict)
    gradients: dict[str, torch.Tensor] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)
    input_gradients: torch.Tensor | None = None  #: d(score)/d(images), when asked


class PassCounter:
    """Counts network passes (tests and benchmarks check the runner's pass budget with it)."""

    def __init__(self) -> None:
        self.forwards = 0  # full forwards (batches)
        self.forward_rows = 0  # images pushed through full forwards
        self.backwards = 0
        self.tail_forwards = 0
        self.tail_rows = 0
        self.perturbed_requested = 0  # perturbed rows the cells ask for ...
        self.perturbed_forwarded = 0  # ... and those forwarded (identical inputs once, clean ones not at all)


def _detach(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, (list, tuple)):
        return type(value)(_detach(v) for v in value)
    if isinstance(value, dict):
        return {k: _detach(v) for k, v in value.items()}
    return value


@contextmanager
def hooked(
    module: nn.Module, paths: list[str], store: dict[str, Any], replace: dict[str, torch.Tensor] | None = None, order: list[str] | None = None
) -> Iterator[None]:
    """Record the output of each module in ``paths`` into ``store`` (or replace it, for
    ``replace``); ``order`` gets each module's path every time its forward returns."""
    modules = dict(module.named_modules())
    handles = []
    try:
        for path in paths:
            def hook(_m, _inp, out, path=path):
                if replace is not None and path in replace:  # a list or tuple: its first element (logits_of)
                    return type(out)([replace[path], *out[1:]]) if isinstance(out, (list, tuple)) else replace[path]
                if order is not None:
                    order.append(path)
                store[path] = out
            handles.append(modules[path].register_forward_hook(hook))
        yield
    finally:
        for h in handles:
            h.remove()


def shared_pass(
    module: nn.Module,
    images: torch.Tensor,
    layers: list[str],
    *,
    score: Callable[[torch.Tensor], torch.Tensor] | None = None,
    extra: list[str] | None = None,
    counter: PassCounter | None = None,
    input_gradients: bool = False,
) -> Captured:
    """Forward ``images`` once, capturing ``layers`` (and ``extra`` module outputs).

    If ``score`` is given (logits -> per-image scores), run one backward of their sum to the
    captured activations and return their gradients as well; with ``input_gradients``, the
    same backward also gives d(score)/d(images) (Saliency, Input x Gradient).
    """
    extra = list(dict.fromkeys(extra or []))  # INPUT_LAYER among them: the images; a layer too, where a tail needs it
    store: dict[str, Any] = {}
    want_input = score is not None and input_gradients
    want_grad = score is not None and (bool(layers) or want_input)
    if want_grad:  # a graph even when the model's parameters are frozen; its gradient is never computed
        images = images.detach().requires_grad_(True)
    paths = list(dict.fromkeys(layers + [p for p in extra if p != INPUT_LAYER]))
    with hooked(module, paths, store), torch.set_grad_enabled(want_grad):
        logits = logits_of(module(images))
    if counter is not None:
        counter.forwards += 1
        counter.forward_rows += images.shape[0]
    acts = {p: logits_of(store[p]) for p in layers}
    grads: dict[str, torch.Tensor] = {}
    input_grad = None
    if want_grad:
        total = score(logits).sum()
        wrt = [acts[p] for p in layers] + ([images] if want_input else [])
        if total.requires_grad:
            got = list(torch.autograd.grad(total, wrt, allow_unused=True))
        else:  # the target selects nothing differentiable (e.g. empty regions everywhere)
            got = [None] * len(wrt)
        for p, g in zip(layers, got):
            grads[p] = torch.zeros_like(acts[p]) if g is None else g.detach()
        if want_input:
            input_grad = torch.zeros_like(images) if got[-1] is None else got[-1].detach()
        if counter is not None:
            counter.backwards += 1
    return Captured(
        logits=logits.detach(),
        activations={p: a.detach() for p, a in acts.items()},
        gradients=grads,
        extras={p: images.detach() if p == INPUT_LAYER else _detach(store[p]) for p in extra},
        input_gradients=input_grad,
    )


class Scorer(nn.Module):
    """The explained score as a differentiable module: ``scorer(inputs, idx)`` is the target
    score [N] of ``inputs`` [N, C, H, W], row n scored with the target of image ``idx[n]``.

    Pixel attributions hand it to Captum (which hooks the nonlinearities of the wrapped model for
    Guided Backprop and DeepLift, and expands ``idx`` with the inputs as an additional forward
    argument). Every forward and every backward through it is counted in ``counter``.
    """

    def __init__(self, module: nn.Module, target: Any, counter: PassCounter | None = None):
        super().__init__()
        self.model = module
        self._target = target
        self._counter = counter

    def forward(self, inputs: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        scores = self._target.select(idx).score(logits_of(self.model(inputs)))
        counter = self._counter
        if counter is not None:
            counter.forwards += 1
            counter.forward_rows += inputs.shape[0]
            if scores.requires_grad:
                scores.register_hook(lambda g: _count_backward(counter, g))
        return scores


def _count_backward(counter: PassCounter, grad: torch.Tensor) -> torch.Tensor:
    counter.backwards += 1
    return grad


@torch.no_grad()
def forward_replacing(module: nn.Module, images: torch.Tensor, layer: str, activation: torch.Tensor) -> torch.Tensor:
    """Logits of ``images`` with ``layer``'s output replaced by ``activation`` (no module is swapped)."""
    with hooked(module, [layer], {}, replace={layer: activation}):
        return logits_of(module(images))
