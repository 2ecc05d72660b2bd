"""Built-in datasets; registered by :mod:`xaibench.default_plugins.datasets` like any plugin's."""
