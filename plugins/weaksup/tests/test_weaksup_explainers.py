"""cyclegan_diff: fitted per replicate on labelled training images, cached, |G(x) - x| maps."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from xaibench_weaksup import cyclegan as cg
from xaibench_weaksup.explainers import CycleGANDiff

from xaibench.plugin import FitContext, Sample, UserError
from xaibench.testing import TinyDataset, check_explainer, explainer_maps, tiny_images, tiny_unet

TINY = dict(epochs=1, batch_size=2, ngf=4, n_blocks=1, ndf=4, n_layers=2)


def test_cyclegan_diff_keeps_the_explainer_contract():
    maps = check_explainer(CycleGANDiff, TINY)  # fitted twice on a tiny dataset: the second load is cached
    assert maps.shape == (2, 32, 32) and maps.max() > 0


def test_the_generator_trains_from_label_1_to_label_0_training_images_only(tmp_path, monkeypatch):
    seen = {}

    def record(domain_a, domain_b, **kw):
        seen["a"], seen["b"], seen["kw"] = [s.image_id for s in domain_a], [s.image_id for s in domain_b], kw
        return cg.ResnetGenerator(3, 3, 4, 1)

    monkeypatch.setattr("xaibench_weaksup.explainers.train_cyclegan", record)
    ds = TinyDataset()
    e = CycleGANDiff(**TINY)
    identity = e.fit(FitContext(dataset=ds, dataset_key="fold-1", seed=7, cache_dir=tmp_path, show_progress=False))
    train = ds.split("train")
    assert seen["a"] == [s.image_id for s in train if s.label == 1] and seen["b"] == [s.image_id for s in train if s.label == 0]
    assert seen["a"] and seen["b"] and seen["kw"]["seed"] == 7
    assert isinstance(identity, str) and identity


def test_cache_file_depends_on_fold_seed_and_settings(tmp_path, monkeypatch):
    paths = []
    monkeypatch.setattr("xaibench_weaksup.explainers.train_cyclegan", lambda a, b, **kw: paths.append(kw["cache_path"]) or cg.ResnetGenerator(3, 3, 4, 1))
    ds = TinyDataset()
    for key, seed, epochs in (("f0", 0, 1), ("f1", 0, 1), ("f0", 1, 1), ("f0", 0, 2), ("f0", 0, 1)):
        CycleGANDiff(**{**TINY, "epochs": epochs}).fit(FitContext(dataset=ds, dataset_key=key, seed=seed, cache_dir=tmp_path, show_progress=False))
    assert len(set(paths[:4])) == 4 and paths[4] == paths[0]


def test_an_identity_generator_gives_an_all_zero_map():
    e = CycleGANDiff()
    e._generator = nn.Identity()
    images, _ = tiny_images()
    maps = explainer_maps(e, tiny_unet(), images, "output", fitted="identity")
    assert torch.equal(maps, torch.zeros(2, 32, 32))


def test_unlabelled_training_images_are_a_user_error(tmp_path):
    class Unlabelled(TinyDataset):
        def split(self, name):
            return [Sample(s.image, s.mask, s.image_id, None) for s in super().split(name)]

    with pytest.raises(UserError, match="image-level label"):
        CycleGANDiff(**TINY).fit(FitContext(dataset=Unlabelled(), dataset_key="k", cache_dir=tmp_path, show_progress=False))
