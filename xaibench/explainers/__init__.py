"""Built-in explainers; registered by :mod:`xaibench.default_plugins.explainers` like any plugin's."""
