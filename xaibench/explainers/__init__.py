"""Built-in explainers; registered by :mod:`xaibench.registry.builtin.explainers` like any plugin's."""
