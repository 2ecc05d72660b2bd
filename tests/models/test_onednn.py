"""The guard against oneDNN's AVX2 1x1-convolution backward bug (xaibench.models.onednn)."""

import pytest
import torch
from torch import nn

from xaibench.models import onednn
from xaibench.models.timm_classifier import TimmClassifier
from xaibench.models.training import train_or_load


def _net(channels: int, kernel: int = 1, stride: int = 2) -> nn.Module:
    """A convolution to ``channels``, then a ResNet-like shortcut to twice as many."""
    return nn.Sequential(nn.Conv2d(3, channels, 3, padding=1), nn.Conv2d(channels, 2 * channels, kernel, stride=stride), nn.AdaptiveAvgPool2d(1), nn.Flatten())


@pytest.mark.parametrize(
    ("module", "capability", "risk"),
    [
        (_net(4), "AVX2", True),  # a strided 1x1 convolution of 4 -> 8 channels
        (_net(6), "AVX2", True),
        (_net(8), "AVX2", False),  # multiples of the 8 AVX2 lanes
        (_net(4, kernel=3), "AVX2", False),  # no 1x1 convolution
        (_net(4, stride=1), "AVX2", False),  # unstrided, as the ECSPLAIN baselines' heads
        (_net(4), "AVX512", False),  # other kernels
        (_net(4), "DEFAULT", True),
    ],
)
def test_only_a_strided_1x1_convolution_from_channels_off_the_avx2_width_is_at_risk_off_avx512(module, capability, risk, monkeypatch):
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)  # oneDNN free to use what the capability says
    assert onednn.at_risk(module, capability) is risk


def test_onednn_held_to_avx2_on_an_avx512_cpu_is_at_risk(monkeypatch):
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert onednn.at_risk(_net(4), "AVX512") and not onednn.at_risk(_net(8), "AVX512")
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE")
    assert not onednn.at_risk(_net(4), "AVX512")


def test_the_timm_classifiers_of_the_tests_and_of_the_benchmarks_are_told_apart():
    assert onednn.at_risk(TimmClassifier(width=4).build(1), "AVX2")
    assert onednn.at_risk(TimmClassifier(width=6).build(1), "AVX2")
    assert not onednn.at_risk(TimmClassifier(width=8).build(1), "AVX2")
    assert not onednn.at_risk(TimmClassifier(width=16).build(1), "AVX2")


@pytest.mark.parametrize(("channels", "enabled"), [(4, False), (8, True)])
def test_training_runs_without_onednn_exactly_when_the_network_is_at_risk(channels, enabled, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    seen = []

    def step(module, items, opt):
        seen.append(torch.backends.mkldnn.enabled)
        loss = module(torch.stack(items)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        return {"loss": loss.item()}

    samples = [torch.rand(3, 8, 8) for _ in range(4)]
    train_or_load(_net(channels), tmp_path / "m.pt", step, samples, epochs=1, batch_size=2, lr=0.01, seed=0, device=torch.device("cpu"), title="t", show_progress=False)
    assert seen and all(s is enabled for s in seen)
    assert torch.backends.mkldnn.enabled  # restored afterwards


def test_a_width_4_classifier_trains_to_the_same_weights_every_time(tmp_path):
    """On an AVX2 CPU without the guard this crashed (free(): invalid next size), hung, or
    gave other weights run to run."""
    from xaibench.datasets.base import Sample
    from xaibench.models.training import LoadContext

    class Tiles:
        name, num_classes = "tiles", 2

        def split(self, name):
            g = torch.Generator().manual_seed(1)
            return [Sample(torch.rand(3, 32, 32, generator=g), torch.zeros(32, 32, dtype=torch.long), f"{name}{i}", i % 2) for i in range(8)]

    states = []
    for run in range(2):
        ctx = LoadContext(dataset=Tiles(), dataset_key="tiles", cache_dir=tmp_path / str(run), show_progress=False)
        states.append(TimmClassifier(width=4, epochs=3, batch_size=4, lr=0.02).load(ctx).module.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
