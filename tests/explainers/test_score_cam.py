"""Score-CAM's masking value, checked against a hand computation with a linear score."""

import torch

from xaibench.explainers.base import ExplainContext
from xaibench.explainers.score_cam import ScoreCAM


def _ctx(images, activations, seen):
    def masked_scores(inputs, idx):  # a linear "model": the score is the sum of the input
        seen.append(inputs.clone())
        return inputs.flatten(1).sum(1)

    return ExplainContext(
        images=images, layer="x", activations=activations, gradients=None, target=None,
        logits=None, image_keys=["a"], masked_scores=masked_scores, tail_scores=None, explain=None,
    )


def test_masked_pixels_move_towards_fill_and_the_baseline_is_the_fill_image():
    images = torch.full((1, 1, 2, 2), 0.9)
    act = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 1.0]]]])  # two channels, one hot pixel each
    seen = []
    raw = ScoreCAM(baseline=True, fill=0.5).explain(_ctx(images, act, seen))
    masks, blank = seen
    # channel 0 keeps the top-left pixel, the other three move to 0.5
    assert torch.allclose(masks[0, 0], torch.tensor([[0.9, 0.5], [0.5, 0.5]]))
    assert torch.allclose(blank, torch.full_like(images, 0.5))
    # weights: score(masked) - score(blank) = 0.4 for both channels
    assert torch.allclose(raw, 0.4 * act.sum(1), atol=1e-6)


def test_fill_zero_is_the_papers_product():
    images = torch.rand(1, 3, 4, 4)
    act = torch.rand(1, 2, 4, 4)
    seen = []
    ScoreCAM().explain(_ctx(images, act, seen))
    h = act[0] - act[0].flatten(1).min(1).values[:, None, None]
    h = h / (h.flatten(1).max(1).values[:, None, None] + 1e-8)
    assert torch.allclose(seen[0], images * h[:, None], atol=1e-6)
