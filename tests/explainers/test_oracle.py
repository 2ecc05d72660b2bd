"""Every method pytorch-grad-cam 1.5.7 also has gives the same maps (to 1e-5) on a small smp U-Net."""

import numpy as np
import pytest
import torch

pgc = pytest.importorskip("pytorch_grad_cam")
from pytorch_grad_cam.utils.model_targets import SemanticSegmentationTarget  # noqa: E402
from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection  # noqa: E402

import xaibench  # noqa: E402
from tests.conftest import perturbed_copy  # noqa: E402
from xaibench.engine.heatmaps import normalize  # noqa: E402
from xaibench.explainers.eigen_cam import first_component_projection  # noqa: E402

ORACLE = {
    "grad_cam": pgc.GradCAM,
    "grad_cam_pp": pgc.GradCAMPlusPlus,
    "x_grad_cam": pgc.XGradCAM,
    "hires_cam": pgc.HiResCAM,
    "layer_cam": pgc.LayerCAM,
    "score_cam": pgc.ScoreCAM,
}
LAYERS = ["decoder.blocks.2", "decoder.blocks.1"]


@pytest.fixture(scope="module")
def trained_like(tiny_unet):
    # pytorch-grad-cam's backward leaves parameter gradients on the model it gets: a copy
    return perturbed_copy(tiny_unet)


@pytest.fixture(scope="module")
def ours(trained_like, tiny_images):
    return xaibench.explain(trained_like, tiny_images, list(ORACLE) + ["eigen_cam"], LAYERS)


def _oracle(cls, model, images, layer_path):
    with torch.no_grad():
        pred = (model(images)[:, 0] > 0).float().numpy()
    layer = dict(model.named_modules())[layer_path]
    targets = [SemanticSegmentationTarget(0, pred[i]) for i in range(len(images))]
    with cls(model=model, target_layers=[layer]) as cam:
        if hasattr(cam, "batch_size"):
            cam.batch_size = 16
        return cam(input_tensor=images, targets=targets)


@pytest.mark.parametrize("method", list(ORACLE))
@pytest.mark.parametrize("layer", LAYERS)
def test_same_maps_as_pytorch_grad_cam(method, layer, ours, trained_like, tiny_images):
    ref = _oracle(ORACLE[method], trained_like, tiny_images, layer)
    got = ours[(method, layer)].numpy()
    assert got.shape == ref.shape
    assert np.abs(got - ref).max() < 1e-5
    assert got.max() > 0.99  # a real map, not all zeros


@pytest.mark.parametrize("layer", LAYERS)
def test_eigen_cam_matches_up_to_sign(layer, ours, trained_like, tiny_images):
    store = {}
    h = dict(trained_like.named_modules())[layer].register_forward_hook(lambda m, i, o: store.setdefault("a", o.detach()))
    with torch.no_grad():
        trained_like(tiny_images)
    h.remove()
    act = store["a"]
    ref = torch.from_numpy(get_2d_projection(act.numpy().copy()))
    mine = first_component_projection(act)
    for r, m_ in zip(ref, mine):
        assert min((r - m_).abs().max(), (r + m_).abs().max()) < 1e-4 * max(1.0, r.abs().max())
    ref_maps = _oracle(pgc.EigenCAM, trained_like, tiny_images, layer)
    flipped = normalize(-mine, tiny_images.shape[-2:]).numpy()
    got = ours[("eigen_cam", layer)].numpy()
    for i in range(len(got)):
        assert min(np.abs(got[i] - ref_maps[i]).max(), np.abs(flipped[i] - ref_maps[i]).max()) < 1e-5


def test_eigen_sign_follows_the_mean_activation():
    a = torch.zeros(1, 2, 4, 4)
    a[0, :, :2, :2] = 5.0  # strongly active top-left
    p = first_component_projection(a)
    assert p[0, 0, 0] > 0 > p[0, 3, 3]
