"""What validate checks of a model: the code a config runs, the grid's layers, and the grid's
cost per image from the layers' channel counts (xaibench/runs/cost.py)."""

from __future__ import annotations

import textwrap

import pytest

from tests.cli.test_layers import UNET, config
from xaibench.cli import main
from xaibench.config.parse import load_config
from xaibench.models.training import LoadContext
from xaibench.runs import cost
from xaibench.runs.runner import plan


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XAIBENCH_CACHE", str(tmp_path / "cache"))


def grid(path, explainers: str, layers: str):
    text = path.read_text()
    text = text.replace('explainers = ["grad_cam"]', f"explainers = [{explainers}]").replace('layers = ["decoder1"]', f"layers = [{layers}]")
    path.write_text(text.replace('thresholds = [0.5]', 'thresholds = [0.3, 0.5]'))
    return path


def test_the_estimate_counts_a_forward_per_channel_and_tail_forwards_where_the_model_splits(tmp_path):
    path = grid(config(tmp_path, UNET), '"grad_cam", "score_cam", "ablation_cam"', '"decoder1", "encoder.layer2"')
    p = plan(load_config(path))
    model = p.models[0].plugin.structure(LoadContext(p.dataset, "k"))
    paths = cost.resolve_layers(model, p.models[0].layers, "where", str(path))
    image = p.dataset.split("test")[0].image
    c = cost.estimate(p.models[0], model, paths, image, chunk_size=8)
    rows = {what: n for what, n, _ in c.parts}
    assert rows == {
        "shared forward": 1,
        "backward": 2,
        "score_cam@decoder1": 4,  # decoder1 of this U-Net has 4 channels
        "ablation_cam@decoder1 (tail)": 4,
        "score_cam@encoder.layer2": 128,
        "ablation_cam@encoder.layer2 (tail)": 128,  # derived by replaying the forward (tests/engine/test_replay.py)
        "perturbed inputs": 3 * 2 * 2,  # explainers x layers x thresholds, one perturbation
    }
    assert c.per_image_s == pytest.approx(sum(s for _, _, s in c.parts)) and all(s > 0 for _, _, s in c.parts)
    per = {what: s / n for what, n, s in c.parts}
    assert per["ablation_cam@decoder1 (tail)"] < per["score_cam@decoder1"]  # the tail is only the head: cheaper than a forward


def test_validate_rejects_a_wrong_layer_with_the_closest_names(tmp_path, capsys):
    path = config(tmp_path, UNET, layers='"decoder1", "decoder.blocks.7"')
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "model 'torch_model': layer 'decoder.blocks.7' is not a module of this model" in err
    assert "Did you mean 'decoder.blocks.2' or 'decoder.blocks.1'" in err and f"`xaibench layers {path}` lists all" in err
    path = config(tmp_path, UNET, layers='"mean(decoder1, decodr2)"')
    assert main(["validate", str(path)]) == 2
    assert "layer 'decodr2' is not a module" in capsys.readouterr().err


def test_validate_names_the_code_first_and_prints_the_estimate(tmp_path, capsys, monkeypatch):
    (tmp_path / "own_nets.py").write_text(textwrap.dedent("""
        from torch import nn
        def build(classes=1):
            return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, classes, 1))
        """))
    monkeypatch.syspath_prepend(str(tmp_path))
    path = grid(config(tmp_path, 'name = "torch_model"\nfactory = "own_nets:build"', '"1"'), '"score_cam"', '"1"')
    assert main(["validate", str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"  torch_model: runs code: model.factory 'own_nets:build': imports {tmp_path / 'own_nets.py'} and calls build(...)"
    assert out[1].startswith("ok: ") and "(forwards per image: score_cam@1 6, perturbed inputs 2)" in out[-1] and "per image on cpu" in out[-1] and "for 2 images" in out[-1]
    monkeypatch.setattr(cost, "LONG_S", 0.0)
    assert main(["validate", str(path)]) == 0
    err = capsys.readouterr().err
    assert "warning: " in err and "this grid will take about" in err and "most of it is score_cam@1 (6 forwards per image, one per channel)" in err


def test_validate_of_a_model_plugin_that_cannot_be_built_untrained_says_so(tmp_path, capsys):
    path = config(tmp_path, 'name = "timm_classifier"\nwidth = 4')
    assert main(["validate", str(path)]) == 0
    assert "layers are checked when the model loads (model plugin 'timm_classifier' is not built without training)" in capsys.readouterr().out


def test_validate_checks_smp_unet_layers_without_training(tmp_path, capsys):
    path = grid(config(tmp_path, 'name = "smp_unet"\nencoder_depth = 3\ndecoder_channels = [8, 4, 4]'), '"grad_cam"', '"decoder9"')
    assert main(["validate", str(path)]) == 2
    assert "decoder9" in capsys.readouterr().err
