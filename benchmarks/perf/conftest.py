"""Shared set-up of the speed benchmarks: the WHU study's grid on an smp U-Net (resnet18).

Sizes come from the environment so a quick look is cheap:
XAIBENCH_PERF_IMAGES (default 8), XAIBENCH_PERF_SIZE (default 128); XAIBENCH_PERF_GRID=study
times the whole-grid benchmark on the study's five CAMs only (default: all eight).
"""

from __future__ import annotations

import os

import pytest
import torch

N_IMAGES = int(os.environ.get("XAIBENCH_PERF_IMAGES", "8"))
SIZE = int(os.environ.get("XAIBENCH_PERF_SIZE", "128"))
METHODS = ["grad_cam", "grad_cam_pp", "x_grad_cam", "hires_cam", "layer_cam", "eigen_cam", "score_cam", "ablation_cam"]
STUDY_METHODS = ["grad_cam", "grad_cam_pp", "x_grad_cam", "score_cam", "eigen_cam"]  # the WHU study's (seed 001)
GRID_METHODS = STUDY_METHODS if os.environ.get("XAIBENCH_PERF_GRID", "all") == "study" else METHODS
LAYERS = ["decoder.blocks.4", "decoder.blocks.3"]  # decoder1, decoder2
RESULTS: dict[str, float] = {}


@pytest.fixture(scope="session")
def unet():
    import segmentation_models_pytorch as smp

    torch.manual_seed(0)
    m = smp.Unet("resnet18", encoder_weights=None, classes=1).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # move off the initialisation so maps are not degenerate
        for p in m.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=g))
    return m


@pytest.fixture(scope="session")
def images():
    torch.manual_seed(2)
    return torch.rand(N_IMAGES, 3, SIZE, SIZE)


def pytest_terminal_summary(terminalreporter):
    if not RESULTS:
        return
    w = terminalreporter.write_line
    w("")
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    w(f"xaibench speed ({N_IMAGES} images {SIZE}x{SIZE}, {len(LAYERS)} layers, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, load average {load})")
    for k, v in RESULTS.items():
        w(f"  {k:<40} {v:10.3f}")
