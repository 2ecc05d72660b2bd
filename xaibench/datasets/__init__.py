"""Built-in dataset plugins."""

from xaibench.hookspecs import hookimpl


@hookimpl
def register_datasets(register):
    from xaibench.datasets.rooftops import Rooftops
    from xaibench.datasets.whu import WHU

    register(Rooftops)
    register(WHU)
