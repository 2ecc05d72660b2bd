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


def test_a_mask_that_keeps_all_reads_the_clean_logits_and_one_that_keeps_none_is_one_row_per_shared_fill(tiny_unet, tiny_images):
    with torch.no_grad():
        clean = tiny_unet(tiny_images)
    keep = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(1)) > 0.5
    keep[0] = True  # image 0: nothing removed
    keep[1] = False  # image 1: everything removed
    empty = torch.zeros_like(keep)  # every image: everything removed
    calls = []

    def forward(x):
        calls.append(x.shape[0])
        with torch.no_grad():
            return tiny_unet(x)

    for fill, forwarded in ((torch.zeros_like(tiny_images), 2), (fill_values(tiny_images, "blur"), 4)):
        batch = PerturbationBatch(tiny_images, fill, clean_logits=clean)
        batch.add("some", keep)
        batch.add("none", empty)
        # zero fill: image 2's mask, and one all-fill input for every image; blur: the fill differs per image
        assert batch.requested == 6 and batch.unique == forwarded
        calls.clear()
        batch.run(forward, chunk_size=8)
        assert sum(calls) == forwarded
        with torch.no_grad():
            for key, m in (("some", keep), ("none", empty)):
                expected = torch.cat([tiny_unet(perturb(tiny_images[i : i + 1], m[i : i + 1], fill[i : i + 1])) for i in range(3)])
                assert torch.allclose(batch.result(key), expected, atol=1e-5)
        assert torch.equal(batch.result("some")[0], clean[0])
