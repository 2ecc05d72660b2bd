"""ECSPLAIN training: the CAM loss moves the CAM towards the masks; train-once caching; checkpoints."""

from __future__ import annotations

import pytest
import torch
from xaibench_ecsplain.dataset import InsarMovingAreas
from xaibench_ecsplain.model import Ecsplain

from xaibench.errors import UserError
from xaibench.models.training import LoadContext


def _cam_error(model, samples):
    """MSE of the fused CAM against the masks (all tiles) and its IoU at 0.5 (tiles with a mask)."""
    x = torch.stack([s.image for s in samples])
    mask = torch.stack([s.mask for s in samples]).float()
    with torch.no_grad():
        cam = model.fused_cam(x)[:, 0]
    mse = float((cam - mask).pow(2).mean())
    b, m = cam >= 0.5, mask > 0
    iou = (b & m).flatten(1).sum(1) / (b | m).flatten(1).sum(1).clamp_min(1)
    return mse, float(iou[m.flatten(1).any(1)].mean())


def _ctx(dataset, tmp_path):
    return LoadContext(dataset=dataset, dataset_key="tiny-insar", cache_dir=tmp_path, show_progress=False)


def test_cam_loss_moves_the_cam_towards_the_mask(tmp_path):
    data = InsarMovingAreas(size=32, n_train=12, n_test=0, positive_fraction=0.75, seed=11)
    tiles = list(data.split("train"))
    common = dict(cam_type="grad_cam", width=8, cam_layers=["c1", "conv2"], nb_epochs=30, batch_size=6, lr=3e-3, seed=0, augment=False)

    untrained = Ecsplain(**common).build(2).eval()
    constrained = Ecsplain(wSegm=1.0, segLoss="BCE", **common).load(_ctx(data, tmp_path)).module
    classifier_only = Ecsplain(wSegm=0.0, **common).load(_ctx(data, tmp_path)).module

    mse0, iou0 = _cam_error(untrained, tiles)
    mse1, iou1 = _cam_error(constrained, tiles)
    mse_cls, iou_cls = _cam_error(classifier_only, tiles)
    # same tiles, same initial weights (measured: MSE 0.03 vs 0.14 / 0.15, IoU 0.54 vs 0.08 / 0.04)
    assert mse1 < 0.5 * mse0 and mse1 < 0.5 * mse_cls, (mse1, mse0, mse_cls)
    assert iou1 > 0.3 and iou1 > 2 * max(iou0, iou_cls), (iou1, iou0, iou_cls)


def test_load_trains_once_and_caches_by_config(tmp_path, tiny_insar):
    plugin = Ecsplain(cam_type="layer_cam", width=4, nb_epochs=1, batch_size=4)
    first = plugin.load(_ctx(tiny_insar, tmp_path))
    assert first.task == "classifier"
    assert plugin.train_seconds > 0
    assert set(first.layers) >= {"c1", "conv2", "conv3", "conv4", "conv5", "layer4", "cam"}
    assert first.module(torch.stack([s.image for s in tiny_insar.split("test")])).shape == (4, 1)
    cached = list((tmp_path / "models").glob("ecsplain-*.pt"))
    assert len(cached) == 1

    again = Ecsplain(cam_type="layer_cam", width=4, nb_epochs=1, batch_size=4)
    second = again.load(_ctx(tiny_insar, tmp_path))
    assert again.train_seconds == 0.0 and second.identity == first.identity

    other = Ecsplain(cam_type="layer_cam", width=4, nb_epochs=1, batch_size=4, wSegm=0.5)
    other.load(_ctx(tiny_insar, tmp_path))
    assert len(list((tmp_path / "models").glob("ecsplain-*.pt"))) == 2

    # a checkpoint (the wrapper's state dict, or the bare timm ResNet's) loads instead of training
    path = tmp_path / "weights.pt"
    torch.save(first.module.net.state_dict(), path)
    from_ckpt = Ecsplain(cam_type="layer_cam", width=4, checkpoint=str(path)).load(_ctx(tiny_insar, tmp_path / "other"))
    assert from_ckpt.identity == first.identity
    with pytest.raises(UserError, match="does not exist"):
        Ecsplain(width=4, checkpoint=str(tmp_path / "missing.pt")).load(_ctx(tiny_insar, tmp_path))


def test_score_cam_and_bce_training_step_runs(tmp_path, tiny_insar):
    plugin = Ecsplain(cam_type="score_cam", width=4, nb_epochs=1, batch_size=4, segLoss="BCE", score_cam_fraction=0.25)
    loaded = plugin.load(_ctx(tiny_insar, tmp_path))
    x = torch.stack([s.image for s in tiny_insar.split("test")])
    cam = loaded.module.fused_cam(x)
    assert cam.shape == (4, 1, 32, 32) and torch.isfinite(cam).all()


def test_bad_parameters_are_user_errors():
    for kwargs in (
        {"cam_type": "eigen_cam"},
        {"model_type": "resnet34"},
        {"segLoss": "L1"},
        {"nb_epochs": 0},
        {"score_cam_fraction": 0.0},
        {"cam_layers": []},
        {"cam_layers": ["cam"]},
    ):
        with pytest.raises(UserError):
            Ecsplain(**kwargs)
    with pytest.raises(UserError, match="cam_layers"):
        Ecsplain(cam_layers=["layer9"]).build(2)
