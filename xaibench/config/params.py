"""Plugin parameters: the config's values checked against a plugin's constructor, and the range
checks a plugin applies to its own values. Every failure is one ``UserError`` line that names
the key (and, for a dataset, the dataset)."""

from __future__ import annotations

import inspect
import numbers
import typing
from typing import Any

from xaibench.errors import MissingPackage, UserError


def check_int(dataset: str, key: str, value: object, minimum: int, multiple_of: int | None = None) -> int:
    """``value`` as an ``int`` of at least ``minimum`` (and a positive multiple of ``multiple_of``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise UserError(f"[dataset] {key} for dataset {dataset!r} must be an integer, got {value!r}")
    value = int(value)
    if multiple_of is not None and (value < multiple_of or value % multiple_of):
        raise UserError(f"[dataset] {key} = {value} for dataset {dataset!r} is invalid: must be a positive multiple of {multiple_of} (e.g. 64, 128, 256)")
    if value < minimum:
        raise UserError(f"[dataset] {key} = {value} for dataset {dataset!r} is invalid: must be >= {minimum}")
    return value


def check_float(dataset: str, key: str, value: object, lo: float, hi: float, hi_open: bool = False) -> float:
    """``value`` as a ``float`` in ``[lo, hi]`` (``[lo, hi)`` with ``hi_open``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise UserError(f"[dataset] {key} for dataset {dataset!r} must be a number, got {value!r}")
    value = float(value)
    if not (lo <= value < hi if hi_open else lo <= value <= hi):
        interval = f"[{lo}, {hi})" if hi_open else f"[{lo}, {hi}]"
        raise UserError(f"[dataset] {key} = {value} for dataset {dataset!r} is invalid: must be in {interval}")
    return value


def check_bool(dataset: str, key: str, value: object) -> bool:
    """``value`` as a ``bool`` (numpy's too)."""
    numpy_bool = type(value).__module__ == "numpy" and type(value).__name__ in ("bool", "bool_")
    if not isinstance(value, bool) and not numpy_bool:
        raise UserError(f"[dataset] {key} for dataset {dataset!r} must be true or false, got {value!r}")
    return bool(value)


def _type_ok(value: Any, annotation: Any) -> bool:
    if annotation is inspect.Parameter.empty or annotation is Any:
        return True
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return any(_type_ok(value, a) for a in typing.get_args(annotation))
    if origin in (list, tuple):
        args = typing.get_args(annotation)
        return isinstance(value, list) and (not args or all(_type_ok(v, args[0]) for v in value))
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(annotation, type):
        return isinstance(value, annotation)
    return True


def check_plugin_params(cls: type, params: dict[str, Any], where: str, seed: int | None = None) -> dict[str, Any]:
    """Check ``params`` against ``cls``'s constructor and return the keyword arguments to use.

    ``where`` prefixes error messages (e.g. ``"whu.toml: [model]"``). A ``seed`` argument of
    the constructor receives ``seed`` unless ``params`` sets it.
    """
    sig = inspect.signature(cls.__init__)
    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception:
        hints = {}
    accepted = {n: p for n, p in list(sig.parameters.items())[1:] if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    # a class without a constructor of its own takes no parameters (object's signature says **kwargs)
    takes_any = cls.__init__ is not object.__init__ and any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
    for key, value in params.items():
        if key not in accepted:
            if takes_any:
                continue
            allowed = ", ".join(accepted) or "(none)"
            raise UserError(f"{where} unknown key {key!r} for {getattr(cls, 'name', cls.__name__)!r}; allowed keys: {allowed}")
        ann = hints.get(key, accepted[key].annotation)
        if not _type_ok(value, ann):
            tname = getattr(ann, "__name__", str(ann))
            raise UserError(f"{where} key {key!r} expects {tname}, got {type(value).__name__} {value!r}")
    kwargs = dict(params)
    if seed is not None and "seed" in accepted and "seed" not in kwargs:
        kwargs["seed"] = seed
    return kwargs


def instantiate(cls: type, params: dict[str, Any], where: str, seed: int | None = None) -> Any:
    """``cls(**params)`` after :func:`check_plugin_params`; its errors are prefixed with ``where``
    (``"FILE: [section]"``), or with the file alone when they already name their section."""
    kwargs = check_plugin_params(cls, params, where, seed)
    try:
        return cls(**kwargs)
    except UserError as exc:
        msg = str(exc)
        prefix = where.split(": [", 1)[0] + ":" if msg.startswith("[") else where
        if isinstance(exc, MissingPackage):  # stays a missing package: a leaderboard regeneration skips it
            raise MissingPackage(f"{prefix} {msg}", exc.requirement) from exc
        raise UserError(f"{prefix} {msg}") from exc
    except (ValueError, TypeError) as exc:
        raise UserError(f"{where} {exc}") from exc
