"""Explainers with a trained network of their own (a CycleGAN, a separate segmentation model).

An explainer class that defines ``fit(self, ctx: FitContext) -> str`` trains (or loads) its
network there and keeps it in a private attribute (``self._net``: attributes starting with
``_`` are not parameters). The runner calls ``fit`` once per worker for every replicate (fold x
training seed) on a copy of the configured explainer, before the first batch, with the same
data a model plugin gets: ``ctx.dataset.split("train")`` is the replicate's training images
only (the other folds, under ``[run] folds``), ``ctx.dataset_key`` identifies that data. Cache
the network under ``ctx.cache_dir`` keyed by :func:`xaibench.plugin.config_hash` of
``ctx.dataset_key``, ``ctx.seed`` and the explainer's parameters, so that the next worker, the
next run and every Ray actor load it instead of training again (the Ray executor fits every
replicate's explainers on the driver first, like it trains models).

``fit`` returns the identity of what it trained (e.g. :func:`xaibench.plugin.weights_hash`
of the network): it is part of the heatmap cache key, so maps of another fold's network are
never served. An explainer that has ``fit`` and was not fitted (``xaibench.explain``) raises a
user error that says so.

An explainer whose parameters decide whether it has a network at all (``segx`` trains nothing
unless ``mask = "segmenter"``) keeps ``fit`` and says so per instance with an attribute or
property ``trains_network`` (a bool): :func:`trains` is ``fit`` callable *and*
``trains_network`` true (true where it is not defined; on a class, a property counts as true).
An instance with ``trains_network`` false is never fitted and needs no fit to explain.

An explainer whose network is a *model plugin* (a separate segmentation model) loads it with
``ctx.load_model(name, params)``: the registered model plugin ``name`` instantiated with
``params`` and the replicate's seed, then ``load``-ed on the replicate's training data (the
plugin trains on first use and caches by its own config hash, as for the explained models).
It returns the :class:`~xaibench.models.base.LoadedModel`, whose ``identity`` (its weights'
hash) belongs in what ``fit`` returns. ``load_model`` is None where no runner filled it.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from xaibench.config.parse import instantiate
from xaibench.errors import UserError
from xaibench.models.training import LoadContext
from xaibench.registry.contracts import origin


@dataclass
class FitContext(LoadContext):
    """What an explainer's ``fit`` receives: a model plugin's :class:`LoadContext` (dataset,
    dataset_key, device, cache_dir, show_progress) plus the replicate's training ``seed``, the
    explained ``model`` (a :class:`~xaibench.models.base.LoadedModel`), a ``title`` for
    progress bars (explainer, model and replicate) and ``load_model(name, params)``, which
    loads a registered model plugin on this replicate's data (see the module docstring)."""

    seed: int = 0
    model: Any = None
    title: str = ""
    load_model: Callable[[str, dict], Any] | None = None


def trains(explainer: object) -> bool:
    """Whether an explainer (class or instance) has a network of its own to fit: it defines
    ``fit`` and does not opt out with ``trains_network`` false."""
    return callable(getattr(explainer, "fit", None)) and bool(getattr(explainer, "trains_network", True))


def model_loader(registry: Any, ctx: LoadContext, seed: int) -> Callable[[str, dict], Any]:
    """``load_model(name, params)`` for a :class:`FitContext`: model plugin ``name`` of
    ``registry`` built from ``params`` (its ``seed`` parameter gets ``seed`` unless set) and
    loaded with ``ctx``'s data, device and cache. Its user errors name the model, not the
    explainer: the explainer that calls it says which of its parameters chose the model."""
    load_ctx = LoadContext(**{f.name: getattr(ctx, f.name) for f in fields(LoadContext)})

    def load_model(name: str, params: dict) -> Any:
        plugin = instantiate(registry.get("models", name), dict(params), f"model {name!r}", seed)
        return plugin.load(load_ctx)

    return load_model


def fit_explainers(explainers: Mapping[str, object], ctx: FitContext) -> tuple[dict[str, object], dict[str, str], float]:
    """Copies of ``explainers`` with those that train fitted on ``ctx``; their identities
    (name -> the string ``fit`` returned); the seconds spent."""
    t = time.perf_counter()
    out, identities = dict(explainers), {}
    for name, explainer in explainers.items():
        if not trains(explainer):
            continue
        fitted = copy.copy(explainer)  # the plan's instance stays unfitted: one copy per replicate
        where = f"explainer {name!r} ({origin(explainer)})"
        identity = fitted.fit(FitContext(**{**vars(ctx), "title": f"{name} {ctx.title}".strip()}))
        if not isinstance(identity, str) or not identity:
            raise UserError(f"{where}: fit() returned {identity!r}; it must return a non-empty string identifying the trained network (e.g. weights_hash(net))")
        out[name], identities[name] = fitted, identity
    return out, identities, time.perf_counter() - t


def unfitted_error(name: str, explainer: object) -> UserError:
    return UserError(
        f"explainer {name!r} ({origin(explainer)}) trains a network of its own on a replicate's training images (it has fit()), "
        "and was not fitted: run it in a benchmark (xaibench run), or call its fit(FitContext(...)) and pass fitted={name: identity}"
    )
