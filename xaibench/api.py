"""The Python API: :func:`explain` for notebooks and :func:`run` for benchmarks.

Both use the same engine as the CLI runner.
"""

from __future__ import annotations

import os
import sys
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from xaibench.config.parse import instantiate
from xaibench.config.vocabulary import INPUT_LAYER
from xaibench.engine.heatmaps import HeatmapEngine
from xaibench.engine.targets import TargetSpec
from xaibench.errors import UserError
from xaibench.explainers.base import explains_input
from xaibench.models.base import LoadedModel, Task, infer_task, logits_of
from xaibench.registry.discovery import HOOKS, KINDS, Registry, load_registry


def _as_list(x) -> list:
    return list(x) if isinstance(x, (list, tuple)) else [x]


def explain(
    model: nn.Module | LoadedModel,
    images: torch.Tensor,
    methods: str | Sequence[str],
    layers: str | nn.Module | Sequence[str | nn.Module],
    target: TargetSpec | int | Sequence[int] | torch.Tensor | None = None,
    *,
    ground_truth: torch.Tensor | None = None,
    method_params: dict[str, dict[str, Any]] | None = None,
    chunk_size: int = 16,
) -> dict[tuple[str, str], torch.Tensor] | torch.Tensor:
    """Explanation maps of ``images`` [B, C, H, W] for every method x layer, sharing passes.

    ``methods``: registered explainer names (wildcards allowed, e.g. ``"*grad*"``).
    ``layers``: module paths (``"decoder.blocks.4"``), aliases, or modules of ``model``.
    ``target``: None (the predicted mask of class 1, or the predicted class for a classifier),
    a class id, one class id per image, masks [B, H, W], or a :class:`TargetSpec`.
    Returns ``{(method, layer): Tensor[B, H, W]}`` in [0, 1], keyed by the layer as given
    (modules by their path), or a single tensor when one method and one layer are given.
    A pixel attribution (``saliency``, ``integrated_gradients``, ...) explains the input: it is
    computed once and given under every layer (``layers = "input"`` names it alone).
    The model is put in eval mode for the call and restored to its previous mode.
    """
    if images.ndim != 4:
        raise UserError(f"images must be a [B, C, H, W] tensor, got shape {tuple(images.shape)}")
    registry = _registry()
    names = registry.expand("explainers", _as_list(methods))
    params = method_params or {}
    for n in params:
        try:
            registry.entry("explainers", n)  # a variant NAME:VARIANT is explainer NAME
        except UserError as exc:
            raise UserError(f"method_params: {exc}") from None
    instances: dict[str, Any] = {}

    def add(name: str) -> None:  # an explainer and, recursively, the bases it composes
        if name not in instances:
            instances[name] = instantiate(registry.get("explainers", name), params.get(name, {}), f"method_params[{name!r}]:")
            for base in getattr(instances[name], "composes", ()):
                add(base)

    for n in names:
        add(n)
    loaded = model if isinstance(model, LoadedModel) else None
    module = loaded.module if loaded else model
    was_training = module.training
    module.eval()
    try:
        if loaded is None:
            loaded = _plain(module, task_of(module, images))
        given = _as_list(layers)
        paths = [loaded.resolve_layer(l) for l in given]
        labels = [l if isinstance(l, str) else p for l, p in zip(given, paths)]
        engine = HeatmapEngine(loaded, instances, chunk_size=chunk_size)

        def at(name: str, path: str) -> str:  # a pixel attribution explains the input, once
            return INPUT_LAYER if explains_input(instances[name], instances) else path

        pairs = list(dict.fromkeys((n, at(n, p)) for n in names for p in paths))
        out = engine.run(images, paths, ground_truth=ground_truth, target=target, pairs=pairs)
    finally:
        module.train(was_training)
    result = {(n, label): out.maps[(n, at(n, p))] for n in names for label, p in zip(labels, paths)}
    if len(result) == 1 and isinstance(methods, str) and not isinstance(layers, (list, tuple)) and not any(c in methods for c in "*?["):
        return next(iter(result.values()))
    return result


#: explain()'s last plugin discovery: (what discovery read, its plugin modules' hooks, the registry)
_DISCOVERY: list[tuple[tuple, dict, Registry]] = []


def _registry() -> Registry:
    """The plugin registry, discovered again only where what discovery reads may have changed.

    Discovery reads every installed distribution's metadata (about 8 ms on 2 CPU cores, 2-3 % of
    an 8-image Saliency call of a ResNet-18 U-Net at 128 px): a fixed cost of every call. Its
    registry is kept while :func:`_discovery_state` is the same (``sys.path`` and the
    modification time of each of its folders: installing, upgrading or removing a distribution
    adds or removes its metadata folder there; ``XAIBENCH_DISABLE_PLUGINS``) and every plugin
    module it came from has the same hook functions (a module reloaded in a notebook is read again).
    """
    state = _discovery_state()
    if _DISCOVERY:
        last_state, hooks, registry = _DISCOVERY[0]
        if last_state == state and hooks == _hooks(hooks):
            return registry
    registry = load_registry()
    _DISCOVERY[:] = [(state, _hooks({e.module for kind in KINDS for e in registry.entries(kind)}), registry)]
    return registry


def _discovery_state() -> tuple:
    def mtime(path: str) -> int | None:
        try:
            return os.stat(path or ".").st_mtime_ns
        except OSError:
            return None

    return (load_registry, os.environ.get("XAIBENCH_DISABLE_PLUGINS"), tuple((p, mtime(p)) for p in sys.path))


def _hooks(modules) -> dict[str, tuple]:
    """Each plugin module's hook functions (by identity: functions compare by it)."""
    return {m: tuple(getattr(sys.modules.get(m), h, None) for h in HOOKS) for m in modules}


#: plain module -> (its structure, its task): what a probe forward found, kept while the module lives
_TASKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def task_of(module: nn.Module, images: torch.Tensor) -> Task:
    """The task of a plain module: read from its architecture where that says it (an smp
    model's segmentation head: 1 output channel is ``binary``, more ``multiclass``), else from
    the logits of one 1-image probe forward, made on the module's first call only and
    remembered while the module lives and its structure (module paths, types and parameter
    shapes) stays the same, so a replaced head is probed again. The probe was a fixed cost of
    every call (a forward of one image, about 1/8 of the 8-image call's own forward)."""
    task = _head_task(module)
    if task is not None:
        return task
    structure = _structure(module)
    known = _TASKS.get(module)
    if known is not None and known[0] == structure:
        return known[1]
    device = next((p.device for p in module.parameters()), torch.device("cpu"))
    with torch.no_grad():
        task = infer_task(logits_of(module(images[:1].to(device))))
    _TASKS[module] = (structure, task)
    return task


def _head_task(module: nn.Module) -> Task | None:
    """``binary`` or ``multiclass`` from an smp model's ``SegmentationHead`` (its convolution's
    output channels are the logits' channels), or None where the module is not one."""
    from xaibench.models import model_sources as src

    if not src.is_smp(module):
        return None
    from segmentation_models_pytorch.base import SegmentationHead

    head = module.segmentation_head
    if type(head) is not SegmentationHead or not isinstance(head[0], nn.Conv2d):
        return None  # a head of the user's own: its output is what a probe finds out
    return "binary" if head[0].out_channels == 1 else "multiclass"


def _structure(module: nn.Module) -> tuple:
    """What a module's task follows from, short of its forward code: every submodule's path,
    type and parameter shapes (about 0.3 ms for a ResNet-18 U-Net; no weight is read)."""
    return tuple((path, type(m), tuple(p.shape for p in m.parameters(recurse=False))) for path, m in module.named_modules())


def _plain(module: nn.Module, task) -> LoadedModel:
    """A plain module as a LoadedModel; a segmentation-models-pytorch model gets its layer
    aliases and tails (tail-only Ablation-CAM), as the ``torch_model`` plugin gives it.

    Its identity is not the hash of its weights (O(parameters), 36 ms for a ResNet-18 U-Net: a
    fixed cost of every call): :func:`explain`'s maps live in the call's own in-memory cache,
    so the identity keys nothing that outlives the call."""
    from xaibench.models import model_sources as src

    identity = f"explain-call:{type(module).__qualname__}@{id(module):x}"
    if src.is_smp(module):
        return LoadedModel(module=module, task=task, layers=src.smp_layers(module), tail=lambda path: src.smp_tail(module, path), identity=identity)
    return LoadedModel(module=module, task=task, identity=identity)


def run(config_or_path: Any, out: str | Path | None = None, **options: Any):
    """Run a benchmark (a TOML path or a :class:`xaibench.config.parse.Config`); returns the tidy results."""
    from xaibench.config.parse import Config, load_config
    from xaibench.runs.runner import run_benchmark

    config = config_or_path if isinstance(config_or_path, Config) else load_config(config_or_path)
    return run_benchmark(config, out=out, **options)
