import pytest
import torch

from xaibench.engine.targets import TargetSpec, predicted_classes, probabilities, resolve
from xaibench.errors import UserError


def test_binary_segmentation_targets_the_predicted_mask():
    logits = torch.tensor([[[[2.0, -1.0], [-3.0, 4.0]]]])
    t = resolve(None, logits)
    assert t.region.tolist() == [[[1.0, 0.0], [0.0, 1.0]]] and t.channel.tolist() == [0] and t.class_ids.tolist() == [1]
    assert t.score(logits).tolist() == [6.0]


def test_ground_truth_and_class_targets_for_multiclass():
    logits = torch.zeros(1, 3, 2, 2)
    logits[0, 2, 0, 0] = 5.0
    gt = torch.tensor([[[1, 1], [0, 2]]])
    by_gt = resolve(TargetSpec(region="ground_truth", class_id=1), logits, gt)
    assert by_gt.region.tolist() == [[[1.0, 1.0], [0.0, 0.0]]] and by_gt.channel.tolist() == [1]
    by_class = resolve(2, logits)
    assert by_class.region.tolist() == [[[1.0, 0.0], [0.0, 0.0]]] and by_class.score(logits).tolist() == [5.0]
    with pytest.raises(UserError, match="out of range"):
        resolve(3, logits)
    with pytest.raises(UserError, match="needs ground-truth masks"):
        resolve(TargetSpec(region="ground_truth"), logits)
    with pytest.raises(UserError, match="not one of"):
        TargetSpec(region="everything")


def test_classifier_targets_and_probabilities():
    logits = torch.tensor([[0.1, 3.0, -1.0], [2.0, 0.0, 0.0]])
    t = resolve(None, logits)
    assert t.class_ids.tolist() == [1, 0] and t.region is None
    assert torch.allclose(t.score(logits), torch.tensor([3.0, 2.0]))
    assert torch.allclose(probabilities(logits).sum(1), torch.ones(2))
    assert predicted_classes(torch.tensor([[[[0.5]]]])).tolist() == [[[1]]]
