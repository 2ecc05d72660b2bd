"""The centre-prior baseline: a centred Gaussian, the same for every image, one cell at 'input'."""

import pytest
import torch

import xaibench
from xaibench.explainers.center_prior import CenterPrior
from xaibench.testing import TinyDataset, check_explainer


def _maps(images, **params):
    return xaibench.explain(torch.nn.Conv2d(3, 1, 1), images, "center_prior", "input", method_params={"center_prior": params})


def test_a_centred_gaussian_in_0_1_the_same_for_every_image():
    images = torch.rand(3, 3, 33, 21)
    maps = _maps(images)
    assert maps.shape == (3, 33, 21) and maps.min() >= 0 and maps.max() <= 1
    assert torch.equal(maps[0], maps[1]) and torch.equal(maps[0], maps[2])  # nothing of the image
    assert torch.equal(maps, _maps(torch.rand(3, 3, 33, 21)))  # deterministic
    assert int(maps[0].argmax()) == 16 * 21 + 10  # the peak at the centre pixel
    assert torch.allclose(maps[0], maps[0].flip(0)) and torch.allclose(maps[0], maps[0].flip(1))  # symmetric


def test_sigma_sets_the_width():
    images = torch.rand(1, 3, 32, 32)
    narrow, wide = _maps(images, sigma=0.1), _maps(images, sigma=0.5)
    assert (narrow[0] > 0.5).sum() < (wide[0] > 0.5).sum()
    with pytest.raises(ValueError, match="sigma"):
        CenterPrior(sigma=0)


def test_it_passes_the_explainer_contract_at_layer_input():
    maps = check_explainer(CenterPrior, {"sigma": 0.3}, dataset=TinyDataset())
    assert maps.ndim == 3
    assert CenterPrior.explains == "input"
