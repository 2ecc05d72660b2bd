"""Per-batch work (:mod:`xaibench.runs.worker`): a model that outputs NaN on some images."""

import json
import types

import pytest
import torch
from torch import nn

from xaibench.config.parse import load_config
from xaibench.errors import UserError
from xaibench.plugin import hookimpl
from xaibench.runs.runner import run_benchmark


class _NanOnBright(nn.Module):
    """A U-Net whose logits are NaN on images whose first pixel is bright (a broken model)."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        out = self.inner(x)
        bright = (x[:, 0, 0, 0] > 0.5).view(-1, 1, 1, 1)
        return torch.where(bright, torch.full_like(out, float("nan")), out)


class _NanModel:
    name = "nan_unet"
    module = None

    def load(self, ctx):
        from xaibench.models.base import LoadedModel

        return LoadedModel(type(self).module, "binary", {"decoder1": "inner.decoder.blocks.2", "decoder2": "inner.decoder.blocks.1"})


def _config(tiny_config, tmp_path, extra=""):
    text = tiny_config.read_text()
    start, end = text.index("[model]"), text.index("[grid]")
    cfg = tmp_path / "nan.toml"
    cfg.write_text(text[:start] + '[model]\nname = "nan_unet"\n\n' + text[end:] + extra)
    return cfg


@pytest.fixture
def plugin():
    import segmentation_models_pytorch as smp

    torch.manual_seed(0)
    _NanModel.module = _NanOnBright(smp.Unet("resnet18", encoder_weights=None, encoder_depth=3, decoder_channels=[16, 8, 4], classes=1).eval())
    module = types.ModuleType("nan_plugin")
    module.register_models = hookimpl(lambda register: register(_NanModel))
    return module


def test_non_finite_outputs_blank_the_images_scores_and_are_counted_and_flagged(tiny_config, tmp_path, plugin, capsys):
    out = tmp_path / "o"
    df = run_benchmark(load_config(_config(tiny_config, tmp_path)), out, show_progress=False, extra_plugins=[plugin])
    timings = json.loads((out / "manifest.json").read_text())["timings"]
    bad = timings["non_finite_outputs[nan_unet]"]
    assert 0 < bad < df["image_id"].nunique()  # some images, not all: the test data has both
    per_image = df.groupby("image_id")["value"].apply(lambda v: v.isna().all())
    assert per_image.sum() == bad  # every score on a broken image is NaN, not an IoU drop of 0.0
    assert df[~df["image_id"].isin(per_image[per_image].index)]["value"].notna().any()
    board = (out / "leaderboard.md").read_text()
    assert f"> ⚠ model 'nan_unet' produced non-finite (NaN or inf) outputs on {bad} image(s)" in board
    captured = capsys.readouterr()
    assert "warning: model 'nan_unet' produced non-finite" in captured.out + captured.err


def test_non_finite_error_stops_the_run(tiny_config, tmp_path, plugin):
    cfg = _config(tiny_config, tmp_path)
    cfg.write_text(cfg.read_text().replace("[run]\n", '[run]\nnon_finite = "error"\n'))
    with pytest.raises(UserError, match=r"model 'nan_unet': non-finite \(NaN or inf\) outputs on image"):
        run_benchmark(load_config(cfg), tmp_path / "o", show_progress=False, extra_plugins=[plugin])
