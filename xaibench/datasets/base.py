"""What a dataset plugin provides: samples of (image, mask, id) for a named split.

A dataset plugin registers a class. The class's constructor keyword arguments *are* its
configuration: ``[dataset]`` keys in the benchmark TOML are checked against the signature
(unknown keys and wrong types are reported with the allowed keys). A ``seed`` argument, if the
constructor has one, receives ``[benchmark] seed`` unless the config sets it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import ClassVar, Protocol, overload, runtime_checkable

import numpy as np
import torch


@dataclass(frozen=True)
class Sample:
    """One image with its ground truth.

    image: float32 tensor [C, H, W], values in [0, 1].
    mask: int64 tensor [H, W] of class ids (0 = background); for binary data 1 = object.
    image_id: stable identifier, unique within the split (used as a results key).
    label: image-level class (e.g. 1 = contains the object), where the dataset defines one.
    """

    image: torch.Tensor
    mask: torch.Tensor
    image_id: str
    label: int | None = None


@runtime_checkable
class Dataset(Protocol):
    """A dataset plugin instance."""

    name: ClassVar[str]
    #: number of classes in the masks, background included (2 for binary data)
    num_classes: int

    def split(self, name: str) -> Sequence[Sample]:
        """The samples of split ``name`` ("train", "val" or "test"); len() and [i] must work."""
        ...

    def channel_mean(self) -> torch.Tensor:
        """Per-channel mean of the training images, shape [C] (used by the ``mean`` fill)."""
        ...


class LazySplit(Sequence[Sample]):
    """A split whose samples are made on access by ``load(i)``: ``len``, ``[i]`` (negative too),
    slices and iteration, with out-of-range errors that name the split. ``memoise=True``
    keeps every sample made (for generated data); ``False`` reads again each time (for large
    datasets on disk)."""

    def __init__(self, name: str, n: int, load: Callable[[int], Sample], memoise: bool = False) -> None:
        self._name, self._n, self._load = name, n, load
        self._cache: dict[int, Sample] | None = {} if memoise else None

    def __len__(self) -> int:
        return self._n

    @overload
    def __getitem__(self, i: int) -> Sample: ...
    @overload
    def __getitem__(self, i: slice) -> list[Sample]: ...
    def __getitem__(self, i: int | slice) -> Sample | list[Sample]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self._n))]
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
            raise TypeError(f"split indices must be integers, not {type(i).__name__}")
        j = int(i) + self._n if int(i) < 0 else int(i)
        if not 0 <= j < self._n:
            raise IndexError(f"{self._name} index {i} out of range (len {self._n})")
        if self._cache is None:
            return self._load(j)
        sample = self._cache.get(j)
        if sample is None:
            sample = self._cache[j] = self._load(j)
        return sample

    def __iter__(self) -> Iterator[Sample]:
        for j in range(self._n):
            yield self[j]
