"""Plugin discovery: a fresh pluggy PluginManager per registry, fed by the ``xaibench`` entry points.

Built-in explainers, metrics, datasets and models are entry points of the ``xaibench``
distribution itself (see pyproject.toml), so they load exactly like a third-party package's.
There is no global manager: every :func:`load_registry` call builds its own, so tests (and
notebooks) can add plugin modules of their own with ``extra_plugins``.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import metadata
from types import ModuleType

import pluggy

from xaibench.errors import UserError, did_you_mean
from xaibench.registry import hookspecs
from xaibench.registry.contracts import class_problems

GROUP = "xaibench"
KINDS = ("explainers", "metrics", "datasets", "models")
_SINGULAR = {"explainers": "explainer", "metrics": "metric", "datasets": "dataset", "models": "model"}
LOCAL = "(local)"
#: ``NAME:VARIANT`` names explainer or metric NAME with its own ``[explainer_params."NAME:VARIANT"]``
VARIANT = ":"
VARIANT_KINDS = ("explainers", "metrics")


@dataclass(frozen=True)
class Entry:
    """One registered plugin class and where it came from."""

    kind: str
    name: str
    cls: type
    distribution: str
    module: str


class PluginManager(pluggy.PluginManager):
    """pluggy's manager, plus the distribution each entry-point plugin came from."""

    def __init__(self) -> None:
        super().__init__(GROUP)
        self.add_hookspecs(hookspecs)
        self.distributions: dict[int, str] = {}  # id(plugin module) -> distribution name


def _distributions(pm: pluggy.PluginManager) -> dict[int, str]:
    return dict(getattr(pm, "distributions", {}))


def _load_entry_points(pm: PluginManager) -> None:
    """Import and register every ``xaibench`` entry point, remembering its distribution.

    A package whose entry point does not import is reported by name, with its distribution.
    ``XAIBENCH_DISABLE_PLUGINS`` (comma-separated entry-point or distribution names) skips some,
    e.g. to work around a broken third-party package.
    """
    disabled = {n.strip() for n in os.environ.get("XAIBENCH_DISABLE_PLUGINS", "").split(",") if n.strip()}
    for ep in sorted(metadata.entry_points(group=GROUP), key=lambda e: (e.dist.name if e.dist else "", e.name)):
        dist = ep.dist.name if ep.dist is not None else LOCAL
        if ep.name in disabled or dist in disabled:
            continue
        if pm.get_plugin(ep.name) is not None or pm.is_blocked(ep.name):
            raise UserError(f"two installed distributions declare the xaibench entry point {ep.name!r} (one is {dist}); uninstall one")
        try:
            plugin = ep.load()
        except Exception as exc:  # a broken third-party package must not look like our bug
            raise UserError(
                f"entry point {ep.name!r} = {ep.value!r} of distribution {dist} failed to import: {type(exc).__name__}: {exc} "
                f"(set XAIBENCH_DISABLE_PLUGINS={ep.name} to skip it)"
            ) from exc
        try:
            pm.register(plugin, name=ep.name)
        except pluggy.PluginValidationError as exc:
            raise UserError(f"plugin {ep.value} (distribution {dist}): {exc}") from exc
        pm.distributions[id(plugin)] = dist


class Registry:
    """Registered plugin classes by kind and name."""

    def __init__(self, pm: pluggy.PluginManager):
        self._entries: dict[str, dict[str, Entry]] = {kind: {} for kind in KINDS}
        dists = _distributions(pm)
        for kind in KINDS:
            hook = getattr(pm.hook, f"register_{kind}")
            for impl in hook.get_hookimpls():
                dist = dists.get(id(impl.plugin), LOCAL)
                module = getattr(impl.plugin, "__name__", impl.plugin_name)
                impl.function(register=self._registrar(kind, dist, module))

    def _registrar(self, kind: str, dist: str, module: str):
        def register(cls: type) -> None:
            name = getattr(cls, "name", None)
            if not isinstance(name, str) or not name:
                raise UserError(
                    f"plugin module {module!r} ({dist}) registered {kind[:-1]} {cls!r} without a 'name' attribute"
                )
            if VARIANT in name:
                raise UserError(f"plugin module {module!r} ({dist}) registered {_SINGULAR[kind]} {name!r}: names cannot contain {VARIANT!r} (it marks a variant, NAME{VARIANT}VARIANT)")
            old = self._entries[kind].get(name)
            if old is not None:
                raise UserError(
                    f"{_SINGULAR[kind]} {name!r} is registered twice: by {old.module} "
                    f"(distribution {old.distribution}) and by {module} (distribution {dist}); "
                    "uninstall one of them or rename the plugin"
                )
            problems = class_problems(kind, cls)
            if problems:
                raise UserError(f"{_SINGULAR[kind]} {name!r} of plugin module {module!r} ({dist}): {'; '.join(problems)}")
            self._entries[kind][name] = Entry(kind, name, cls, dist, module)

        return register

    def names(self, kind: str) -> list[str]:
        return sorted(self._entries[kind])

    def entries(self, kind: str) -> list[Entry]:
        return [self._entries[kind][n] for n in self.names(kind)]

    def entry(self, kind: str, name: str) -> Entry:
        """The entry of ``name``; for explainers and metrics ``NAME:VARIANT`` is plugin NAME
        (a variant: the same plugin under another name, with its own parameters)."""
        base, sep, variant = name.partition(VARIANT)
        if sep and (kind not in VARIANT_KINDS or not variant or not base):
            raise UserError(f"{_SINGULAR[kind]} {name!r}: a variant is written NAME{VARIANT}VARIANT, and only explainers and metrics have variants")
        try:
            return self._entries[kind][base]
        except KeyError:
            raise UserError(did_you_mean(base, self.names(kind), _SINGULAR[kind])) from None

    def get(self, kind: str, name: str) -> type:
        """The class registered as ``name``; an unknown name raises with the closest names."""
        return self.entry(kind, name).cls

    def expand(self, kind: str, patterns: Iterable[str]) -> list[str]:
        """Names matching each pattern (``fnmatch`` wildcards such as ``"*cam*"``), in order, unique."""
        out: list[str] = []
        for pat in patterns:
            if any(ch in pat for ch in "*?["):
                hits = [n for n in self.names(kind) if fnmatch.fnmatchcase(n, pat)]
                if not hits:
                    raise UserError(
                        f"pattern {pat!r} matches no {_SINGULAR[kind]}. Available: {', '.join(self.names(kind))}"
                    )
            else:
                self.entry(kind, pat)
                hits = [pat]
            out.extend(h for h in hits if h not in out)
        return out


HOOKS = tuple(f"register_{kind}" for kind in KINDS)


def _check_hook_functions(pm: PluginManager) -> None:
    """Functions of a plugin module that look like hooks but are not: a ``register_*`` function
    without ``@hookimpl`` (pluggy would skip it silently) or with a hook name that does not exist."""
    dists = _distributions(pm)
    for plugin in pm.get_plugins():
        where = f"plugin {getattr(plugin, '__name__', repr(plugin))} (distribution {dists.get(id(plugin), LOCAL)})"
        for attr in dir(plugin):
            fn = getattr(plugin, attr, None)
            if not attr.startswith("register") or not callable(fn) or isinstance(fn, type):
                continue
            decorated = hasattr(fn, f"{GROUP}_impl")
            if attr in HOOKS and not decorated:
                raise UserError(f"{where}: {attr}() is not decorated with @hookimpl (from xaibench.plugin import hookimpl), so it would never be called")
            if attr not in HOOKS and decorated:
                raise UserError(f"{where}: {did_you_mean(attr, HOOKS, 'hook')}")


def plugin_manager(extra_plugins: Iterable[ModuleType | object] = ()) -> PluginManager:
    """A new PluginManager with the hookspecs, every installed entry point and ``extra_plugins``."""
    pm = PluginManager()
    _load_entry_points(pm)
    for plugin in extra_plugins:
        try:
            pm.register(plugin)
        except pluggy.PluginValidationError as exc:
            raise UserError(f"plugin {getattr(plugin, '__name__', plugin)!r}: {exc}") from exc
    _check_hook_functions(pm)
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        dists = _distributions(pm)
        where = getattr(exc.plugin, "__name__", repr(exc.plugin))
        dist = dists.get(id(exc.plugin), LOCAL)
        raise UserError(f"plugin {where} (distribution {dist}): {exc}") from exc
    return pm


def load_registry(extra_plugins: Iterable[ModuleType | object] = ()) -> Registry:
    """Discover every plugin and return their registered classes."""
    return Registry(plugin_manager(extra_plugins))
