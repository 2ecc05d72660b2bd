"""On a CUDA device, the maps and the benchmark rows are those of the CPU.

Skipped where torch sees no GPU (CI has none); run them on a machine that has one with
``python -m pytest tests/test_cuda.py``. TF32 is switched off so that the GPU computes in
float32 like the CPU (the runner does that itself unless ``[run] tf32 = true``); what is left
are the rounding differences of other kernels.
"""

import copy
import json
import shutil

import pandas as pd
import pytest
import torch

import xaibench
from xaibench.engine.cache import default_cache_dir
from xaibench.engine.devices import cuda_precision

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

METHODS = ["grad_cam", "grad_cam_pp", "x_grad_cam", "hires_cam", "layer_cam", "eigen_cam", "score_cam", "ablation_cam"]
LAYERS = ["decoder.blocks.2", "decoder.blocks.1"]


@pytest.fixture
def full_float32():
    with cuda_precision(torch.device("cuda"), tf32=False):
        yield


@pytest.fixture(scope="module")
def weights(tiny_unet):
    g = torch.Generator().manual_seed(3)
    m = copy.deepcopy(tiny_unet)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return m


def test_every_explainer_gives_the_cpu_maps_on_cuda(weights, tiny_images, full_float32):
    cpu = xaibench.explain(weights, tiny_images, METHODS, LAYERS)
    model = copy.deepcopy(weights).cuda()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    gpu = xaibench.explain(model, tiny_images.cuda(), METHODS, LAYERS)
    for key, m in cpu.items():
        g = gpu[key]
        assert g.device.type == "cuda", key
        diff = (g.cpu() - m).abs()
        assert diff.max() < 1e-4, (key, float(diff.max()))
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights and buffers untouched
    assert all(p.device.type == "cuda" and p.grad is None for p in model.parameters())


@pytest.fixture
def tf32_allowed():
    """PyTorch's default for cuDNN convolutions, for matmuls too: the runner must switch it off."""
    with cuda_precision(torch.device("cuda"), tf32=True):
        yield


def test_a_benchmark_on_cuda_gives_the_cpu_rows(tiny_config, tmp_path, tf32_allowed):
    tiny_config.write_text(
        tiny_config.read_text()
        .replace('explainers = ["grad_cam", "eigen_cam"]', 'explainers = ["grad_cam", "score_cam", "ablation_cam"]')
        .replace('metrics = ["confidence", "iou_drop"]', 'metrics = ["confidence", "iou_drop", "localization_f1", "auroc"]')
    )
    cpu = xaibench.run(tiny_config, tmp_path / "cpu", show_progress=False)  # trains the model on the CPU and caches it
    shutil.rmtree(default_cache_dir() / "heatmaps")  # the GPU computes its own maps
    gpu = xaibench.run(tiny_config, tmp_path / "gpu", device="cuda", show_progress=False)  # the same cached weights
    manifest = json.loads((tmp_path / "gpu" / "manifest.json").read_text())
    assert manifest["device"].startswith("cuda") and manifest["timings"]["heatmaps_computed"] > 0
    key = ["cell_key", "image_id"]
    a = cpu.sort_values(key).reset_index(drop=True)
    b = gpu.sort_values(key).reset_index(drop=True)
    assert a[key].equals(b[key])
    assert a["value"].isna().equals(b["value"].isna())
    diff = (a["value"] - b["value"]).abs().dropna()
    # Binarised maps can flip a pixel that sits on the threshold, so a few thresholded scores may move a little;
    # everything else agrees to float rounding.
    assert (diff < 1e-4).mean() > 0.98, diff.describe()
    assert diff.max() < 0.05, a.loc[diff.idxmax()]
    assert pd.read_csv(tmp_path / "gpu" / "summary.csv")["mean"].notna().all()
