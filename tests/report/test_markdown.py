"""The notes under a ranking: a saturated ranking, the empty mask's value beside an mIoU."""

import pandas as pd

from xaibench.report.markdown import reference_line, saturation


def test_a_ranking_at_a_bound_is_flagged_saturated():
    assert "saturated: 3 of 4" in saturation(pd.Series([-0.84, -0.84, -0.84, -0.5]), "lower")
    assert "saturated: 6 of 8" in saturation(pd.Series([-0.9209, -0.9209, -0.9208, -0.9206, -0.9201, -0.9209, -0.903, -0.88]), "lower")
    assert saturation(pd.Series([-0.84, -0.80, -0.7, -0.5]), "lower") == ""
    assert saturation(pd.Series([0.0242, 0.0255, 0.0266, 0.028]), "lower") == ""  # small values, apart by more than 0.001


def test_the_reference_line_names_the_empty_masks_value_per_model_and_only_for_known_pairs():
    row = pd.Series({"mean": 0.47, "ci_low": 0.46, "ci_high": 0.48})
    one = reference_line({("m", "pooled_miou"): row}, "pooled_miou", ["m", "m"])
    assert "The empty mask (no object anywhere) scores 0.4700 [0.4600, 0.4800]" in one and "(m)" not in one
    same = reference_line({("a", "pooled_miou"): row, ("b", "pooled_miou"): row}, "pooled_miou", ["a", "b"])
    assert same == one  # the same images, the same value: said once
    other = pd.Series({"mean": 0.5, "ci_low": 0.49, "ci_high": 0.51})
    two = reference_line({("a", "pooled_miou"): row, ("b", "pooled_miou"): other}, "pooled_miou", ["a", "b"])
    assert "0.4700 [0.4600, 0.4800] (a)" in two and "0.5000 [0.4900, 0.5100] (b)" in two
    assert reference_line({("m", "pooled_miou"): row}, "localization_iou", ["m"]) == ""
    assert reference_line(None, "pooled_miou", ["m"]) == ""
