import torch

import xaibench
from xaibench.engine.sanity import randomized_copy, rank_correlation
from xaibench.models.base import LoadedModel


def test_randomised_copy_changes_only_the_named_modules_of_a_copy(tiny_unet):
    before = {k: v.clone() for k, v in tiny_unet.state_dict().items()}
    m = LoadedModel(tiny_unet, "binary", randomizable=("decoder", "segmentation_head"))
    r = randomized_copy(m, seed=0)
    after = tiny_unet.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the original is untouched
    rs = r.module.state_dict()
    assert all(torch.equal(rs[k], before[k]) for k in before if k.startswith("encoder."))
    assert any(not torch.equal(rs[k], before[k]) for k in before if k.startswith("decoder.") and k.endswith("weight"))


def test_rank_correlation():
    a = torch.rand(2, 8, 8)
    assert torch.allclose(rank_correlation(a, a * 2 + 1), torch.ones(2))
    assert torch.allclose(rank_correlation(a, -a), -torch.ones(2))
    assert torch.isnan(rank_correlation(torch.zeros(1, 4, 4), torch.rand(1, 4, 4)))[0]


def test_gradient_maps_change_when_the_decoder_is_randomised(tiny_unet, tiny_images):
    m = LoadedModel(tiny_unet, "binary", randomizable=("decoder", "segmentation_head"))
    r = randomized_copy(m, seed=1)
    a = xaibench.explain(m, tiny_images, "grad_cam", "decoder.blocks.1")
    b = xaibench.explain(r, tiny_images, "grad_cam", "decoder.blocks.1", target=(tiny_unet(tiny_images)[:, 0] > 0).float().detach())
    assert not torch.allclose(a, b)
