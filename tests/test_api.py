"""xaibench.explain's errors for what a notebook user gets wrong."""

import pytest

import xaibench
from xaibench.errors import UserError


def test_a_mistyped_method_parameter_is_a_user_error_that_lists_the_allowed_keys(tiny_unet, tiny_images):
    with pytest.raises(UserError, match=r"method_params\['score_cam'\]: unknown key 'baselin'.*allowed keys: .*baseline"):
        xaibench.explain(tiny_unet, tiny_images, "score_cam", "decoder.blocks.2", method_params={"score_cam": {"baselin": True}})
    with pytest.raises(UserError, match="Did you mean 'grad_cam'"):
        xaibench.explain(tiny_unet, tiny_images, "score_cam", "decoder.blocks.2", method_params={"gradcam": {}})
