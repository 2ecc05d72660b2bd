"""A resumed run refuses rows of other weights: a checkpoint retrained into the same file."""

import pytest
import torch

import xaibench
from tests.conftest import tiny_config_with
from xaibench.errors import UserError
from xaibench.models.own_model import TorchModel
from xaibench.runs import model_files

GRID = """
[grid]
explainers = ["center_prior"]
layers = ["decoder1"]
thresholds = [0.5]
metrics = ["localization_iou"]
"""


def _save_weights(tiny_unet, path, scale: float = 0.0):
    state = {k: v + scale * torch.ones_like(v) if v.is_floating_point() else v for k, v in tiny_unet.state_dict().items()}
    torch.save(state, path)


def test_a_run_resumed_after_the_checkpoint_changed_is_refused_and_fresh_scores_the_new_weights(tmp_path, tiny_unet, monkeypatch):
    monkeypatch.setenv("XAIBENCH_CACHE", str(tmp_path / "cache"))
    weights = tmp_path / "w.pt"
    _save_weights(tiny_unet, weights)
    cfg = tmp_path / "c.toml"
    cfg.write_text(tiny_config_with("ckpt", GRID).replace("epochs = 1\n", f"epochs = 1\ncheckpoint = {str(weights)!r}\n"))
    out = tmp_path / "out"
    first = xaibench.run(cfg, out, show_progress=False)
    assert xaibench.run(cfg, out, show_progress=False).equals(first)  # unchanged: resumes, nothing to do
    _save_weights(tiny_unet, weights, scale=0.01)  # retrained into the same file
    with pytest.raises(UserError, match=r"model 'smp_unet': '.*w.pt' has changed since the results in .* were made.*--fresh"):
        xaibench.run(cfg, out, show_progress=False)
    fresh = xaibench.run(cfg, out, show_progress=False, fresh=True)
    iou = lambda df: df.loc[df.metric == "model_pooled_iou", "value"].tolist()  # noqa: E731
    assert iou(fresh) != iou(first)  # the new weights' rows, not the old ones


def test_the_files_of_a_torch_model_are_its_checkpoint_its_torchscript_and_its_factorys_source(tmp_path, monkeypatch):
    (tmp_path / "nets.py").write_text("def build():\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    factory = TorchModel(factory="nets:build", checkpoint=str(tmp_path / "c.pt"))
    assert factory.weight_files() == [str(tmp_path / "c.pt"), str(tmp_path / "nets.py")]
    prints = model_files.fingerprint(factory)
    assert prints[str(tmp_path / "c.pt")] == "missing" and len(prints[str(tmp_path / "nets.py")]) == 16
    assert model_files.changed({"m": prints}, {"m": dict(prints)}) is None
    assert model_files.changed({"m": prints}, {"m": {**prints, str(tmp_path / "c.pt"): "0" * 16}}) == ("m", str(tmp_path / "c.pt"))
    assert model_files.changed({"other": prints}, {"m": {}}) is None  # a new model has no rows to mix with
