"""The plugin contract: what a registered class must declare and what its calls must return.

Checked when a class registers (its declared attributes), by the engine and the evaluation
(every explainer's map and every metric's scores, every batch's samples) and by
:mod:`xaibench.testing` in a plugin package's own tests. Every failure is a
:class:`~xaibench.errors.UserError` that names the plugin and its distribution.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from importlib import metadata

import numpy as np
import torch

from xaibench.config.vocabulary import DIRECTIONS, SPLITS
from xaibench.config.vocabulary import MODES as PERTURBATIONS
from xaibench.errors import UserError
from xaibench.registry.passes import Pass


@functools.cache
def _top_level_distributions() -> dict[str, list[str]]:
    return metadata.packages_distributions()


def origin(obj: object) -> str:
    """``module (distribution)`` of a plugin class or instance, for error messages."""
    cls = obj if isinstance(obj, type) else type(obj)
    module = cls.__module__
    dists = _top_level_distributions().get(module.split(".")[0], [])
    return f"{module}.{cls.__qualname__} ({', '.join(dists) or 'not installed as a distribution'})"


def _callable(cls: type, name: str) -> list[str]:
    return [] if callable(getattr(cls, name, None)) else [f"has no method {name}()"]


def _explainer_problems(cls: type) -> list[str]:
    out = _callable(cls, "explain")
    needs = getattr(cls, "needs", None)
    if not isinstance(needs, Pass):
        out.append(f"needs must be xaibench.plugin.Pass flags (e.g. Pass.ACTIVATIONS | Pass.GRADIENTS), got {needs!r}")
    if not isinstance(getattr(cls, "normalize", True), bool):
        out.append("normalize must be True or False")
    composes = getattr(cls, "composes", ())  # a property when it depends on the parameters (segx)
    if not isinstance(composes, (tuple, list, property)) or not isinstance(composes, property) and not all(isinstance(c, str) for c in composes):
        out.append(f"composes must be a tuple of explainer names, got {composes!r}")
    return out


def _metric_problems(cls: type) -> list[str]:
    out = _callable(cls, "compute")
    d = getattr(cls, "direction", None)
    if d not in DIRECTIONS:
        out.append(f"direction must be 'higher' or 'lower', got {d!r}")
    for mode, v in dict(getattr(cls, "directions", {}) or {}).items():
        if mode not in PERTURBATIONS or v not in DIRECTIONS:
            out.append(f"directions maps perturbation modes ({', '.join(PERTURBATIONS)}) to 'higher' / 'lower', got {mode!r}: {v!r}")
    for flag in ("uses_threshold", "uses_map"):
        if not isinstance(getattr(cls, flag, True), bool):
            out.append(f"{flag} must be True or False, got {getattr(cls, flag)!r}")
    if not hasattr(cls, "uses_threshold"):
        out.append("uses_threshold is missing (True when the metric reads the binarised map)")
    p = getattr(cls, "perturbation", "missing")
    if p not in (None, "cell", *PERTURBATIONS):
        out.append(f"perturbation must be None, 'cell' or one of {', '.join(PERTURBATIONS)}, got {p!r}")
    if hasattr(cls, "aggregate") and not callable(cls.aggregate):
        out.append("aggregate must be a staticmethod from the per-image values to a float")
    if hasattr(cls, "pool") and not callable(cls.pool):
        out.append("pool must be a staticmethod from summed counts (dict of name -> array) to the statistic")
    elif hasattr(cls, "pool") and hasattr(cls, "aggregate"):
        out.append("declare aggregate or pool, not both")
    if not isinstance(getattr(cls, "pools_images", False), bool) or (getattr(cls, "pools_images", False) and not hasattr(cls, "pool")):
        out.append("pools_images must be True or False, and True only with a pool")
    return out


def _dataset_problems(cls: type) -> list[str]:
    out = _callable(cls, "split") + _callable(cls, "channel_mean")
    splits = getattr(cls, "fold_splits", ())
    if not isinstance(splits, (tuple, list)) or not all(s in SPLITS for s in splits):
        out.append(f"fold_splits must be a tuple of split names ({', '.join(SPLITS)}), got {splits!r}")
    n = getattr(cls, "num_classes", 2)
    if not isinstance(n, int) or isinstance(n, bool) or n < 2:
        out.append(f"num_classes must be an int >= 2 (background included), got {n!r}")
    return out


CLASS_CHECKS = {"explainers": _explainer_problems, "metrics": _metric_problems, "datasets": _dataset_problems, "models": lambda c: _callable(c, "load")}


def class_problems(kind: str, cls: object) -> list[str]:
    """What a class registered as a ``kind`` plugin gets wrong (empty: nothing)."""
    if not isinstance(cls, type):
        return [f"register() takes the plugin class, got {cls!r}"]
    return CLASS_CHECKS[kind](cls)


def check_map(raw: object, explainer: object, name: str, images: torch.Tensor, layer: str) -> torch.Tensor:
    """An explainer's raw map: a real tensor [B, h, w] with the images' aspect ratio."""
    where = f"explainer {name!r} ({origin(explainer)}) at layer {layer!r}"
    b, _, height, width = images.shape
    if not isinstance(raw, torch.Tensor):
        raise UserError(f"{where} returned {type(raw).__name__}; expected a tensor [B, h, w] = [{b}, h, w]")
    shape = tuple(raw.shape)
    if raw.ndim != 3 or shape[0] != b:
        hint = " (drop the channel dimension: .squeeze(1))" if raw.ndim == 4 and shape[1] == 1 else ""
        raise UserError(f"{where} returned shape {shape}; expected [B, h, w] = [{b}, h, w]{hint}")
    if not (raw.is_floating_point() or raw.dtype == torch.bool):
        raise UserError(f"{where} returned dtype {raw.dtype}; expected a float map")
    h, w = shape[1:]
    if min(h, w) < 1 or abs(h * width - w * height) > max(h, w) * max(height, width) / 4:
        raise UserError(f"{where} returned a {h} x {w} map for {height} x {width} images; a map must have the images' aspect ratio")
    return raw


def check_scores(values: object, metric: object, name: str, batch: int, where: str) -> tuple[torch.Tensor, dict[str, torch.Tensor] | None]:
    """A metric's scores, as (values [B], counts or None): a float tensor [B], one value per
    image; or, for a metric that declares ``pool``, a dict of per-image counts (name -> real
    tensor [B], finite, NaN for an image left out), whose values are ``pool`` of each image's
    counts."""
    what = f"metric {name!r} ({origin(metric)}) on {where}"
    if callable(getattr(metric, "pool", None)):
        counts = _check_counts(values, what, batch)
        if getattr(metric, "pools_images", False):  # a statistic of the images together (an AUROC): no per-image value
            return torch.full((batch,), float("nan")), counts
        return _pooled_values(counts, metric.pool, what, batch), counts
    if isinstance(values, Mapping):
        raise UserError(f"{what} returned a dict of counts but declares no pool(); declare pool (summed counts -> statistic) or return a float tensor [B]")
    if not isinstance(values, torch.Tensor):
        raise UserError(f"{what} returned {type(values).__name__}; expected a float tensor [B] = [{batch}], one value per image")
    if tuple(values.shape) != (batch,):
        raise UserError(f"{what} returned shape {tuple(values.shape)}; expected [B] = [{batch}], one value per image")
    return values, None


def _check_counts(counts: object, what: str, batch: int) -> dict[str, torch.Tensor]:
    """A pooled metric's counts as float64 CPU tensors [B]; an image with a NaN count is NaN in all."""
    expect = f"expected a dict of per-image counts {{name: tensor [B] = [{batch}]}} (the metric declares pool())"
    if not isinstance(counts, Mapping) or not counts:
        raise UserError(f"{what} returned {'an empty dict' if isinstance(counts, Mapping) else _describe(counts)}; {expect}")
    out = {}
    for k, v in counts.items():
        if not isinstance(k, str) or not isinstance(v, torch.Tensor) or tuple(v.shape) != (batch,) or v.dtype == torch.bool or v.is_complex():
            raise UserError(f"{what} returned counts[{k!r}] = {_describe(v)}; {expect}")
        out[k] = v.detach().to("cpu", torch.float64)
        if torch.isinf(out[k]).any():
            raise UserError(f"{what} returned infinite counts[{k!r}]; counts must be finite (NaN leaves an image out)")
    left_out = torch.stack(list(out.values())).isnan().any(0)
    return {k: v.masked_fill(left_out, float("nan")) for k, v in out.items()}


def _pooled_values(counts: dict[str, torch.Tensor], pool: Callable, what: str, batch: int) -> torch.Tensor:
    """Each image's value, ``pool`` of its own counts: float32 [B], NaN for an image left out."""
    try:
        with np.errstate(divide="ignore", invalid="ignore"):
            out = np.array(pool({k: v.numpy().copy() for k, v in counts.items()}), dtype=float)
    except Exception as exc:  # the plugin's pool: one line naming it, the traceback chained
        raise UserError(f"{what}: pool() failed on its counts {sorted(counts)}: {type(exc).__name__}: {exc}") from exc
    if out.shape != (batch,):
        raise UserError(f"{what}: pool() returned shape {out.shape} for counts of shape ({batch},); it must compute elementwise on the count arrays")
    out[next(iter(counts.values())).isnan().numpy()] = np.nan
    return torch.from_numpy(out).float()


def check_sample(sample: object, dataset: str, num_classes: int, where: str) -> None:
    """A dataset's sample: image float [C, H, W] in [0, 1], mask int [H, W] of class ids, a string id."""
    what = f"dataset {dataset!r}, {where}"
    image, mask, image_id = (getattr(sample, k, None) for k in ("image", "mask", "image_id"))
    if not isinstance(image_id, str) or not image_id:
        raise UserError(f"{what}: image_id must be a non-empty string, got {image_id!r}")
    what += f", image {image_id!r}"
    if not isinstance(image, torch.Tensor) or image.ndim != 3 or not image.is_floating_point():
        raise UserError(f"{what}: image must be a float tensor [C, H, W], got {_describe(image)}")
    if not isinstance(mask, torch.Tensor) or mask.ndim != 2 or mask.is_floating_point():
        raise UserError(f"{what}: mask must be an integer tensor [H, W] of class ids, got {_describe(mask)}")
    if tuple(mask.shape) != tuple(image.shape[1:]):
        raise UserError(f"{what}: mask is {tuple(mask.shape)} but the image is {tuple(image.shape[1:])}; they must have the same height and width")
    lo, hi = float(image.min()), float(image.max())
    if lo < 0 or hi > 1:
        raise UserError(f"{what}: image values must be in [0, 1], found [{lo:g}, {hi:g}]")
    mlo, mhi = int(mask.min()), int(mask.max())
    if mlo < 0 or mhi >= num_classes:
        hint = " (a 0/255 mask: divide it by 255)" if mhi == 255 else ""
        raise UserError(f"{what}: mask values must be class ids 0..{num_classes - 1}, found {mlo}..{mhi}{hint}")


def _describe(t: object) -> str:
    return f"{t.dtype} tensor of shape {tuple(t.shape)}" if isinstance(t, torch.Tensor) else type(t).__name__


#: values of a lent tensor sampled by its fingerprint
SAMPLE = 1024


def fingerprint(t: torch.Tensor | None) -> tuple | None:
    """A cheap fingerprint of a tensor's content, to detect a plugin writing into a tensor it
    was lent: its version counter, which every in-place torch op bumps (on the tensor or on any
    view of it, ``detach()`` included), and a strided sample of :data:`SAMPLE` values, for
    writes that bypass the counter (through ``.data`` or ``.numpy()``) where they touch the
    sample. An inference tensor has no counter: its sum stands in. O(SAMPLE), not O(numel):
    no copy of the tensor, even a non-contiguous one."""
    if t is None or not isinstance(t, torch.Tensor):
        return None
    t = t.detach()
    version = float(t.sum(dtype=torch.float64)) if t.is_inference() else t._version
    return (version, _sample(t))


def _sample(t: torch.Tensor) -> torch.Tensor:
    """:data:`SAMPLE` values of ``t`` spread over its memory, copied (one strided copy; dims
    ordered by stride, so a channels-last tensor is no harder than a contiguous one)."""
    n = t.numel()
    step = max(1, n // SAMPLE)
    dense = t.permute(sorted(range(t.ndim), key=lambda d: -t.stride(d))) if t.ndim else t
    if dense.is_contiguous():
        return dense.reshape(-1)[::step][:SAMPLE].clone()
    idx = torch.arange(0, n, step, device=t.device)[:SAMPLE]  # overlapping or gapped strides
    return t[torch.unravel_index(idx, t.shape)]


def same(a: tuple | None, b: tuple | None) -> bool:
    if a is None or b is None:
        return a is b
    (va, sa), (vb, sb) = a, b
    if not (va == vb or (va != va and vb != vb)):  # NaN sums are equal here
        return False
    return sa.shape == sb.shape and bool(((sa == sb) | (sa.isnan() & sb.isnan()) if sa.is_floating_point() else sa == sb).all())


def check_unchanged(before: dict[str, tuple | None], tensors: dict[str, torch.Tensor | None], what: str) -> None:
    """A user error naming the first lent tensor whose content changed."""
    for field, fp in before.items():
        if not same(fp, fingerprint(tensors[field])):
            raise _changed(what, field)


def _changed(who: str, field: str) -> UserError:
    return UserError(f"{who} changed ctx.{field} in place; it is shared with other plugins and the cache: work on a copy (ctx.{field}.clone())")


@contextmanager
def lent(ctx: object, fields: Sequence[str], what: str) -> Iterator[None]:
    """Around a plugin call: the tensors of ``ctx``'s ``fields`` must come back unchanged
    (:func:`check_unchanged`; the tensors lent, not whatever the fields hold afterwards)."""
    tensors = {f: getattr(ctx, f) for f in fields}
    before = {f: fingerprint(t) for f, t in tensors.items()}
    yield
    check_unchanged(before, tensors, what)


class Lending:
    """:func:`lent` for the many plugin calls of one batch on the same tensors (a metric per
    cell): each distinct tensor is fingerprinted once; after every call its version counter is
    compared, on the host (no device sync, so no stall per cell on a GPU), which names the plugin
    of any in-place torch op; its sampled content is compared once, in :meth:`finish` (a write
    around the counter, through ``.data`` or ``.numpy()``: the error names the plugins lent it)."""

    def __init__(self) -> None:
        self._prints: dict[int, tuple[torch.Tensor, tuple]] = {}  # id -> (tensor, fingerprint); kept alive: ids stay unique
        self._lenders: dict[int, dict[str, list[str]]] = {}  # id -> field -> the plugins lent it

    @contextmanager
    def lend(self, ctx: object, fields: Sequence[str], what: str) -> Iterator[None]:
        tensors = [(f, t) for f in fields if isinstance(t := getattr(ctx, f), torch.Tensor)]
        for f, t in tensors:
            if id(t) not in self._prints:
                self._prints[id(t)] = (t, fingerprint(t))
            whats = self._lenders.setdefault(id(t), {}).setdefault(f, [])
            if what not in whats:
                whats.append(what)
        yield
        for f, t in tensors:
            if not t.is_inference() and t._version != self._prints[id(t)][1][0]:
                raise _changed(what, f)

    def finish(self) -> None:
        for key, (t, fp) in self._prints.items():
            if not same(fp, fingerprint(t)):
                field, whats = next(iter(self._lenders[key].items()))
                raise _changed(whats[0] if len(whats) == 1 else "one of " + ", ".join(whats), field)


def first_sample(dataset: object, split: str, name: str, source: str):
    """The first sample of ``split`` (``None`` if it has none), read with allocation failures as user errors."""
    samples = _reading(lambda: dataset.split(split), name, source)
    return _reading(lambda: samples[0] if len(samples) else None, name, source)


def _reading(read: Callable[[], object], name: str, source: str):
    """``read()``, with allocation failures as user errors."""
    try:
        return read()
    except MemoryError as exc:
        raise UserError(f"{source}: dataset {name!r}: one sample does not fit in memory ({str(exc).splitlines()[0]}); make the images smaller") from exc
    except RuntimeError as exc:
        if "allocate" not in str(exc):
            raise
        raise UserError(f"{source}: dataset {name!r}: one sample does not fit in memory ({str(exc).splitlines()[0][:160]}); make the images smaller") from exc


def check_first_samples(dataset: object, name: str, splits: tuple[str, ...], source: str) -> None:
    """:func:`check_sample` on the first sample of each of ``splits`` that has one (what
    ``xaibench validate`` and a run read before anything is trained). A "train" split the
    dataset does not have (or that is empty) is fine here: a model with a checkpoint needs none.
    A train split that exists but whose first sample cannot be read (a bad file) is an error,
    like in any other split."""
    n = getattr(dataset, "num_classes", 2)
    for split in splits:
        try:
            samples = _reading(lambda split=split: dataset.split(split), name, source)
        except (KeyError, IndexError) as exc:
            raise UserError(f"{source}: dataset.split = {split!r}: {exc}") from exc
        except UserError as exc:
            if split == "train" and "does not fit in memory" not in str(exc):  # no train split: only a model that trains needs one, and says so
                continue
            raise
        sample = _reading(lambda samples=samples: samples[0] if len(samples) else None, name, source)
        if sample is not None:
            check_sample(sample, name, n, f"split {split!r}, sample 0")
