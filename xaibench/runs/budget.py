"""What a grid will cost, checked before any heavy work: memory per batch, and the rows it makes.

``xaibench validate`` and every run read one real sample first (:func:`xaibench.registry.contracts.first_sample`): a sample
too large to allocate is a user error naming the dataset, not a ``MemoryError`` traceback. From
its size, :func:`check` estimates the memory one batch needs (the batch, its perturbed copies in
chunks, and one map per explainer x layer) and refuses a grid whose estimate exceeds the
machine's memory; a grid of more than :data:`MANY_ROWS` rows gets a warning with the count.
"""

from __future__ import annotations

import os

from xaibench.errors import UserError

MANY_ROWS = 5_000_000
FLOAT = 4  #: bytes


def physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def batch_bytes(sample, batch_size: int, chunk_size: int, maps: int) -> int:
    """A lower bound of what one batch holds at once: the images, ``chunk_size`` perturbed copies
    of each (the masked forwards), their logits, and ``maps`` maps per image."""
    c, h, w = tuple(sample.image.shape[-3:]) if sample.image.dim() >= 3 else (1, *sample.image.shape[-2:])
    return FLOAT * h * w * batch_size * (c * (1 + chunk_size) + chunk_size + maps)


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def check(config, sample, n_maps: int, n_cells: int, n_images: int, warn) -> None:
    """Refuse a batch that cannot fit in memory; ``warn(text)`` about a grid of very many rows."""
    need = batch_bytes(sample, config.run.batch_size, config.run.chunk_size, n_maps)
    have = physical_memory()
    if have is not None and need > have:
        shape = "x".join(map(str, sample.image.shape))
        raise UserError(
            f"{config.source}: one batch of {config.run.batch_size} images of {shape} needs at least {_size(need)}, more than this machine's "
            f"{_size(have)}; lower [run] batch_size / chunk_size or make the images smaller"
        )
    rows = n_cells * n_images
    if rows > MANY_ROWS:
        warn(f"{config.source}: {n_cells:,} cells x {n_images:,} images = {rows:,} rows; this grid will take long (fewer thresholds, layers or explainers?)")


def check_plan(plan, sample, n_images: int, warn) -> None:
    """:func:`check` for a run's plan, one of the images it scores and how many it scores (all replicates)."""
    if sample is None:
        return
    n_maps = max((len(m.explainer_names) * len(m.layers) for m in plan.models), default=0)
    check(plan.config, sample, n_maps, len(plan.cells), n_images, warn)
