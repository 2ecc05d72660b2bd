"""Where heatmaps are made: plan the passes for a batch, run them once, call every explainer.

For one image batch and a set of (explainer, layer) pairs, the engine takes the union of what
the explainers need, runs ONE forward with hooks on every needed layer (and ONE backward if
any explainer needs gradients), then calls each explainer with an :class:`ExplainContext`.
Masked and tail forwards requested by explainers are chunked here. Maps come back normalised
like pytorch-grad-cam's: ReLU, per-image min-max, bilinear resize to the input, min-max.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from xaibench import __version__
from xaibench.config.vocabulary import INPUT_LAYER
from xaibench.engine.cache import HeatmapCache, code_fingerprint, heatmap_key, image_key
from xaibench.engine.capture import PassCounter, Scorer, forward_replacing, shared_pass
from xaibench.engine.replay import tail_at
from xaibench.engine.targets import Target, TargetSpec, resolve
from xaibench.errors import UserError
from xaibench.explainers.base import ExplainContext, explains_input, params_key
from xaibench.explainers.fitting import trains, unfitted_error
from xaibench.models.base import LoadedModel, fused_parts, logits_of
from xaibench.registry.contracts import check_map, lent, origin
from xaibench.registry.passes import Pass
from xaibench.util.progress import warn

Pair = tuple[str, str]  # (explainer name, layer path)


def minmax(x: torch.Tensor) -> torch.Tensor:
    """Per-image min-max scaling of [B, H, W] maps, as pytorch-grad-cam's ``scale_cam_image``."""
    flat = x.reshape(x.shape[0], -1)
    x = x - flat.min(dim=1).values[:, None, None]
    return x / (1e-7 + x.reshape(x.shape[0], -1).max(dim=1).values[:, None, None])


def normalize(raw: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """ReLU, min-max, resize to ``size`` (bilinear), min-max: maps in [0, 1] at input size."""
    cam = minmax(torch.nan_to_num(raw.float()).clamp_min(0))
    if tuple(cam.shape[-2:]) != tuple(size):
        cam = F.interpolate(cam[:, None], size=tuple(size), mode="bilinear", align_corners=False)[:, 0]
    return minmax(cam.clamp_min(0))


def _resize(maps: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps[:, None], size=tuple(size), mode="bilinear", align_corners=False)[:, 0]


@dataclass
class BatchMaps:
    """Normalised maps of one batch, the model's logits on it and the resolved targets."""

    maps: dict[Pair, torch.Tensor]
    logits: torch.Tensor
    target: Target


@dataclass
class _Batch:
    """What every explainer of one batch shares: the images, their keys, the shared pass, the
    resolved target, the scorer of masked forwards, the ground truth and the maps made so far."""

    images: torch.Tensor
    keys: list[str]
    captured: object
    target: Target
    scorer: object
    ground_truth: torch.Tensor | None
    maps: dict


class HeatmapEngine:
    """Computes maps for batches of images, sharing passes across explainers and layers."""

    def __init__(
        self,
        model: LoadedModel,
        explainers: Mapping[str, object],
        *,
        target: TargetSpec | None = None,
        chunk_size: int = 16,
        cache: HeatmapCache | None = None,
        counter: PassCounter | None = None,
        fitted: Mapping[str, str] | None = None,
        recompute: bool | Collection[str] = (),
    ):
        self.model = model
        self.explainers = dict(explainers)
        self.target_spec = target or TargetSpec()
        self.chunk_size = chunk_size
        self.cache = cache if cache is not None else HeatmapCache()
        self.counter = counter or PassCounter()
        self.computed: list[Pair] = []  # every (explainer, layer) actually computed (not cached)
        #: explainer name -> identity of its trained network (:mod:`xaibench.explainers.fitting`)
        self.fitted = dict(fitted or {})
        #: explainers whose cached maps are not read (``True``: all): they are computed again and
        #: overwrite their cache entries (``--fresh``, ``--fresh-maps``); a composite of one of
        #: them is computed again too. What this engine stored itself it reads as usual.
        self.recompute = True if recompute is True else frozenset(recompute or ())
        self._no_tail_warned: set[Pair] = set()  # (explainer, layer) pairs told they have no tail
        self._stored: set[str] = set()

    # -- planning -------------------------------------------------------------------------
    def _closure(self, pairs: Sequence[Pair]) -> list[Pair]:
        """``pairs`` plus the pairs they are made from (composites' bases, fused layers' parts),
        those first."""
        out: list[Pair] = []

        def add(pair: Pair, stack: tuple[str, ...] = ()) -> None:
            name, layer = pair
            parts = fused_parts(layer)
            if parts is not None:  # the mean of this explainer's maps at each part
                for part in parts:
                    add((name, part), stack)
                if pair not in out:
                    out.append(pair)
                return
            if name in stack:
                raise UserError(f"explainer {name!r} composes itself: {' -> '.join(stack + (name,))}")
            if name not in self.explainers:
                raise UserError(f"explainer {name!r} is used by {stack[-1]!r} but not instantiated")
            for base in getattr(self.explainers[name], "composes", ()):
                add((base, self._layer_of(base, layer)), stack + (name,))
            if pair not in out:
                out.append(pair)

        for p in pairs:
            add(p)
        return out

    def _layer_of(self, name: str, layer: str) -> str:
        """The layer at which a composite's base ``name`` is read: ``layer``, or ``input`` for
        a pixel attribution (so its map is the one the grid has, computed once)."""
        return INPUT_LAYER if name in self.explainers and explains_input(self.explainers[name], self.explainers) else layer

    def _describe(self, name: str) -> str:
        """What makes an explainer's maps what they are: its class, version, parameters, and
        (for composites) the same of its bases."""
        e = self.explainers[name]
        cls = type(e)
        text = f"{cls.__module__}.{cls.__qualname__}@{getattr(e, 'version', __version__)}#{code_fingerprint(cls)}({params_key(e)})"
        if name in self.fitted:  # a network of its own: which one (another fold's maps differ)
            text += f"{{fit:{self.fitted[name]}}}"
        return text + "".join(f"[{b}:{self._describe(b)}]" for b in getattr(e, "composes", ()))

    def _recomputes(self, name: str) -> bool:
        """Whether ``name``'s cached maps are ignored: it, or a base it composes, is in ``recompute``."""
        if self.recompute is True or name in self.recompute:
            return True
        return any(self._recomputes(b) for b in getattr(self.explainers[name], "composes", ()))

    def _cached(self, pair: Pair, key: str, size: tuple[int, ...]) -> torch.Tensor | None:
        if key not in self._stored and self._recomputes(pair[0]):
            return None  # written before this engine: computed again
        return self.cache.get(key, tuple(size))

    def _key(self, pair: Pair, img_key: str, target_key: str) -> str:
        name, layer = pair
        return heatmap_key(self.model.identity, img_key, layer, name, self._describe(name) + _ENGINE_CODE(), target_key)

    # -- passes -----------------------------------------------------------------------------
    @torch.no_grad()
    def _scores(self, logits_fn, inputs: torch.Tensor, idx: torch.Tensor, target: Target, tail: bool) -> torch.Tensor:
        out = []
        for s in range(0, inputs.shape[0], self.chunk_size):
            chunk, ids = inputs[s : s + self.chunk_size], idx[s : s + self.chunk_size]
            logits = logits_fn(chunk, ids)
            out.append(target.select(ids).score(logits))
            if tail:
                self.counter.tail_forwards += 1
                self.counter.tail_rows += chunk.shape[0]
            else:
                self.counter.forwards += 1
                self.counter.forward_rows += chunk.shape[0]
        return torch.cat(out) if out else inputs.new_zeros(0)

    def run(
        self,
        images: torch.Tensor,
        layers: Sequence[str],
        *,
        ground_truth: torch.Tensor | None = None,
        pairs: Sequence[Pair] | None = None,
        target: TargetSpec | torch.Tensor | Sequence[int] | int | None = None,
        image_keys: list[str] | None = None,
    ) -> BatchMaps:
        """Maps for ``pairs`` (default: every explainer x every layer) of ``images``."""
        device = self.model.device
        images = images.to(device)
        if ground_truth is not None:
            ground_truth = ground_truth.to(device)
        spec = self.target_spec if target is None else target
        target_key = spec.key() if isinstance(spec, TargetSpec) else f"given:{image_key(torch.as_tensor(spec).float())}"
        keys = image_keys or [image_key(im) for im in images]
        # cache keys: each image and, where given, its ground-truth mask (a ground-truth target
        # explains it, and every explainer is handed it); explainers see the image keys only
        cache_keys = keys if ground_truth is None else [f"{k}+gt:{image_key(m)}" for k, m in zip(keys, ground_truth)]
        wanted = list(pairs) if pairs is not None else [(n, l) for n in self.explainers for l in layers]
        size = images.shape[-2:]
        maps, missing = self._from_cache(self._closure(wanted), cache_keys, target_key, size)
        fused = {pair: fused_parts(pair[1]) for pair in missing}
        single = [pair for pair in missing if fused[pair] is None]
        captured, tgt, tails, needs = self._shared_pass(images, single, spec, ground_truth)
        scorer = Scorer(self.model.module, tgt, self.counter) if needs & Pass.MODEL_PASSES else None
        batch = _Batch(images, keys, captured, tgt, scorer, ground_truth, maps)
        for pair in missing:
            name, layer = pair
            if fused[pair] is not None:  # parts come first in the plan
                maps[pair] = torch.stack([maps[(name, part)] for part in fused[pair]]).mean(dim=0)
            else:
                maps[pair] = self._explain(name, layer, tails.get(layer), batch, size)
            self._store(pair, cache_keys, target_key, maps[pair])
        return BatchMaps({p: maps[p] for p in wanted}, captured.logits, tgt)

    def _from_cache(self, plan: list[Pair], cache_keys: list[str], target_key: str, size) -> tuple[dict[Pair, torch.Tensor], list[Pair]]:
        """The maps of ``plan`` that the cache holds for every image, and the pairs still missing."""
        maps: dict[Pair, torch.Tensor] = {}
        missing: list[Pair] = []
        for pair in plan:
            got = [self._cached(pair, self._key(pair, k, target_key), size) for k in cache_keys]
            if all(g is not None for g in got):
                maps[pair] = torch.stack(got).to(self.model.device)
            else:
                missing.append(pair)
        return maps, missing

    def _warn_no_tail(self, pairs: list[Pair]) -> None:
        """Once per engine, method and layer: a tail-forward explainer without the model's tail
        there runs full forwards (the same map, slower)."""
        for name, layer in pairs:
            if (name, layer) not in self._no_tail_warned:
                self._no_tail_warned.add((name, layer))
                warn(
                    f"{name} at layer {layer!r}: the model has no tail there (the rest of the network after the layer), and "
                    "replaying its forward from the layer does not give its logits (the layer or a module before it runs twice, "
                    "or a captured output is changed in place), so each ablated channel costs a full forward; the maps are the "
                    "same, only slower. Give one with xaibench.models.base.LoadedModel(..., tail=...) (docs/plugins.md)"
                )

    def _shared_pass(self, images: torch.Tensor, single: list[Pair], spec, ground_truth: torch.Tensor | None):
        """The one forward (and backward, where an explainer needs gradients) for ``single``'s
        explainers: the captured layers, the resolved target, the layers' tails and the union of needs."""
        for name, layer in single:
            if trains(self.explainers[name]) and name not in self.fitted:
                raise unfitted_error(name, self.explainers[name])
            if layer == INPUT_LAYER and self.explainers[name].needs & (Pass.ACTIVATIONS | Pass.GRADIENTS | Pass.TAIL_FORWARDS):
                raise UserError(f"explainer {name!r} explains a layer, and {INPUT_LAYER!r} is the input image (only pixel attributions explain it)")
        needs = Pass.NONE
        for name, _ in single:
            needs |= self.explainers[name].needs
        uses_layer = Pass.ACTIVATIONS | Pass.GRADIENTS | Pass.TAIL_FORWARDS
        hooked = list(dict.fromkeys(l for n, l in single if self.explainers[n].needs & uses_layer))
        tails = {l: tail_at(self.model, l, images) for n, l in single if self.explainers[n].needs & Pass.TAIL_FORWARDS}
        self._warn_no_tail([(n, l) for n, l in single if self.explainers[n].needs & Pass.TAIL_FORWARDS and tails[l] is None])
        extra = list(dict.fromkeys(p for t in tails.values() if t is not None for p in t.extra))
        resolved: dict[str, Target] = {}

        def score(logits: torch.Tensor) -> torch.Tensor:
            resolved["t"] = resolve(spec, logits.detach(), ground_truth)
            return resolved["t"].score(logits)

        captured = shared_pass(
            self.model.module,
            images,
            hooked,
            score=score if needs & (Pass.GRADIENTS | Pass.INPUT_GRADIENTS) else None,
            extra=extra,
            counter=self.counter,
            input_gradients=bool(needs & Pass.INPUT_GRADIENTS),
        )
        return captured, resolved.get("t") or resolve(spec, captured.logits, ground_truth), tails, needs

    def _explain(self, name: str, layer: str, tail, b: _Batch, size) -> torch.Tensor:
        """One explainer's normalised maps of the batch at ``layer``, from the shared pass."""
        module, explainer = self.model.module, self.explainers[name]

        def masked_scores(inputs: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
            return self._scores(lambda x, ids: logits_of(module(x)), inputs, idx, b.target, tail=False)

        def tail_logits(acts: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
            if tail is not None:
                return tail.fn(acts, b.captured.extras, ids)
            return forward_replacing(module, b.images[ids], layer, acts)

        def tail_scores(acts: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
            return self._scores(tail_logits, acts, idx, b.target, tail=True)

        def explain_other(other: str) -> torch.Tensor:
            return b.maps[(other, self._layer_of(other, layer))].clone()  # a copy: the map is cached and shared

        ctx = _context(explainer, name, b.images, layer, b.captured, b.target, b.keys, masked_scores, tail_scores, explain_other, b.ground_truth)
        ctx.chunk_size = self.chunk_size
        if explainer.needs & Pass.MODEL_PASSES:
            ctx.scorer = b.scorer
        raw = _call_explainer(explainer, name, ctx)
        if getattr(explainer, "normalize", True):
            return normalize(raw, size)
        return _resize(raw.float().clamp(0, 1), size)  # already a probability-like map in [0, 1]: only resized

    def _store(self, pair: Pair, keys: list[str], target_key: str, maps: torch.Tensor) -> None:
        self.computed.append(pair)
        for k, m in zip(keys, maps):
            key = self._key(pair, k, target_key)
            self.cache.put(key, m)
            self._stored.add(key)


def _ENGINE_CODE() -> str:  # noqa: N802 (a constant, computed on first use)
    """The code that turns an explainer's raw output into the cached map: this engine (normalising,
    resizing), the shared passes and the targets."""
    import sys

    from xaibench.engine import capture, targets

    return "engine#" + code_fingerprint(sys.modules[__name__], capture, targets)


def _undeclared(name: str, explainer: object, flag: Pass):
    def fail(*args, **kwargs):
        raise UserError(f"explainer {name!r} ({origin(explainer)}) calls ctx.{flag.name.lower()}, but its needs ({explainer.needs!r}) do not declare Pass.{flag.name}")

    return fail


def _context(explainer, name, images, layer, captured, tgt, keys, masked_scores, tail_scores, explain_other, ground_truth) -> ExplainContext:
    """The explainer's context: only the passes its ``needs`` declare (the others are None, or
    callables that raise a user error naming ``needs``), whatever else the grid computed."""
    needs = explainer.needs
    return ExplainContext(
        images=images,
        layer=layer,
        activations=captured.activations.get(layer) if needs & Pass.ACTIVATIONS else None,
        gradients=captured.gradients.get(layer) if needs & Pass.GRADIENTS else None,
        target=tgt,
        logits=captured.logits,
        image_keys=keys,
        masked_scores=masked_scores if needs & Pass.MASKED_FORWARDS else _undeclared(name, explainer, Pass.MASKED_FORWARDS),
        tail_scores=tail_scores if needs & Pass.TAIL_FORWARDS else _undeclared(name, explainer, Pass.TAIL_FORWARDS),
        explain=explain_other,
        ground_truth=ground_truth,
        input_gradients=captured.input_gradients if needs & Pass.INPUT_GRADIENTS else None,
    )


LENT = ("images", "activations", "gradients", "logits", "ground_truth", "input_gradients")


def _call_explainer(explainer, name: str, ctx: ExplainContext) -> torch.Tensor:
    """``explainer.explain(ctx)``, checked: the map's shape (:func:`~xaibench.registry.contracts.check_map`),
    that no lent tensor was written to, and an undeclared pass named when the explainer trips on it."""
    try:
        with torch.no_grad(), lent(ctx, LENT, f"explainer {name!r} ({origin(explainer)})"):
            raw = explainer.explain(ctx)
    except (TypeError, AttributeError) as exc:
        missing = [f for f, flag in (("activations", Pass.ACTIVATIONS), ("gradients", Pass.GRADIENTS)) if getattr(ctx, f) is None and not explainer.needs & flag]
        if missing and "NoneType" in str(exc):
            flags = " | ".join(f"Pass.{f.upper()}" for f in missing)
            raise UserError(
                f"explainer {name!r} ({origin(explainer)}) failed on ctx.{missing[0]} = None ({type(exc).__name__}: {exc}); "
                f"a pass an explainer does not declare is None: add {flags} to its needs ({explainer.needs!r})"
            ) from exc
        raise
    return check_map(raw, explainer, name, ctx.images, ctx.layer)
