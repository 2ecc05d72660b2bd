"""The plugin hooks of xaibench (pluggy, project name ``xaibench``).

A plugin is a module named by an entry point in the ``xaibench`` group. It implements any of
the hooks below with ``@hookimpl`` (from :mod:`xaibench.plugin`, the one import path); each hook receives a ``register`` callback and
calls it once per class it provides::

    from xaibench.plugin import hookimpl

    @hookimpl
    def register_explainers(register):
        register(MyCAM)

Built-in explainers, metrics, datasets and models are registered through these same hooks.
"""

from __future__ import annotations

from collections.abc import Callable

import pluggy

hookspec = pluggy.HookspecMarker("xaibench")
hookimpl = pluggy.HookimplMarker("xaibench")


@hookspec
def register_explainers(register: Callable[[type], None]) -> None:
    """Register explainer classes (``name``, ``needs``, ``explain(ctx) -> Tensor[B, h, w]``)."""


@hookspec
def register_metrics(register: Callable[[type], None]) -> None:
    """Register metric classes (``name``, ``direction``, ``uses_threshold``, ``perturbation``, ``compute(ctx)``)."""


@hookspec
def register_datasets(register: Callable[[type], None]) -> None:
    """Register dataset classes (``name``, ``num_classes``, ``split(name)``, ``channel_mean()``)."""


@hookspec
def register_models(register: Callable[[type], None]) -> None:
    """Register model classes (``name``, ``load(ctx: LoadContext) -> LoadedModel``)."""
