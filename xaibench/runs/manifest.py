"""What a run records about itself in ``manifest.json``: the config and its hash, package
versions, the machine (CPU model, vector kernels in use, the pinned instruction set), seeds,
timings, network passes, counts and the replicates."""

from __future__ import annotations

import platform
import time
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path

import torch

from xaibench.config.parse import Config
from xaibench.engine import cpu_isa
from xaibench.engine.capture import PassCounter
from xaibench.registry.discovery import Registry
from xaibench.runs.replicates import ReplicateData


def _versions(registry: Registry, used: Iterable[tuple[str, str]]) -> dict[str, str]:
    names = {"xaibench", "torch", "torchvision", "segmentation-models-pytorch", "timm", "numpy", "pandas", "pyarrow", "scipy", "pluggy", "torchmetrics"}
    names |= {registry.entry(kind, name).distribution for kind, name in used}
    out = {"python": platform.python_version()}
    for n in sorted(names):
        try:
            out[n] = metadata.version(n)
        except metadata.PackageNotFoundError:
            out[n] = "(not installed)"
    return out


def host_cpu() -> str:
    """The CPU model and the vector instructions torch's kernels use (e.g. ``AMD EPYC, AVX2``):
    trained models, and so committed numbers, can differ between CPU types."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {torch.backends.cpu.get_cpu_capability()}"


def run_manifest(config: Config, p, registry: Registry, dev, timings: dict, counter: PassCounter, data: list[ReplicateData], rows: int | None) -> dict:
    folds = {d.replicate.fold_label: d.image_ids for d in data if d.replicate.fold is not None}
    return {
        "benchmark": config.name,
        "config": config.as_dict(),
        "config_hash": config.hash(),
        "identity": config.identity(),
        "source": config.source,
        "seed": config.seed,
        "device": str(dev),
        # ray: the nodes that ran units and the bytes of weights shipped per model (x replicate)
        "executor": getattr(p, "executor_info", {"executor": "local"}),
        "cpu": host_cpu(),
        "cpu_isa": cpu_isa.describe(),
        "versions": _versions(registry, p.used),
        "timings": timings,
        "passes": vars(counter),
        "cells": len(p.cells),
        "layers": getattr(p, "layer_paths", {}),
        "model_files": getattr(p, "model_files", {}),
        "images": len({i for d in data for i in d.image_ids}),
        "replicates": [{"fold": d.replicate.fold_label, "seed": d.replicate.seed, "images": len(d.samples)} for d in data],
        **({"folds": folds} if folds else {}),
        "rows": rows,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z") if rows is not None else None,
    }
