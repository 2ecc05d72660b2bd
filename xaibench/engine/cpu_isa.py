"""CPU kernels pinned to one instruction set, before torch loads, so trained models reproduce.

torch picks its vector kernels (``ATEN_CPU_CAPABILITY``) and oneDNN its JIT code
(``ONEDNN_MAX_CPU_ISA``) from the CPU it runs on. Training the demo U-Net with AVX-512 kernels
gave another model than with AVX2 kernels (clean IoU about 0.52 against 0.84, 2026-12-04), so a
leaderboard made on one CPU type did not check on the other. The ``xaibench`` command therefore
pins both to AVX2, which every x86-64 CPU of the last decade has, unless the user chose
otherwise: ``XAIBENCH_CPU_ISA=native`` leaves the kernels to the CPU, and variables the user set
themselves are never overwritten. The choice is recorded in each run's manifest and leaderboard
provenance (:func:`describe`). It only takes effect before torch is imported.
"""

from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping

from xaibench.errors import UserError

ENV = "XAIBENCH_CPU_ISA"
DEFAULT = "avx2"
#: per choice, the variables torch and oneDNN read when they load
PINS: dict[str, dict[str, str]] = {"avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}, "native": {}}
VARIABLES = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA")


def choice(environ: MutableMapping[str, str] | None = None) -> str:
    """The instruction set asked for by ``XAIBENCH_CPU_ISA`` (default ``avx2``)."""
    environ = os.environ if environ is None else environ
    value = environ.get(ENV, DEFAULT).strip().lower() or DEFAULT
    if value not in PINS:
        raise UserError(f"{ENV}={environ.get(ENV)!r} is not a CPU instruction-set choice; use one of {', '.join(PINS)}")
    return value


def pin(environ: MutableMapping[str, str] | None = None, torch_loaded: bool | None = None) -> str:
    """Set the kernel variables of :func:`choice` where the user has not set them; returns the
    choice. Once torch is loaded nothing is set (returns ``"too late"``): torch has chosen its
    kernels, and oneDNN, which reads its variable on first use, would then disagree with torch
    (:mod:`xaibench.models.onednn` decides from torch's choice)."""
    environ = os.environ if environ is None else environ
    chosen = choice(environ)
    if "torch" in sys.modules if torch_loaded is None else torch_loaded:
        return "too late"
    for key, value in PINS[chosen].items():
        environ.setdefault(key, value)
    return chosen


def describe(environ: MutableMapping[str, str] | None = None) -> str:
    """The kernel variables in force, for provenance (``""``: none set, the CPU decides); torch's
    capability actually in use is recorded beside it (:func:`xaibench.runs.manifest.host_cpu`)."""
    environ = os.environ if environ is None else environ
    return ", ".join(f"{k}={environ[k]}" for k in VARIABLES if k in environ)
