"""Built-in models; registered by :mod:`xaibench.default_plugins.models` like any plugin's."""
