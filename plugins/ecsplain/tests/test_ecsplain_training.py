"""ECSPLAIN training: the CAM loss moves the CAM towards the masks; train-once caching; checkpoints."""

from __future__ import annotations

import pytest
import torch
from torchmetrics.functional.classification import binary_auroc
from xaibench_ecsplain.cams import multilayer_cam
from xaibench_ecsplain.model import ADAM, Ecsplain
from xaibench_ecsplain.synthetic import InsarMovingAreas

from xaibench.plugin import LoadContext, UserError


def _cam_error(plugin, model, samples):
    """MSE of the fused CAM against the masks, and how well it ranks mask pixels above the rest
    (AUROC over all pixels: threshold-free, so a CAM that is right but scaled low still counts)."""
    x = torch.stack([s.image for s in samples])
    mask = torch.stack([s.mask for s in samples]).float()
    cam = multilayer_cam(model, x, plugin.cam_paths(), plugin.cam_type)[0][:, 0]
    mse = float((cam - mask).pow(2).mean())
    return mse, float(binary_auroc(cam.flatten(), mask.flatten().long()))


def _ctx(dataset, tmp_path):
    return LoadContext(dataset=dataset, dataset_key="tiny-insar", cache_dir=tmp_path, show_progress=False)


def test_cam_loss_moves_the_cam_towards_the_mask(tmp_path):
    data = InsarMovingAreas(size=32, n_train=12, n_test=0, positive_fraction=0.75, seed=11)
    tiles = list(data.split("train"))
    common = dict(cam_type="grad_cam", width=8, cam_layers=["c1", "conv2"], nb_epochs=60, batch_size=6, lr=3e-3, seed=0, augment=False)

    plugin = Ecsplain(**common)
    untrained = plugin.build(2).eval()
    constrained = Ecsplain(wSegm=1.0, segLoss="BCE", **common).load(_ctx(data, tmp_path)).module
    classifier_only = Ecsplain(wSegm=0.0, **common).load(_ctx(data, tmp_path)).module

    mse0, auc0 = _cam_error(plugin, untrained, tiles)
    mse1, auc1 = _cam_error(plugin, constrained, tiles)
    mse_cls, auc_cls = _cam_error(plugin, classifier_only, tiles)
    # same tiles, same initial weights. Measured on an AVX2 CPU for training seeds 0-3: MSE
    # 0.03-0.06 vs 0.12-0.17, AUROC 0.93-0.99 vs 0.45-0.74. An IoU at a fixed 0.5 was tried
    # first and is not robust: at 30 epochs it ranged 0.0-0.54 across CPU types and seeds.
    assert mse1 < 0.6 * min(mse0, mse_cls), (mse1, mse0, mse_cls)
    assert auc1 > 0.85 and auc1 > max(auc0, auc_cls) + 0.15, (auc1, auc0, auc_cls)


def test_load_trains_once_and_caches_by_config(tmp_path, tiny_insar):
    plugin = Ecsplain(cam_type="layer_cam", width=4, nb_epochs=1, batch_size=4)
    first = plugin.load(_ctx(tiny_insar, tmp_path))
    assert first.task == "classifier"
    assert plugin.train_seconds > 0
    assert set(first.layers) >= {"c1", "conv2", "conv3", "conv4", "conv5", "layer4"}
    assert first.resolve_layer("mean(c1, conv2, conv3, conv4, conv5)") == "mean(maxpool,layer2.0.act1,layer3.0.act1,layer4.0.act1,layer4.1.act2)"
    assert first.module(torch.stack([s.image for s in tiny_insar.split("test")])).shape == (4, 1)
    cached = list((tmp_path / "models").glob("ecsplain-*.pt"))
    assert len(cached) == 1

    again = Ecsplain(cam_type="layer_cam", width=4, nb_epochs=1, batch_size=4)
    second = again.load(_ctx(tiny_insar, tmp_path))
    assert again.train_seconds == 0.0 and second.identity == first.identity

    other = Ecsplain(cam_type="layer_cam", width=4, nb_epochs=1, batch_size=4, wSegm=0.5)
    other.load(_ctx(tiny_insar, tmp_path))
    assert len(list((tmp_path / "models").glob("ecsplain-*.pt"))) == 2

    # a checkpoint (the timm ResNet's state dict, or one of the earlier wrapper, keys "net.*")
    # loads instead of training
    path, wrapped = tmp_path / "weights.pt", tmp_path / "wrapped.pt"
    torch.save(first.module.state_dict(), path)
    torch.save({f"net.{k}": v for k, v in first.module.state_dict().items()}, wrapped)
    for ckpt in (path, wrapped):
        from_ckpt = Ecsplain(cam_type="layer_cam", width=4, checkpoint=str(ckpt)).load(_ctx(tiny_insar, tmp_path / "other"))
        assert from_ckpt.identity == first.identity
    torch.save({"fc.weight": torch.zeros(1)}, tmp_path / "bad.pt")
    with pytest.raises(UserError, match="does not fit"):
        Ecsplain(width=4, checkpoint=str(tmp_path / "bad.pt")).load(_ctx(tiny_insar, tmp_path))
    with pytest.raises(UserError, match="does not exist"):
        Ecsplain(width=4, checkpoint=str(tmp_path / "missing.pt")).load(_ctx(tiny_insar, tmp_path))


def test_score_cam_and_bce_training_step_runs(tmp_path, tiny_insar):
    plugin = Ecsplain(cam_type="score_cam", width=4, nb_epochs=1, batch_size=4, segLoss="BCE", score_cam_fraction=0.25)
    loaded = plugin.load(_ctx(tiny_insar, tmp_path))
    x = torch.stack([s.image for s in tiny_insar.split("test")])
    cam, _ = multilayer_cam(loaded.module, x, plugin.cam_paths(), "score_cam")
    assert cam.shape == (4, 1, 32, 32) and torch.isfinite(cam).all()


def test_training_uses_the_authors_adam_betas(tmp_path, tiny_insar, monkeypatch):
    from xaibench.plugin import train_or_load as real

    made = []

    def spy(*args, optimizer=None, **kwargs):
        made.append(optimizer)
        return real(*args, optimizer=optimizer, **kwargs)

    monkeypatch.setattr("xaibench_ecsplain.model.train_or_load", spy)
    Ecsplain(width=4, nb_epochs=1, batch_size=4).load(_ctx(tiny_insar, tmp_path))
    assert made == [ADAM]
    opt = ADAM([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    assert opt.param_groups[0]["betas"] == (0.5, 0.999)


def test_bad_parameters_are_user_errors():
    for kwargs in (
        {"cam_type": "eigen_cam"},
        {"model_type": "resnet34"},
        {"segLoss": "L1"},
        {"nb_epochs": 0},
        {"score_cam_fraction": 0.0},
        {"cam_layers": []},
    ):
        with pytest.raises(UserError):
            Ecsplain(**kwargs)
    with pytest.raises(UserError, match="cam_layers"):
        Ecsplain(cam_layers=["layer9"]).build(2)
