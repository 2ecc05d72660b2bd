"""``xaibench layers CONFIG``: a model's layers, aliases, output shapes, channels and tails."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
import torch
from PIL import Image

from xaibench.cli import main

CONFIG = """
[benchmark]
name = "mine"

[dataset]
name = "image_folder"
root = "{root}"
test_fraction = 0.5
val_fraction = 0.0

[model]
{model}

[grid]
explainers = ["grad_cam"]
layers = [{layers}]
thresholds = [0.5]
perturbations = ["background_only"]
metrics = ["confidence"]
"""


def folder(root, n: int = 4, size: int = 64):
    rng = np.random.default_rng(0)
    for k in range(n):
        (root / "images").mkdir(parents=True, exist_ok=True)
        (root / "masks").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (size, size, 3)).astype(np.uint8)).save(root / "images" / f"t{k}.png")
        m = np.zeros((size, size), np.uint8)
        m[8:24, 8 + k : 24 + k] = 255
        Image.fromarray(m).save(root / "masks" / f"t{k}.png")
    return root


def config(tmp_path, model: str, layers: str = '"decoder1"'):
    path = tmp_path / "mine.toml"
    path.write_text(textwrap.dedent(CONFIG.format(root=folder(tmp_path / "data"), model=textwrap.dedent(model), layers=layers)))
    return path


UNET = """name = "torch_model"
arch = "Unet"
encoder = "resnet18"
options = {encoder_depth = 3, decoder_channels = [16, 8, 4]}
random_weights = true"""


def rows(out: str) -> dict[str, list[str]]:
    return {line.split()[0]: line.split() for line in out.splitlines()[2:] if line.startswith("  ")}


def test_layers_lists_paths_aliases_shapes_channels_and_tails(tmp_path, capsys):
    assert main(["layers", str(config(tmp_path, UNET))]) == 0
    out = capsys.readouterr().out
    assert out.startswith("torch_model (torch_model), binary, on an image of 3x64x64")
    table = rows(out)
    assert table["decoder.blocks.2"] == ["decoder.blocks.2", "decoder1", "UnetDecoderBlock", "1x4x64x64", "4", "yes"]
    assert table["decoder.blocks.1"][:5] == ["decoder.blocks.1", "decoder2", "UnetDecoderBlock", "1x8x32x32", "8"]
    assert table["encoder.layer2"][1:] == ["Sequential", "1x128x8x8", "128", "replay"]  # no tail of its own: one by replay
    assert table["output"][-2:] == ["1x1x64x64", "1"]
    assert "encoder" not in table  # a list of features is no layer to explain (shown with --all)
    assert main(["layers", str(config(tmp_path, UNET)), "--all"]) == 0
    assert rows(capsys.readouterr().out)["encoder"][1:] == ["ResNetEncoder", "-", "-"]
    assert main(["layers", str(config(tmp_path, UNET)), "--depth", "2"]) == 0
    shallow = rows(capsys.readouterr().out)
    assert "encoder.layer2" in shallow and "encoder.layer2.0" not in shallow and "decoder.blocks.2" in shallow  # aliases always


def test_layers_errors(tmp_path, capsys):
    path = config(tmp_path, UNET)
    assert main(["layers", str(path), "--model", "nope"]) == 2
    assert "unknown model label 'nope'" in capsys.readouterr().err
    classifier = config(tmp_path, 'name = "timm_classifier"\nwidth = 4')  # a plugin without structure()
    assert main(["layers", str(classifier)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot be built without training" in err and "torch_model" in err
    smp_unet = config(tmp_path, 'name = "smp_unet"\nencoder_depth = 3\ndecoder_channels = [8, 4, 4]')
    assert main(["layers", str(smp_unet)]) == 0  # smp_unet builds its network without training
    assert "decoder1" in capsys.readouterr().out


def test_layers_of_a_torchscript_model_have_no_shapes_and_say_why(tmp_path, capsys):
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, 1, 1))
    torch.jit.save(torch.jit.script(net), str(tmp_path / "net.ts"))
    path = config(tmp_path, f'name = "torch_model"\ntorchscript = "{tmp_path / "net.ts"}"', layers='"output"')
    assert main(["layers", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"runs code: model.torchscript '{tmp_path / 'net.ts'}'")
    assert rows(out.split("\n", 1)[1])["0"] == ["0", "Conv2d", "-", "-"] and "compiled code that no hook reaches" in out


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XAIBENCH_CACHE", str(tmp_path / "cache"))
