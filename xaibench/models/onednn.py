"""A guard against a oneDNN bug that corrupts memory when small ResNets train on AVX2 CPUs.

With torch 2.14.1 (oneDNN 3.12) on an AMD EPYC (AVX2) machine, training a timm ResNet of
width 4 or 6 crashed (``free(): invalid next size``, a segfault), hung in an OpenMP barrier
inside ``jit_avx2_1x1_convolution_bwd_weights``, or gave another model on every run; widths 8
and 16 trained the same model every time, and with oneDNN off width 4 did too. Those widths
give strided 1x1 shortcut convolutions whose input channels (4, 6) are not a multiple of 8,
oneDNN's AVX2 vector width; CPUs with AVX-512 use other kernels. :func:`avoiding_onednn_bug`
turns oneDNN off for such a network on such a CPU (torch's own convolutions take over) and
changes nothing for any other network, so no committed benchmark's model moves.
"""

from __future__ import annotations

import contextlib
import os

import torch
from torch import nn

VECTOR_WIDTH = 8  # float32 lanes of an AVX2 register


def at_risk(module: nn.Module, capability: str | None = None) -> bool:
    """Whether training ``module`` on this CPU may take the corrupting oneDNN path: a CPU
    without AVX-512 and a strided 1x1 convolution (a ResNet shortcut) whose input channels are
    not a multiple of 8. That is the pattern measured to break, not the bug's exact condition:
    a lone strided 1x1 convolution of 4 -> 8 channels trained the same every run, and so did
    the ECSPLAIN ``sepunet`` baseline, whose unstrided 1x1 convolutions have 2 -> 12 channels."""
    capability = torch.backends.cpu.get_cpu_capability() if capability is None else capability
    limit = os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper()  # oneDNN held below AVX-512 (xaibench.engine.cpu_isa)
    held_below_avx512 = bool(limit) and not limit.startswith("AVX512") and limit not in ("ALL", "DEFAULT")
    if ("AVX512" in capability.upper() and not held_below_avx512) or not torch.backends.mkldnn.is_available():
        return False
    if any(p.device.type != "cpu" for p in module.parameters()):
        return False
    return any(
        isinstance(m, nn.Conv2d) and tuple(m.kernel_size) == (1, 1) and max(m.stride) > 1 and m.in_channels % VECTOR_WIDTH
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
