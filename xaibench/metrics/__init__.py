"""Built-in metrics; registered by :mod:`xaibench.registry.builtin.metrics` like any plugin's."""
