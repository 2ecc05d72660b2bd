"""Built-in model plugins."""

from xaibench.hookspecs import hookimpl
from xaibench.models.smp_unet import SmpUnet


@hookimpl
def register_models(register):
    register(SmpUnet)
