"""The built-in datasets' hook implementation (entry point ``datasets`` of the xaibench distribution)."""

from __future__ import annotations

from xaibench.registry.hookspecs import hookimpl


@hookimpl
def register_datasets(register):
    from xaibench.datasets.image_folder import ImageFolder
    from xaibench.datasets.neon_trees import NeonTrees
    from xaibench.datasets.nuclei import Nuclei
    from xaibench.datasets.rooftops import Rooftops
    from xaibench.datasets.whu import WHU

    register(ImageFolder)
    register(NeonTrees)
    register(Nuclei)
    register(Rooftops)
    register(WHU)
