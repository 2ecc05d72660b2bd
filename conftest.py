"""Test-session set-up, loaded before any test module: torch's and oneDNN's CPU kernels pinned as
the ``xaibench`` command pins them (xaibench.engine.cpu_isa), before torch loads, so that a model
trained inside the tests and one trained by a ``xaibench`` subprocess are the same model."""

from xaibench.engine import cpu_isa

cpu_isa.pin()
