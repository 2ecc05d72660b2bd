"""Segmentation baselines: they build, map [B, C, H, W] to [B, 1, H, W], train and cache."""

from __future__ import annotations

import pytest
import torch
from xaibench_ecsplain.baselines import BASELINES, FCN, DeepLabV3, SepUNet, UNet, segmentation_step

from xaibench.plugin import LoadContext, LoadedModel, UserError
from xaibench.testing import check_tail

TINY = {
    "unet": {"channels": [4, 8, 16]},
    "resunet": {"channels": [4, 8, 16]},
    "sepunet": {"channels": [4, 8, 16]},
    "fcn": {"width": 4},
    "deeplabv3": {"width": 4, "aspp_channels": 8},
}


@pytest.mark.parametrize("cls", BASELINES, ids=lambda c: c.name)
def test_baseline_builds_and_outputs_one_logit_map(cls):
    net = cls(**TINY[cls.name]).build(2).eval()
    with torch.no_grad():
        out = net(torch.rand(3, 2, 32, 32))
    assert out.shape == (3, 1, 32, 32)
    assert torch.isfinite(out).all()


def test_default_sizes_are_small():
    params = {cls.name: sum(p.numel() for p in cls().build(2).parameters()) for cls in BASELINES}
    assert all(n < 1_500_000 for n in params.values()), params


@pytest.mark.parametrize("cls", [UNet, SepUNet, FCN, DeepLabV3], ids=lambda c: c.name)
def test_baseline_trains_on_first_use_and_loads_from_cache(cls, tiny_insar, tmp_path):
    ctx = LoadContext(dataset=tiny_insar, dataset_key="tiny", cache_dir=tmp_path, show_progress=False)
    loaded = cls(nb_epochs=1, batch_size=4, **TINY[cls.name]).load(ctx)
    assert loaded.task == "binary"
    assert all(loaded.resolve_layer(a) for a in loaded.layers)
    assert loaded.resolve_layer("output") == ""
    assert len(list((tmp_path / "models").glob(f"{cls.name}-*.pt"))) == 1
    again = cls(nb_epochs=1, batch_size=4, **TINY[cls.name]).load(ctx)
    assert again.identity == loaded.identity


def test_a_batch_of_one_trains_despite_batchnorm(tiny_insar):
    net = DeepLabV3(**TINY["deeplabv3"]).build(2).train()
    opt = torch.optim.Adam(net.parameters())
    out = segmentation_step(net, [tiny_insar.split("train")[0]], opt)
    assert out["loss"] > 0


def test_bad_parameters_are_user_errors():
    for cls, kwargs in ((UNet, {"channels": [4, 8]}), (FCN, {"output_stride": 4}), (DeepLabV3, {"atrous_rates": []}), (UNet, {"nb_epochs": 0})):
        with pytest.raises(UserError):
            cls(**kwargs)


@pytest.mark.parametrize("cls", BASELINES, ids=lambda c: c.name)
def test_every_baseline_segmenter_layer_has_a_tail(cls):
    torch.manual_seed(0)
    model = LoadedModel(cls(**TINY[cls.name]).build(2).eval(), "binary", layers=dict(cls.layers))
    images = torch.rand(3, 2, 32, 32)
    for alias in cls.layers:
        check_tail(model, alias, images)
