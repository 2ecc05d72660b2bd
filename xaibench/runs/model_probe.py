"""A model's layers as a user picks them: module path, alias, output shape and channels, from
one forward of one sample with hooks (``xaibench layers``); and the seconds a forward costs
(``xaibench validate``'s estimate of a grid's cost).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from xaibench.engine.replay import record, replayable
from xaibench.errors import UserError
from xaibench.models.base import LoadedModel, Tail, logits_of


@dataclass(frozen=True)
class LayerInfo:
    """One module of a model: its path, aliases, class, output shape (one image) and whether
    the model splits there (a tail: Ablation-CAM runs only the rest of the network)."""

    path: str
    aliases: tuple[str, ...]
    kind: str
    shape: tuple[int, ...] | None
    tail: str  #: "yes" (the model's own), "replay" (derived by replaying the forward, checked when used) or ""

    @property
    def channels(self) -> int | None:
        """Channels of a feature map ``[1, K, h, w]`` (what Score-CAM and Ablation-CAM scale with)."""
        return self.shape[1] if self.shape is not None and len(self.shape) == 4 else None


@dataclass
class Probe:
    layers: list[LayerInfo]
    logits: torch.Tensor
    outputs: dict[str, Any]  #: raw outputs of the modules asked for with ``keep``
    hookable: bool  #: False for TorchScript: its inner layers run where no hook reaches


def _shape(out: Any) -> tuple[int, ...] | None:
    """The shape of a tensor output; None for anything else (an encoder's list of features: the
    engine would capture only its first element, so it is not a layer to explain)."""
    return tuple(out.shape) if torch.is_tensor(out) else None


def probe(model: LoadedModel, image: torch.Tensor, keep: tuple[str, ...] = ()) -> Probe:
    """Every module's output shape on ``image`` ``[C, H, W]`` (one forward, hooks removed after)."""
    module = model.module
    hookable = not isinstance(module, torch.jit.ScriptModule)
    store: dict[str, Any] = {}
    finished: list[str] = []
    x = image[None].to(model.device)
    try:
        if hookable:
            logits, finished, store = record(module, x)
        else:
            with torch.no_grad():
                logits = logits_of(module(x))
    except (RuntimeError, ValueError, TypeError, AssertionError) as exc:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"the model fails on an image of {tuple(image.shape)} (C x H x W): {text}") from exc
    aliases: dict[str, list[str]] = {}
    for alias, path in model.layers.items():
        aliases.setdefault(path, []).append(alias)
    infos = []
    for path, mod in module.named_modules():
        shape = tuple(logits.shape) if path == "" else _shape(store.get(path))
        tail = "" if not path or not hookable or shape is None else "yes" if model.tail(path) is not None else "replay" if replayable(finished, path) else ""
        infos.append(LayerInfo(path, tuple(aliases.get(path, ())), _kind(mod), shape, tail))
    return Probe(infos, logits, {p: store[p] for p in keep if p in store}, hookable)


def _kind(mod: nn.Module) -> str:
    name = type(mod).__name__
    return getattr(mod, "original_name", name) if isinstance(mod, torch.jit.ScriptModule) else name


def _median_seconds(fn, repeats: int = 3) -> float:
    times = []
    with torch.no_grad():
        fn()  # warm-up: allocator, kernel choice (twice: the first call of a new shape pays for both)
        fn()
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def forward_seconds(model: LoadedModel, image: torch.Tensor, rows: int) -> tuple[float, float]:
    """Seconds of one forward of one image, and per row of a forward of ``rows`` copies (how
    masked forwards and perturbed inputs are batched)."""
    x = image[None].to(model.device)
    one = _median_seconds(lambda: model.module(x))
    batch = x.expand(rows, *x.shape[1:]).contiguous()
    return one, _median_seconds(lambda: model.module(batch)) / rows


def tail_seconds(tail: Tail, activation: torch.Tensor, outputs: dict[str, Any], rows: int) -> float:
    """Seconds per row of the tail run on ``rows`` copies of one image's activation."""
    idx = torch.zeros(rows, dtype=torch.long, device=activation.device)
    acts = activation.expand(rows, *activation.shape[1:]).contiguous()
    extras = {name: outputs[name] for name in tail.extra}
    return _median_seconds(lambda: tail.fn(acts, extras, idx)) / rows
