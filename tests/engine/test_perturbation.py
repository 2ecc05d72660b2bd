import torch

from xaibench.engine.perturbation import PerturbationBatch, fill_values, keep_mask, perturb


def test_modes_keep_the_right_pixels():
    binary = torch.tensor([[[True, False], [False, False]]])
    region = torch.tensor([[[0.0, 0.0], [0.0, 1.0]]])
    assert keep_mask("background_only", binary, region).tolist() == [[[False, True], [True, True]]]
    assert keep_mask("highlighted_only", binary, region).tolist() == [[[True, False], [False, False]]]
    assert keep_mask("highlighted_plus_target", binary, region).tolist() == [[[True, False], [False, True]]]


def test_fills():
    x = torch.rand(2, 3, 16, 16)
    assert fill_values(x, "zero").abs().sum() == 0
    mean = torch.tensor([0.1, 0.2, 0.3])
    assert torch.allclose(fill_values(x, "mean", mean)[1, :, 5, 5], mean)
    blur = fill_values(x, "blur")
    assert blur.shape == x.shape and blur.std() < x.std()
    keep = torch.zeros(2, 16, 16, dtype=torch.bool)
    keep[:, :8] = True
    p = perturb(x, keep, torch.zeros_like(x))
    assert torch.equal(p[:, :, :8], x[:, :, :8]) and p[:, :, 8:].abs().sum() == 0


def test_batched_equals_one_forward_per_input_and_duplicates_run_once(tiny_unet, tiny_images):
    fill = torch.zeros_like(tiny_images)
    batch = PerturbationBatch(tiny_images, fill)
    masks = {}
    g = torch.Generator().manual_seed(0)
    for k in range(4):
        masks[k] = torch.rand(3, 32, 32, generator=g) > 0.5
        batch.add(k, masks[k])
    batch.add("again", masks[2])  # identical perturbed inputs
    assert batch.requested == 15 and batch.unique == 12
    calls = []

    def forward(x):
        calls.append(x.shape[0])
        with torch.no_grad():
            return tiny_unet(x)

    batch.run(forward, chunk_size=5)
    assert calls == [5, 5, 2]
    for k, m in masks.items():
        with torch.no_grad():
            one_by_one = torch.cat([tiny_unet(perturb(tiny_images[i : i + 1], m[i : i + 1], fill[i : i + 1])) for i in range(3)])
        assert torch.allclose(batch.result(k), one_by_one, atol=1e-5)
    assert torch.equal(batch.result("again"), batch.result(2))
