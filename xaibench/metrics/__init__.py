"""Built-in metrics; registered by :mod:`xaibench.default_plugins.metrics` like any plugin's."""
