"""What a dataset plugin provides: samples of (image, mask, id) for a named split.

A dataset plugin registers a class. The class's constructor keyword arguments *are* its
configuration: ``[dataset]`` keys in the benchmark TOML are checked against the signature
(unknown keys and wrong types are reported with the allowed keys). A ``seed`` argument, if the
constructor has one, receives ``[benchmark] seed`` unless the config sets it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Protocol, Sequence, runtime_checkable

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
