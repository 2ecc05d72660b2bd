"""Built-in metrics, registered through the ``xaibench`` entry point like any plugin's."""

from xaibench.hookspecs import hookimpl
from xaibench.metrics.faithfulness import Confidence, Entropy, IoUDrop

BUILTIN = (Confidence, Entropy, IoUDrop)


@hookimpl
def register_metrics(register):
    for cls in BUILTIN:
        register(cls)
