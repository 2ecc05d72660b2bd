"""Argument checks shared by the weaksup datasets: each failure is one ``UserError`` line that
names the dataset and the ``[dataset]`` key."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from xaibench.plugin import Sample, UserError


def check_int(dataset: str, key: str, value: object, minimum: int, multiple_of: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise UserError(f"[dataset] {key} for dataset {dataset!r} must be an integer, got {value!r}")
    value = int(value)
    if multiple_of is not None and (value < multiple_of or value % multiple_of):
        raise UserError(
            f"[dataset] {key} = {value} for dataset {dataset!r} is invalid: must be a positive multiple of {multiple_of} (e.g. 64, 128, 256)"
        )
    if value < minimum:
        raise UserError(f"[dataset] {key} = {value} for dataset {dataset!r} is invalid: must be >= {minimum}")
    return value


def check_float(dataset: str, key: str, value: object, lo: float, hi: float, hi_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise UserError(f"[dataset] {key} for dataset {dataset!r} must be a number, got {value!r}")
    value = float(value)
    if not (lo <= value < hi if hi_open else lo <= value <= hi):
        interval = f"[{lo}, {hi})" if hi_open else f"[{lo}, {hi}]"
        raise UserError(f"[dataset] {key} = {value} for dataset {dataset!r} is invalid: must be in {interval}")
    return value


def check_bool(dataset: str, key: str, value: object) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise UserError(f"[dataset] {key} for dataset {dataset!r} must be true or false, got {value!r}")
    return bool(value)


def mean_of(split: Sequence[Sample], n: int) -> torch.Tensor:
    """Per-channel mean of the first ``min(n, len(split))`` images of ``split``."""
    m = min(n, len(split))
    sums = torch.zeros(split[0].image.shape[0], dtype=torch.float64)
    for i in range(m):
        sums += split[i].image.double().mean(dim=(1, 2))
    return (sums / m).float()
