"""The GPU check of issue 27: the demo grid on a cached model, on the GPU under torch.profiler.

Run through ``benchmarks/perf/gpu_check.sh`` on a machine with CUDA and the project installed.
It trains (or reads) the demo's model once, then times the demo grid from scratch (``fresh``)
on the CPU and on the GPU, profiles the GPU run, and prints: the demo's time on each, the
CPU-to-GPU ratio, the fraction of the GPU run the GPU is busy (kernel time / wall time) and the
top host-side costs. Nothing is asserted: the figures go in the README by hand of whoever runs it.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import torch

import xaibench

CONFIG = Path(__file__).resolve().parents[1] / "rooftops-demo.toml"


def timed(device: str, out: Path) -> float:
    t = time.perf_counter()
    xaibench.run(CONFIG, out, fresh=True, device=device, show_progress=False)
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t


def kernel_time_us(events) -> float:
    """Device time of the profiled kernels (the attribute's name changed across torch versions)."""
    total = 0.0
    for e in events:
        if getattr(e, "device_type", None) is not None and str(e.device_type).endswith("CUDA"):
            total += getattr(e, "self_device_time_total", getattr(e, "self_cuda_time_total", 0.0))
    return total


def main() -> int:
    if not torch.cuda.is_available():
        print("error: no CUDA device: this check needs a GPU", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="xaibench-gpu-"))
    print(f"GPU: {torch.cuda.get_device_name()}  CPU threads: {torch.get_num_threads()}  cache: {os.environ.get('XAIBENCH_CACHE', '(default)')}")
    t = time.perf_counter()
    xaibench.run(CONFIG, work / "warm", device="cuda", show_progress=False)  # trains the model on a cache miss
    print(f"model ready (trained or read from the cache) and CUDA warm: {time.perf_counter() - t:.1f} s")
    cpu_s = timed("cpu", work / "cpu")
    gpu_s = timed("cuda", work / "gpu")
    activities = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
    with torch.profiler.profile(activities=activities) as prof:
        profiled_s = timed("cuda", work / "gpu-profiled")
    events = prof.key_averages()
    busy = kernel_time_us(events) / 1e6 / profiled_s
    print(f"demo grid, model cached: CPU {cpu_s:.1f} s, GPU {gpu_s:.1f} s, CPU/GPU = {cpu_s / gpu_s:.1f}x")
    print(f"GPU busy (kernel time / wall time, profiled run of {profiled_s:.1f} s): {100 * busy:.0f} %")
    print("top host-side costs (self CPU time):")
    print(events.table(sort_by="self_cpu_time_total", row_limit=20))
    print(f"run directories: {work}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
