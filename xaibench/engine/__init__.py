"""The engine: maps for a batch (shared passes, captured layers, cache), perturbed inputs, and
metrics evaluated on them. It knows cells and plugins, never run directories or leaderboards."""
