"""Built-in datasets; registered by :mod:`xaibench.registry.builtin.datasets` like any plugin's."""
