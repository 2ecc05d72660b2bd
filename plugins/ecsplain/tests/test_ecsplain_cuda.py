"""ECSPLAIN on a CUDA device: training with the CAM constraint runs there, and its CAMs (the
training-time ones and the core engine's at the fused layer) are those of the CPU.

Skipped where torch sees no GPU (CI has none); on a machine with one:
``python -m pytest plugins/ecsplain/tests/test_ecsplain_cuda.py``.
"""

from __future__ import annotations

import copy

import pytest
import torch
from xaibench_ecsplain.cams import CAM_TYPES, multilayer_cam
from xaibench_ecsplain.model import Ecsplain, fused_layer
from xaibench_ecsplain.synthetic import InsarMovingAreas

import xaibench
from xaibench.plugin import LoadContext, LoadedModel
from xaibench.testing import full_float32

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(autouse=True)
def no_tf32():
    with full_float32("cuda"):
        yield


@pytest.mark.parametrize("cam_type", CAM_TYPES)
def test_trained_on_cuda_and_the_cams_match_the_cpu(cam_type, tmp_path):
    data = InsarMovingAreas(size=64, n_train=8, n_val=0, n_test=4, seed=5)
    ctx = LoadContext(dataset=data, dataset_key="insar-64", device=torch.device("cuda"), cache_dir=tmp_path, show_progress=False)
    plugin = Ecsplain(cam_type=cam_type, width=4, nb_epochs=2, batch_size=4)
    loaded = plugin.load(ctx)  # trains on the GPU: the CAM loss's double backward runs there
    assert plugin.train_seconds > 0
    assert all(p.device.type == "cuda" and torch.isfinite(p).all() for p in loaded.module.parameters())
    x = torch.stack([s.image for s in data.split("test")])
    cpu_net = copy.deepcopy(loaded.module).cpu()

    gpu_cam, gpu_logits = multilayer_cam(loaded.module, x.cuda(), plugin.cam_paths(), cam_type)
    cpu_cam, cpu_logits = multilayer_cam(cpu_net, x, plugin.cam_paths(), cam_type)
    assert (gpu_logits.cpu() - cpu_logits).abs().max() < 1e-4
    assert (gpu_cam.cpu() - cpu_cam).abs().max() < 1e-4

    core_gpu = xaibench.explain(loaded, x.cuda(), cam_type, fused_layer())
    core_cpu = xaibench.explain(LoadedModel(module=cpu_net, task="classifier", layers=loaded.layers), x, cam_type, fused_layer())
    assert core_gpu.device.type == "cuda"
    assert (core_gpu.cpu() - core_cpu).abs().max() < 1e-4
