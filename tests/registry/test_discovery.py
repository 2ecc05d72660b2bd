import types

import pytest

from xaibench.errors import UserError
from xaibench.plugin import hookimpl
from xaibench.registry.discovery import load_registry, plugin_manager


def _plugin(name, **hooks):
    mod = types.ModuleType(name)
    for k, v in hooks.items():
        setattr(mod, k, hookimpl(v))
    return mod


def test_builtins_come_from_the_xaibench_entry_points():
    reg = load_registry()
    for kind, name in [("explainers", "grad_cam"), ("metrics", "confidence"), ("datasets", "rooftops"), ("models", "smp_unet")]:
        assert reg.entry(kind, name).distribution == "xaibench"


def test_unknown_name_suggests_the_closest_and_lists_all():
    reg = load_registry()
    with pytest.raises(UserError) as e:
        reg.get("explainers", "gradcam")
    msg = str(e.value)
    assert "Did you mean 'grad_cam'" in msg and "Available:" in msg and "score_cam" in msg


def test_wildcards_expand_in_order_and_unmatched_pattern_fails():
    reg = load_registry()
    got = reg.expand("explainers", ["*grad*", "eigen_cam"])
    # a wildcard's matches come in name order; the gradient pixel attributions match '*grad*' too
    assert got == ["grad_cam", "grad_cam_pp", "gradient_shap", "guided_grad_cam", "input_x_gradient", "integrated_gradients", "x_grad_cam", "eigen_cam"]
    with pytest.raises(UserError, match="matches no explainer"):
        reg.expand("explainers", ["*nothing*"])


def test_hookimpl_matching_no_spec_fails_loudly():
    bad = _plugin("typo_plugin", register_explainer=lambda register: None)
    with pytest.raises(UserError, match="register_explainer"):
        plugin_manager([bad])


def test_same_name_from_two_plugins_names_both():
    class Dup:
        name = "grad_cam"

    dup = _plugin("dup_plugin", register_explainers=lambda register: register(Dup))
    with pytest.raises(UserError) as e:
        load_registry([dup])
    assert "xaibench.registry.builtin.explainers" in str(e.value) and "dup_plugin" in str(e.value)


def test_a_local_plugin_registers_like_a_packaged_one():
    class Mine:
        name = "mine"
        direction = "higher"
        uses_threshold = False
        perturbation = None

        def compute(self, ctx):
            return ctx.images.new_zeros(ctx.images.shape[0])

    reg = load_registry([_plugin("local_plugin", register_metrics=lambda register: register(Mine))])
    assert reg.get("metrics", "mine") is Mine
    assert reg.entry("metrics", "mine").distribution == "(local)"
    assert load_registry().names("metrics").count("mine") == 0  # no global state


def test_every_hook_is_documented():
    from xaibench.registry import hookspecs

    for name in ("register_explainers", "register_metrics", "register_datasets", "register_models"):
        assert getattr(hookspecs, name).__doc__


def test_disabled_plugins_are_skipped(monkeypatch):
    monkeypatch.setenv("XAIBENCH_DISABLE_PLUGINS", "explainers")
    reg = load_registry()
    assert "grad_cam" not in reg.names("explainers") and "confidence" in reg.names("metrics")


def test_variants_name_the_same_plugin_and_plugin_names_cannot_hold_the_marker():
    reg = load_registry()
    assert reg.get("explainers", "grad_cam:coarse") is reg.get("explainers", "grad_cam")
    assert reg.get("metrics", "localization_iou:positives") is reg.get("metrics", "localization_iou")
    assert reg.expand("explainers", ["grad_cam", "grad_cam:b"]) == ["grad_cam", "grad_cam:b"]
    with pytest.raises(UserError, match="Did you mean 'grad_cam'"):
        reg.get("explainers", "gradcam:b")
    for bad in (("explainers", "grad_cam:"), ("datasets", "rooftops:big")):
        with pytest.raises(UserError, match="NAME:VARIANT"):
            reg.get(*bad)

    class Colon:
        name = "my:cam"

    with pytest.raises(UserError, match="cannot contain ':'"):
        load_registry([_plugin("colon", register_explainers=lambda register: register(Colon))])
