"""A tail for any model: the rest of the network after a layer, by replaying the model's own forward.

Ablation-CAM needs the logits with a layer's output changed, many times per image. A model that
gives no tail (:class:`xaibench.models.base.Tail`) would pay a full forward each time. Here a
tail is derived from one recorded forward of one image, for any ``nn.Module``, without tracing
its code: the modules that finished before the layer started (the encoder, the decoder blocks
before it, ...) are the *frontier*; the shared pass captures their outputs, and the tail runs the
model's own ``forward`` again with each frontier module and the layer answering from those
outputs, so only what comes after the layer is computed. Python control flow, skip connections
and calls of ``torch`` functions between modules run as written, because the model's code runs.

A tail is only used when it reproduces the model's logits on the recorded image (to 1e-5 of
their scale); where the layer is called more than once, a frontier module is called again after
the layer, or the replay differs (a module with state, an in-place change of a captured output),
there is no tail and the engine runs full forwards, as before. The recorded forward and the check
cost two rows of one image per model, layer and input shape, and are remembered per module.
"""

from __future__ import annotations

import weakref
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from xaibench.config.vocabulary import INPUT_LAYER
from xaibench.engine.capture import hooked
from xaibench.models.base import LoadedModel, Tail, logits_of

#: module -> {(layer path, one image's shape): derived tail or None}
_DERIVED: weakref.WeakKeyDictionary[nn.Module, dict[tuple[str, tuple[int, ...]], Tail | None]] = weakref.WeakKeyDictionary()


def tail_at(model: LoadedModel, path: str, image: torch.Tensor) -> Tail | None:
    """The model's own tail at ``path``, else one derived by replay (``image``: one or more
    images ``[B, C, H, W]`` of the run; the first is recorded), else None."""
    given = model.tail(path)
    if given is not None or path in ("", INPUT_LAYER):
        return given
    module = model.module
    if isinstance(module, torch.jit.ScriptModule):
        return None  # its inner modules run where no hook or patched forward reaches
    known = _DERIVED.setdefault(module, {})
    key = (path, tuple(image.shape[1:]))
    if key not in known:
        known[key] = derive_tail(module, path, image[:1])
    return known[key]


def derive_tail(module: nn.Module, path: str, example: torch.Tensor) -> Tail | None:
    """A replaying tail of ``module`` after ``path``, checked on ``example`` ``[1, C, H, W]``;
    None where the forward cannot be replayed from there."""
    if path not in dict(module.named_modules()):
        return None
    try:
        logits, finished, outputs = record(module, example)
    except (RuntimeError, ValueError, TypeError, AssertionError):
        return None  # the engine's own forward will say what is wrong
    frontier = _frontier(finished, path)
    out = outputs.get(path)
    structured = isinstance(out, (list, tuple)) and len(out) > 0 and torch.is_tensor(out[0])
    if frontier is None or not (torch.is_tensor(out) or structured):
        return None
    # a layer that returns a list or tuple is explained at its first element (logits_of): the
    # tail needs the rest of it too
    tail = Tail(extra=(INPUT_LAYER, *frontier, *((path,) if structured else ())), fn=_Replay(module, path, frontier, structured))
    extras = {INPUT_LAYER: example, **{p: outputs[p] for p in tail.extra[1:]}}
    idx = torch.zeros(1, dtype=torch.long, device=example.device)
    try:
        with torch.no_grad():
            again = tail.fn(logits_of(out), extras, idx)
    except (RuntimeError, ValueError, TypeError, AssertionError, IndexError):
        return None
    if not torch.is_tensor(again) or again.shape != logits.shape:
        return None
    scale = max(1.0, float(logits.abs().max()))
    return tail if float((again - logits).abs().max()) <= 1e-5 * scale else None


def record(module: nn.Module, example: torch.Tensor) -> tuple[torch.Tensor, list[str], dict[str, Any]]:
    """One forward of ``example`` in eval mode without gradients: the logits, every module's path
    in the order their forwards returned (a path once per call), and each module's last output
    (the model's own under ``""``)."""
    finished: list[str] = []
    outputs: dict[str, Any] = {}
    was_training = module.training
    module.eval()
    try:
        with hooked(module, [name for name, _ in module.named_modules() if name], outputs, order=finished), torch.no_grad():
            outputs[""] = module(example)
    finally:
        module.train(was_training)
    return logits_of(outputs[""]), finished, outputs


def replayable(finished: list[str], path: str) -> bool:
    """Whether the forward recorded in ``finished`` (see :func:`record`) can be replayed from
    ``path`` (checked against the logits only when a tail is derived)."""
    return _frontier(finished, path) is not None


def _frontier(finished: list[str], path: str) -> tuple[str, ...] | None:
    """The outermost modules that returned before ``path`` was called (calls nest, so a module
    that returned before ``path`` did and is neither inside it nor around it returned before it
    began), or None where ``path`` or one of them is called more than once."""
    calls = Counter(finished)
    if calls[path] != 1:
        return None
    before = set(p for p in finished[: finished.index(path)] if not p.startswith(path + "."))
    outermost = [p for p in dict.fromkeys(finished) if p in before and not any(q in before for q in _parents(p))]
    if any(calls[p] != 1 for p in outermost):
        return None  # called twice: which call to answer from memory is not known
    return tuple(outermost)


def _parents(path: str) -> list[str]:
    parts = path.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


class _Replay:
    """``fn`` of a derived tail: the model's forward on the rows' images, with the frontier
    modules answering from the captured outputs and the layer answering with ``act``."""

    def __init__(self, module: nn.Module, path: str, frontier: tuple[str, ...], structured: bool = False):
        self.structured = structured
        self.root = weakref.ref(module)  # the derived tails are remembered per module: no cycle through it
        self.path, self.frontier = path, frontier
        named = dict(module.named_modules())
        self.modules = {p: named[p] for p in (*frontier, path)}

    def __call__(self, act: torch.Tensor, extras: dict[str, Any], idx: torch.Tensor) -> torch.Tensor:
        images = extras[INPUT_LAYER]
        n = images.shape[0]
        answers = {p: _rows(extras[p], idx, n) for p in self.frontier}
        if self.structured:  # the layer's list or tuple, its first element replaced
            whole = _rows(extras[self.path], idx, n)
            act = type(whole)([act, *whole[1:]])
        answers[self.path] = act
        module = self.root()
        assert module is not None, "the model of a derived tail is gone"
        with _answering(self.modules, answers):
            return logits_of(module(images[idx]))


def _rows(value: Any, idx: torch.Tensor, n: int) -> Any:
    """Rows ``idx`` of a captured output of a batch of ``n`` (tensors, and lists, tuples and
    dicts of them; anything else, and tensors without the batch's first dimension, as they are)."""
    if torch.is_tensor(value):
        return value[idx] if value.ndim and value.shape[0] == n else value
    if isinstance(value, (list, tuple)):
        return type(value)(_rows(v, idx, n) for v in value)
    if isinstance(value, dict):
        return {k: _rows(v, idx, n) for k, v in value.items()}
    return value


@contextmanager
def _answering(modules: dict[str, nn.Module], answers: dict[str, Any]) -> Iterator[None]:
    """Each module of ``answers`` returns its answer instead of running (its hooks still run)."""
    saved = {}
    try:
        for p, value in answers.items():
            m = modules[p]
            saved[p] = m.__dict__.get("forward")
            object.__setattr__(m, "forward", _Constant(value))
        yield
    finally:
        for p, prior in saved.items():
            if prior is None:
                object.__delattr__(modules[p], "forward")
            else:
                object.__setattr__(modules[p], "forward", prior)


class _Constant:
    def __init__(self, value: Any):
        self.value = value

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.value
