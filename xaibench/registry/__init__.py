"""Plugins: hook specs, discovery through the ``xaibench`` entry points, and the contract checks
a registered class must pass; :mod:`.builtin` holds the hookimpls of the built-in plugins."""
