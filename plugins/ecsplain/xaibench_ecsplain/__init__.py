"""xaibench-ecsplain: ECSPLAIN (explainability-constrained classifiers for moving areas in SAR
interferograms) as xaibench plugins. The plugins are registered by :mod:`xaibench_ecsplain.plugin`
through the ``xaibench`` entry point; nothing here imports xaibench's internals."""

__version__ = "0.1.0"
