"""The device a benchmark runs on, and the float precision it computes in there."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from xaibench.errors import UserError


def resolve_device(name: str) -> torch.device:
    """``"cpu"`` or ``"cuda"`` as a device; a user error where no CUDA device is available."""
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available on this machine; use --device cpu")
    return torch.device(name)


@contextmanager
def cuda_precision(dev: torch.device, tf32: bool) -> Iterator[None]:
    """On CUDA, convolutions and matmuls in full float32 unless ``tf32`` (restored afterwards).

    PyTorch lets cuDNN convolutions use TF32 by default; its ~1e-3 relative error is enough to
    flip a Score-CAM (whose softmax over channel scores is often nearly one-hot) on some images,
    so by default a benchmark on a GPU gives the CPU's numbers to float32 rounding.
    """
    if dev.type != "cuda":
        yield
        return
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
