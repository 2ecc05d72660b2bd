"""What a model plugin provides: a network ready for inference plus what xaibench must know about it.

A model plugin registers a class whose constructor keyword arguments are its ``[model]`` config
keys, and whose ``load(ctx)`` (ctx: :class:`xaibench.models.training.LoadContext` with the
dataset, device and cache directory) returns a :class:`LoadedModel`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from xaibench.config.hashing import content_hash
from xaibench.errors import UserError, did_you_mean

Task = Literal["binary", "multiclass", "classifier"]


@dataclass(frozen=True)
class Tail:
    """The network from a layer's output to the logits, for ablation-style explainers.

    ``extra`` names modules whose outputs the tail also needs (e.g. a U-Net's encoder, for the
    skip connections); the runner captures them in the shared forward. ``fn(activation, extras,
    idx)`` maps a batch of (modified) layer outputs to logits, where row ``n`` comes from image
    ``idx[n]`` of the captured batch, so ``extras`` must be indexed with ``idx``.
    """

    extra: tuple[str, ...]
    fn: Callable[[torch.Tensor, dict[str, Any], torch.Tensor], torch.Tensor]


@dataclass
class LoadedModel:
    """A model in eval mode on its device, with its task, layer aliases and optional tail splits.

    task: ``binary`` (logits [B, 1, H, W], sigmoid), ``multiclass`` (logits [B, C, H, W],
    softmax) or ``classifier`` (logits [B, C]; C == 1 means a sigmoid classifier).
    layers: alias -> module path (e.g. ``decoder1 -> decoder.blocks.4``), or -> a fused layer of
    other aliases or paths (e.g. ``cam -> "mean(c1, conv2, conv3)"``).
    tail: module path -> :class:`Tail` or None where the model cannot be split there.
    randomizable: module paths re-initialised by the model-randomisation sanity check.
    """

    module: nn.Module
    task: Task
    layers: dict[str, str] = field(default_factory=dict)
    tail: Callable[[str], Tail | None] = lambda path: None
    identity: str = ""
    #: module paths the sanity check re-initialises (empty: the whole model)
    randomizable: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.identity:
            self.identity = weights_hash(self.module)

    @property
    def device(self) -> torch.device:
        for p in self.module.parameters():
            return p.device
        return torch.device("cpu")

    def resolve_layer(self, layer: str | nn.Module) -> str:
        """Module path of ``layer``: an alias, a module path, or a module of this model.

        ``"output"`` names the model's output (the root module, path ``""``), for explainers
        such as ``model_output`` that read no inner layer; ``"input"`` names the input image
        (path ``"input"``), the one layer of a pixel attribution. ``"mean(a, b, ...)"`` is a fused
        layer: the mean of the normalised maps at layers a, b, ... (each resolved the same way;
        the mean is not re-scaled, as ECSPLAIN averages its per-layer CAMs),
        returned as ``"mean(path_a,path_b,...)"``.
        """
        parts = fused_parts(layer) if isinstance(layer, str) else None
        if parts is not None:
            paths = [self.resolve_layer(p) for p in parts]
            nested = [p for p, path in zip(parts, paths) if fused_parts(path) is not None]
            if nested:
                raise UserError(f"fused layer {layer!r}: {nested[0]!r} is itself a fused layer, and fused layers do not nest")
            return "mean(" + ",".join(paths) + ")"
        if layer == "output":
            return ""
        if layer == "input":  # the input image: what a pixel attribution explains
            return "input"
        if isinstance(layer, nn.Module):
            for path, mod in self.module.named_modules():
                if mod is layer:
                    return path
            raise UserError(f"layer {type(layer).__name__} is not a module of this model")
        if layer in self.layers:
            value = self.layers[layer]
            return self.resolve_layer(value) if fused_parts(value) is not None else value
        paths = [p for p, _ in self.module.named_modules() if p]
        if layer in paths:
            return layer
        raise UserError(did_you_mean(layer, list(self.layers) + paths, "layer"))

    def layer_name(self, path: str) -> str:
        """The alias of ``path`` if it has one, else the path itself (used in results)."""
        for alias, p in self.layers.items():
            if p == path or (fused_parts(p) is not None and self._resolves_to(p, path)):
                return alias
        parts = fused_parts(path)
        if parts is not None:
            return "mean(" + ",".join(self.layer_name(p) for p in parts) + ")"
        return path or "output"

    def _resolves_to(self, layer: str, path: str) -> bool:
        try:
            return self.resolve_layer(layer) == path
        except UserError:  # a broken alias names nothing; using it is what reports it
            return False


def fused_parts(layer: str) -> list[str] | None:
    """The layers of a fused layer ``"mean(a, b, ...)"``, or None for a plain layer.

    ECSPLAIN's CAM, for one, is the mean over several layers of per-layer maps; a fused layer
    gives it from the same shared pass as the per-layer maps.
    """
    text = layer.strip()
    if not (text.startswith("mean(") and text.endswith(")")):
        return None
    parts = [p.strip() for p in text[len("mean(") : -1].split(",")]
    if not parts or any(not p for p in parts):
        raise UserError(f"fused layer {layer!r}: expected mean(LAYER, LAYER, ...) with no empty names")
    if any(fused_parts(p) is not None for p in parts):
        raise UserError(f"fused layer {layer!r}: fused layers do not nest")
    return parts


def logits_of(out: Any) -> torch.Tensor:
    """A model's output as its logits: the output itself, or the first element of a tuple or
    list (models that also return auxiliary outputs)."""
    return out[0] if isinstance(out, (tuple, list)) else out


def infer_task(logits: torch.Tensor) -> Task:
    """Task of a bare module from the shape of its output."""
    if logits.ndim == 2:
        return "classifier"
    if logits.ndim == 4:
        return "binary" if logits.shape[1] == 1 else "multiclass"
    raise UserError(
        f"model output has shape {tuple(logits.shape)}; expected [B, C, H, W] (segmentation) or [B, C] (classifier)"
    )


def weights_hash(module: nn.Module) -> str:
    """Content hash of a module's parameters and buffers (identifies a model in caches)."""
    chunks: list[bytes | str] = []
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().cpu().contiguous()
        chunks += [name, str(tuple(t.shape)), (t.float() if t.dtype == torch.bfloat16 else t).numpy().tobytes()]
    return content_hash(*chunks)[:16]
