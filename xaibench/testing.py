"""Contract checks for plugin packages' own tests: ``check_explainer``, ``check_metric``,
``check_dataset``, ``check_model``, ``check_tail``.

Each runs a plugin class on a tiny model and tiny images made here (CPU, a second or two) and
raises an ``AssertionError`` that says what is wrong, in the words of the plugin contract
(docs/plugins.md). In a plugin package's tests::

    from xaibench.testing import check_explainer
    from my_package.plugin import MyCAM

    def test_my_cam_keeps_the_contract():
        check_explainer(MyCAM)

xaibench runs the same checks over every registered plugin (tests/test_plugin_contracts.py).

Helpers for what a plugin package's tests need beyond :mod:`xaibench.plugin`, so that they
import no internal module: :func:`metric_target` (a ``MetricContext.target`` built by hand),
:func:`full_float32` (CUDA without TF32), :func:`plugin_entry` (the installed registry's entry
of a plugin) and :func:`explainer_maps` (the engine's maps of one explainer instance).
"""

from __future__ import annotations

import tempfile
import zlib
from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import torch

from xaibench.config.vocabulary import SPLITS
from xaibench.datasets.base import LazySplit, Sample
from xaibench.engine.devices import cuda_precision
from xaibench.engine.evaluation import LENT
from xaibench.engine.heatmaps import HeatmapEngine
from xaibench.engine.targets import Target, TargetSpec, resolve
from xaibench.errors import UserError
from xaibench.explainers.fitting import FitContext, fit_explainers, model_loader, trains
from xaibench.metrics.base import MetricContext
from xaibench.models.base import LoadedModel, logits_of, weights_hash
from xaibench.models.training import LoadContext
from xaibench.registry.contracts import check_sample, check_scores, check_unchanged, class_problems, fingerprint, lent
from xaibench.registry.discovery import Entry
from xaibench.registry.passes import Pass

TASKS = ("binary", "multiclass", "classifier")


def tiny_unet(in_channels: int = 3, seed: int = 0) -> LoadedModel:
    """An untrained segmentation-models-pytorch U-Net (3 decoder blocks, aliases decoder1/2, a tail)."""
    import segmentation_models_pytorch as smp

    from xaibench.models.smp_unet import unet_tail

    torch.manual_seed(seed)
    m = smp.Unet("resnet18", encoder_weights=None, encoder_depth=3, decoder_channels=[16, 8, 4], classes=1, in_channels=in_channels).eval()
    return LoadedModel(m, "binary", {"decoder1": "decoder.blocks.2", "decoder2": "decoder.blocks.1"}, tail=lambda p: unet_tail(m, p))


def tiny_images(n: int = 2, channels: int = 3, size: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Images [n, C, size, size] in [0, 1] with a bright square each, and its mask [n, size, size]."""
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n, channels, size, size, generator=g) * 0.4
    masks = torch.zeros(n, size, size, dtype=torch.long)
    for i in range(n):
        y, x = (int(v) for v in torch.randint(0, size // 2, (2,), generator=g))
        images[i, :, y : y + size // 3, x : x + size // 3] += 0.5
        masks[i, y : y + size // 3, x : x + size // 3] = 1
    return images.clamp(0, 1), masks


class TinyDataset:
    """A dataset of tiny square tiles (train 8, val 2, test 4; half with a square), for model checks."""

    name = "tiny"
    num_classes = 2
    fold_splits = ("train", "test")

    def __init__(self, size: int = 32, channels: int = 3, seed: int = 0):
        self.size, self.channels, self.seed = size, channels, seed
        self._n = {"train": 8, "val": 2, "test": 4}

    def _sample(self, split: str, i: int) -> Sample:
        image, mask = tiny_images(1, self.channels, self.size, seed=zlib.crc32(f"{self.seed}/{split}/{i}".encode()))
        if i % 2:
            image, mask = image * 0 + image.mean(), mask * 0
        return Sample(image[0], mask[0], f"tiny-{split}-{i}", int(bool(mask.any())))

    def split(self, name: str) -> Sequence[Sample]:
        if name not in self._n:
            raise UserError(f"tiny dataset has no split {name!r}")
        return LazySplit(f"tiny {name}", self._n[name], lambda i: self._sample(name, i), memoise=True)

    def channel_mean(self) -> torch.Tensor:
        return torch.stack([s.image.mean(dim=(1, 2)) for s in self.split("train")]).mean(0)


def _fail(what: str, problems: Sequence[str]) -> None:
    if problems:
        raise AssertionError(f"{what} breaks the plugin contract: " + "; ".join(problems))


def _instance(cls: type, params: dict | None, kind: str) -> Any:
    _fail(f"{kind} {getattr(cls, 'name', cls)!r}", class_problems(kind, cls))
    try:
        return cls(**(params or {}))
    except UserError as exc:
        raise AssertionError(f"{cls.__name__}(**{params or {}}) raised: {exc}") from exc


def _bases(inst: object, into: dict[str, Any]) -> None:
    from xaibench.registry.discovery import load_registry

    for base in getattr(inst, "composes", ()):
        if base not in into:
            into[base] = load_registry().get("explainers", base)()
            _bases(into[base], into)


def check_explainer(
    cls: type, params: dict | None = None, *, model: LoadedModel | None = None, layer: str | None = None,
    images: torch.Tensor | None = None, dataset: Any = None,
) -> torch.Tensor:
    """Run explainer ``cls`` (with ``params``) on a tiny U-Net; return its maps [B, H, W].

    Checks: the declared attributes; a map per image in [0, 1] and finite, of the images' size;
    the model and the images untouched; the same maps on a second run (given ``image_keys``, an
    explainer must be deterministic). ``layer`` defaults to ``decoder1`` (``output`` for an
    explainer that reads no layer). An explainer with a network of its own (``fit``, and any
    base that has one) is fitted first on ``dataset`` (default: a :class:`TinyDataset` of the
    images' size) in a temporary cache, twice: the second ``fit`` must load what the first
    cached and return the same identity; its ``ctx.load_model`` loads the installed model plugins.
    """
    inst = _instance(cls, params, "explainers")
    model = model or tiny_unet()
    if images is None:
        images, _ = tiny_images()
    if layer is None:
        layer = "decoder1" if inst.needs & (Pass.ACTIVATIONS | Pass.GRADIENTS | Pass.TAIL_FORWARDS) else "output"
    explainers = {cls.name: inst}
    _bases(inst, explainers)
    dataset = dataset if dataset is not None else TinyDataset(size=images.shape[-1], channels=images.shape[1])
    explainers, fitted = _fit(explainers, model, dataset)
    weights, before = weights_hash(model.module), fingerprint(images)
    path = model.resolve_layer(layer)
    runs = []
    for _ in range(2):
        engine = HeatmapEngine(model, explainers, target=TargetSpec(), chunk_size=8, fitted=fitted)
        try:
            runs.append(engine.run(images, [path], pairs=[(cls.name, path)]).maps[(cls.name, path)])
        except UserError as exc:
            raise AssertionError(str(exc)) from exc
    maps = runs[0]
    problems = []
    if tuple(maps.shape) != (images.shape[0], *images.shape[2:]):
        problems.append(f"maps of shape {tuple(maps.shape)} for images {tuple(images.shape)}")
    if not torch.isfinite(maps).all() or maps.min() < 0 or maps.max() > 1:
        problems.append("maps must be finite and in [0, 1] after normalisation")
    if weights_hash(model.module) != weights:
        problems.append("the model's weights changed")
    check_unchanged({"images": before}, {"images": images}, f"explainer {cls.name!r}")
    if not torch.allclose(runs[0], runs[1], atol=1e-6):
        problems.append("two runs on the same images gave different maps (seed randomness from ctx.image_keys)")
    _fail(f"explainer {cls.name!r}", problems)
    return maps


def _fit(explainers: dict[str, Any], model: LoadedModel, dataset: Any) -> tuple[dict[str, Any], dict[str, str]]:
    """The explainers with those that train fitted on ``dataset`` (twice: cached, same identity)."""
    if not any(trains(e) for e in explainers.values()):
        return explainers, {}
    with tempfile.TemporaryDirectory() as tmp:
        from xaibench.registry.discovery import load_registry

        ctx = FitContext(dataset=dataset, dataset_key="xaibench.testing", cache_dir=Path(tmp), show_progress=False, model=model)
        ctx.load_model = model_loader(load_registry(), ctx, ctx.seed)  # a segmenter model plugin (segx) trains here too
        try:
            fitted, first, _ = fit_explainers(explainers, ctx)
            _, again, _ = fit_explainers(explainers, ctx)
        except UserError as exc:
            raise AssertionError(str(exc)) from exc
    changed = [n for n in first if again[n] != first[n]]
    _fail(f"explainer {changed[0]!r}" if changed else "", [f"a second fit on the same data returned {again[n]!r}, the first {first[n]!r} (fit must cache its network by the data and its parameters, and train deterministically)" for n in changed])
    return fitted, first


def check_metric(cls: type, params: dict | None = None, *, model: LoadedModel | None = None) -> torch.Tensor:
    """Run metric ``cls`` on a tiny U-Net's output and random maps; return its scores [B].

    Checks: the declared attributes; one float per image (NaN allowed where a value is
    undefined), or for a metric that declares ``pool`` its per-image counts (a dict of name ->
    tensor [B]; the scores returned are ``pool`` of each image's counts); no lent tensor
    (images, maps, logits, ...) changed."""
    inst = _instance(cls, params, "metrics")
    model = model or tiny_unet()
    images, masks = tiny_images(4)
    with torch.no_grad():
        logits = model.module(images)
    target = resolve(TargetSpec(), logits, masks)
    heat = torch.rand(images.shape[0], *images.shape[2:], generator=torch.Generator().manual_seed(0))
    thr = torch.full((images.shape[0],), 0.5)
    uses_map = getattr(cls, "uses_map", True)
    ctx = MetricContext(
        images=images, ground_truth=masks, target=target, logits=logits, heatmap=heat if uses_map else None,
        forward=lambda x: model.module(x), fill=torch.zeros_like(images), labels=masks.flatten(1).amax(1),
        threshold=thr if cls.uses_threshold else None, binary=heat >= 0.5 if cls.uses_threshold else None,
        perturbed_logits=model.module(images * (heat >= 0.5)[:, None]).detach() if cls.perturbation else None,
    )
    try:
        with torch.no_grad(), lent(ctx, LENT, f"metric {cls.name!r}"):
            values, _ = check_scores(inst.compute(ctx), inst, cls.name, images.shape[0], "the contract check")
    except UserError as exc:
        raise AssertionError(str(exc)) from exc
    _fail(f"metric {cls.name!r}", [] if values.is_floating_point() else [f"scores must be floats, got {values.dtype}"])
    return values


def check_dataset(cls: type, params: dict | None = None, *, samples: int = 3) -> Any:
    """Instantiate dataset ``cls`` and read the first ``samples`` of every split it has; return it.

    Checks: the declared attributes; each sample (image float [C, H, W] in [0, 1], mask of class
    ids of the image's size, a string id); ids unique within a split; one image size per split;
    ``channel_mean()`` of shape [C]; the same first sample from a second instance (seeded)."""
    ds = _instance(cls, params, "datasets")
    again = cls(**(params or {}))
    n_classes = getattr(ds, "num_classes", 2)
    channels = None
    for split in SPLITS:
        try:
            items = ds.split(split)
        except UserError:
            continue
        got = [items[i] for i in range(min(samples, len(items)))]
        try:
            for i, s in enumerate(got):
                check_sample(s, cls.name, n_classes, f"split {split!r}, sample {i}")
        except UserError as exc:
            raise AssertionError(str(exc)) from exc
        ids = [s.image_id for s in got]
        shapes = {tuple(s.image.shape) for s in got}
        _fail(f"dataset {cls.name!r} split {split!r}", (["image ids repeat"] if len(set(ids)) != len(ids) else [])
              + ([f"images of one split differ in size: {sorted(shapes)}"] if len(shapes) > 1 else []))
        if got:
            channels = got[0].image.shape[0]
            twin = again.split(split)[0]
            _fail(f"dataset {cls.name!r}", [] if torch.equal(twin.image, got[0].image) and twin.image_id == got[0].image_id
                  else [f"a second instance with the same parameters gives another first sample of {split!r}"])
    _fail(f"dataset {cls.name!r}", ["no split has a sample"] if channels is None else [])
    mean = ds.channel_mean()
    _fail(f"dataset {cls.name!r}", [] if tuple(mean.shape) == (channels,) else [f"channel_mean() has shape {tuple(mean.shape)}, expected ({channels},)"])
    return ds


def check_model(cls: type, params: dict | None = None, *, dataset: Any = None, cache_dir: str | Path | None = None) -> LoadedModel:
    """``cls(**params).load(ctx)`` on :class:`TinyDataset` (or ``dataset``); return the model.

    Checks: the declared attributes; a :class:`LoadedModel` in eval mode with a known task and
    logits of the task's shape; every layer alias resolves. Pass small ``params`` (one epoch, a narrow network): models train on first use."""
    inst = _instance(cls, params, "models")
    dataset = dataset or TinyDataset()
    with tempfile.TemporaryDirectory() as tmp:
        ctx = LoadContext(dataset=dataset, dataset_key="xaibench.testing", cache_dir=Path(cache_dir or tmp), show_progress=False)
        model = inst.load(ctx)
    problems = []
    if not isinstance(model, LoadedModel):
        _fail(f"model {cls.name!r}", [f"load() returned {type(model).__name__}, expected xaibench.plugin.LoadedModel"])
    if model.task not in TASKS:
        problems.append(f"task {model.task!r} is not one of {', '.join(TASKS)}")
    if model.module.training:
        problems.append("the module is in training mode; load() must return it in eval mode")
    x = torch.stack([dataset.split("test")[i].image for i in range(2)])
    with torch.no_grad():
        out = model.module(x)
    out = logits_of(out)
    want = 2 if model.task == "classifier" else 4
    if out.ndim != want or (model.task == "binary" and out.shape[1] != 1) or (want == 4 and tuple(out.shape[2:]) != tuple(x.shape[2:])):
        problems.append(f"logits of shape {tuple(out.shape)} do not fit task {model.task!r} for inputs {tuple(x.shape)}")
    for alias in model.layers:
        try:
            model.resolve_layer(alias)
        except UserError as exc:
            problems.append(f"layer alias {alias!r}: {exc}")
    _fail(f"model {cls.name!r}", problems)
    return model


# -- helpers for plugin packages' tests ----------------------------------------------------------


def metric_target(
    logits: torch.Tensor, ground_truth: torch.Tensor | None = None, *, region: str = "predicted", class_id: int | None = None
) -> Target:
    """The target of a batch as the engine resolves it for ``MetricContext.target``, for a
    metric's tests that build a :class:`~xaibench.plugin.MetricContext` by hand.

    ``logits`` [B, K, H, W] (segmentation) or [B, K] (classifier); ``region`` ``"predicted"``
    (the default: the predicted mask of class ``class_id``, default 1) or ``"ground_truth"``
    (``ground_truth`` masks [B, H, W] of class ``class_id``); for a classifier the predicted
    class (class 1 for a one-logit model) unless ``class_id`` is given.
    """
    return resolve(TargetSpec(region=region, class_id=class_id), logits, ground_truth)


def full_float32(device: str | torch.device = "cuda") -> AbstractContextManager[None]:
    """A context manager: on a CUDA ``device``, convolutions and matmuls in full float32 (no TF32)
    inside the block, the previous settings restored after it; nothing on a CPU. A benchmark on
    a GPU runs so by default; use it in a plugin's GPU tests that compare against the CPU."""
    return cuda_precision(torch.device(device), tf32=False)


def plugin_entry(kind: str, name: str) -> Entry:
    """The installed plugin registry's entry for ``name`` of ``kind`` (``"datasets"``,
    ``"models"``, ``"explainers"``, ``"metrics"``): its ``cls``, ``distribution`` (the package
    that registered it) and ``module`` (the entry-point module that did); for a plugin
    package's test that it registers through its entry point. An unknown name raises
    :class:`~xaibench.plugin.UserError`."""
    from xaibench.registry.discovery import load_registry

    return load_registry().entry(kind, name)


def explainer_maps(
    explainer: Any, model: LoadedModel, images: torch.Tensor, layer: str = "output", *, fitted: str | None = None
) -> torch.Tensor:
    """Maps [B, H, W] in [0, 1] of one explainer *instance* on ``model`` at ``layer`` (an alias, a
    module path, ``"output"``), as the core engine computes them; the bases it ``composes`` are
    taken from the registry. For an instance set up by hand (e.g. a stand-in network where
    ``fit`` would train one), ``fitted`` is the identity its ``fit`` would have returned (the
    engine refuses an explainer with a ``fit`` and no identity). No contract checks: see
    :func:`check_explainer`."""
    explainers = {explainer.name: explainer}
    _bases(explainer, explainers)
    path = model.resolve_layer(layer)
    engine = HeatmapEngine(model, explainers, fitted=None if fitted is None else {explainer.name: fitted})
    return engine.run(images, [path], pairs=[(explainer.name, path)]).maps[(explainer.name, path)]


def check_tail(model: LoadedModel, layer: str, images: torch.Tensor) -> None:
    """That Ablation-CAM at ``layer`` (an alias or module path) runs on the rest of the network
    only: the model's own tail there, or one xaibench derives by replaying the forward, gives the
    full forward's logits to 1e-5 with the layer's output kept and with it halved. Fails where
    ablation would cost a full forward per channel (say why in ``LoadedModel(tail=...)``)."""
    from xaibench.engine.capture import forward_replacing, shared_pass
    from xaibench.engine.replay import tail_at

    path = model.resolve_layer(layer)
    images = images.to(model.device)
    tail = tail_at(model, path, images)
    if tail is None:
        _fail(f"model at {layer!r}", ["no tail: the model gives none there and replaying its forward from the layer does not reproduce its logits"])
    cap = shared_pass(model.module, images, [path], extra=list(tail.extra))
    idx = torch.arange(images.shape[0] - 1, -1, -1, device=images.device)  # rows out of order, as chunks are
    for scale in (1.0, 0.5):
        act = cap.activations[path][idx] * scale
        with torch.no_grad():
            got = tail.fn(act, cap.extras, idx)
        want = forward_replacing(model.module, images[idx], path, act)
        err = float((got - want).abs().max())
        if err > 1e-5 * max(1.0, float(want.abs().max())):
            _fail(f"model at {layer!r}", [f"the tail's logits differ from the full forward's by {err:.2e} (layer output x {scale})"])
