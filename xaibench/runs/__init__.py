"""Running a benchmark: the runner, replicates, budget checks, executors (local, Ray), the per-batch
worker, the results table it writes, and regeneration of committed leaderboards. (``runs``, not
``run``: ``xaibench.run`` is the public API function.)"""
