"""xaibench: benchmark explanation methods for semantic-segmentation models.

Public API: :func:`run` (a benchmark config -> tidy results), :func:`explain` (maps for a model
in a notebook). Plugin packages import from :mod:`xaibench.plugin`; ``xaibench.hookimpl`` stays
as an alias of ``xaibench.plugin.hookimpl`` for plugins written before. The layout of the
package and the order of its layers: docs/architecture.md.
"""

from xaibench.registry.hookspecs import hookimpl

__version__ = "0.1.0"

__all__ = ["hookimpl", "run", "explain", "__version__"]


def __getattr__(name):  # keep `import xaibench` light: torch loads only when the API is used
    if name in ("run", "explain"):
        from xaibench import api

        return getattr(api, name)
    raise AttributeError(name)
