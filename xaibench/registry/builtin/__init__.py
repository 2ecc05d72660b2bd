"""xaibench's own plugins: hook implementations that register the built-in explainers, metrics,
datasets and models through the ``xaibench`` entry points, exactly as a third-party package does.
"""
