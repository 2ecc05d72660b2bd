"""A guard against a oneDNN bug that corrupts memory when small networks train on AVX2 CPUs.

With torch 2.14.1 (oneDNN 3.12), the AVX2 kernels of a 1x1 convolution's backward pass write
out of bounds when the convolution's channels are not a multiple of 8, oneDNN's AVX2 vector
width. Measured on an AMD EPYC (AVX2) machine: training a timm ResNet of width 4 or 6 (its 1x1
shortcut convolutions have 4 -> 8 ... channels) crashed with ``free(): invalid next size``, hung
in an OpenMP barrier, or gave another model on every run. Widths 8 and 16 trained the same
model every time, and CPUs with AVX-512 use other kernels. :func:`avoiding_onednn_bug` turns
oneDNN off for exactly such a network on such a CPU (torch's own convolutions take over), and
changes nothing for any other network, so no other trained model or map moves.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

VECTOR_WIDTH = 8  # float32 lanes of an AVX2 register


def at_risk(module: nn.Module, capability: str | None = None) -> bool:
    """Whether training ``module`` on this CPU takes the corrupting oneDNN path: a CPU without
    AVX-512 and a 1x1 convolution whose input or output channels are not a multiple of 8."""
    capability = torch.backends.cpu.get_cpu_capability() if capability is None else capability
    if "AVX512" in capability.upper() or not torch.backends.mkldnn.is_available():
        return False
    if any(p.device.type != "cpu" for p in module.parameters()):
        return False
    return any(
        isinstance(m, nn.Conv2d) and tuple(m.kernel_size) == (1, 1) and (m.in_channels % VECTOR_WIDTH or m.out_channels % VECTOR_WIDTH)
        for m in module.modules()
    )


@contextlib.contextmanager
def avoiding_onednn_bug(module: nn.Module):
    """A context in which ``module`` runs without oneDNN if :func:`at_risk`, else a no-op.
    (``torch.backends.mkldnn.flags`` would also set TF32 and warn about Intel GPUs.)"""
    before = torch.backends.mkldnn.enabled
    if at_risk(module):
        torch.backends.mkldnn.enabled = False
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = before
