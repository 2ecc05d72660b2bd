"""xaibench: benchmark explanation methods for semantic-segmentation models.

Public API: :func:`run` (a benchmark config -> tidy results), :func:`explain` (maps for a model
in a notebook), :data:`hookimpl` (for plugin packages).
"""

from xaibench.hookspecs import hookimpl

__version__ = "0.1.0"

__all__ = ["hookimpl", "run", "explain", "__version__"]


def __getattr__(name):  # keep `import xaibench` light: torch loads only when the API is used
    if name in ("run", "explain"):
        from xaibench import api

        return getattr(api, name)
    raise AttributeError(name)
