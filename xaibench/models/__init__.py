"""Built-in models; registered by :mod:`xaibench.registry.builtin.models` like any plugin's."""
