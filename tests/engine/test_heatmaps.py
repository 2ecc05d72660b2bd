import pytest
import torch

import xaibench
import xaibench.registry.builtin.explainers as X
from xaibench.engine.cache import HeatmapCache, image_key
from xaibench.engine.capture import PassCounter
from xaibench.engine.heatmaps import HeatmapEngine, minmax, normalize
from xaibench.errors import UserError
from xaibench.models.base import LoadedModel
from xaibench.models.smp_unet import unet_tail

GRADIENT = ["grad_cam", "grad_cam_pp", "x_grad_cam", "hires_cam", "layer_cam"]
LAYERS = ["decoder.blocks.2", "decoder.blocks.1"]


def _loaded(m, split=True):
    return LoadedModel(m, "binary", {"decoder1": LAYERS[0], "decoder2": LAYERS[1]}, tail=(lambda p: unet_tail(m, p)) if split else (lambda p: None))


def _engine(m, names, **kw):
    reg = {c.name: c for c in X.BUILTIN}
    return HeatmapEngine(_loaded(m, kw.pop("split", True)), {n: reg[n]() for n in names}, **kw)


def test_all_gradient_methods_at_two_layers_cost_one_forward_and_one_backward(tiny_unet, tiny_images):
    counter = PassCounter()
    out = _engine(tiny_unet, GRADIENT + ["eigen_cam"], counter=counter).run(tiny_images, LAYERS)
    assert (counter.forwards, counter.backwards, counter.tail_forwards) == (1, 1, 0)
    assert len(out.maps) == 12
    for m in out.maps.values():
        assert m.shape == (3, 32, 32) and m.min() >= 0 and m.max() <= 1


def test_score_cam_costs_k_masked_forwards_and_ablation_k_tail_rows(tiny_unet, tiny_images):
    counter = PassCounter()
    _engine(tiny_unet, ["score_cam", "ablation_cam"], counter=counter, chunk_size=64).run(tiny_images, ["decoder.blocks.1"])
    k = 8  # channels of decoder.blocks.1
    assert counter.forward_rows == 1 * 3 + k * 3  # shared forward + K masked inputs per image
    assert counter.tail_rows == k * 3 and counter.backwards == 0


def test_ablation_through_the_tail_equals_full_forwards(tiny_unet, tiny_images):
    a = _engine(tiny_unet, ["ablation_cam"]).run(tiny_images, LAYERS)
    b = _engine(tiny_unet, ["ablation_cam"], split=False).run(tiny_images, LAYERS)
    for key in a.maps:
        assert torch.allclose(a.maps[key], b.maps[key], atol=1e-5)


def test_ablation_matches_a_reference_by_full_forwards(tiny_unet, tiny_images):
    """w_k = (y - y_k) / y with channel k zeroed, computed here the slow, obvious way."""
    layer = dict(tiny_unet.named_modules())["decoder.blocks.1"]
    with torch.no_grad():
        logits = tiny_unet(tiny_images)
        region = (logits[:, 0] > 0).float()
        y = (logits[:, 0] * region).sum((1, 2))
        store = {}
        h = layer.register_forward_hook(lambda m, i, o: store.setdefault("a", o))
        tiny_unet(tiny_images)
        h.remove()
        a = store["a"]
        weights = torch.zeros(a.shape[:2])
        for k in range(a.shape[1]):
            h = layer.register_forward_hook(lambda m, i, o, k=k: o.index_fill(1, torch.tensor([k]), 0.0))
            yk = (tiny_unet(tiny_images)[:, 0] * region).sum((1, 2))
            h.remove()
            weights[:, k] = (y - yk) / y
        ref = normalize((weights[:, :, None, None] * a).sum(1), tiny_images.shape[-2:])
    got = xaibench.explain(tiny_unet, tiny_images, "ablation_cam", "decoder.blocks.1")
    assert torch.allclose(got, ref, atol=1e-5)


def test_cache_hit_recomputes_no_map(tiny_unet, tiny_images, tmp_path):
    cache = HeatmapCache(tmp_path)
    first = _engine(tiny_unet, ["grad_cam", "score_cam"], cache=cache)
    a = first.run(tiny_images, LAYERS)
    assert len(first.computed) == 4
    second = _engine(tiny_unet, ["grad_cam", "score_cam"], cache=HeatmapCache(tmp_path))  # from disk
    counter = PassCounter()
    second.counter = counter
    b = second.run(tiny_images, LAYERS)
    assert second.computed == [] and counter.backwards == 0 and counter.forwards == 1
    for k in a.maps:
        assert torch.equal(a.maps[k], b.maps[k])


def test_segx_reuses_its_base_and_stays_inside_the_mask(tiny_unet, tiny_images):
    engine = _engine(tiny_unet, ["grad_cam", "segx"])
    gt = torch.zeros(3, 32, 32, dtype=torch.long)
    gt[:, 8:20, 8:20] = 1
    engine.explainers["segx"] = X.SegX(base="grad_cam", mask="ground_truth")
    out = engine.run(tiny_images, ["decoder.blocks.1"], ground_truth=gt)
    assert engine.computed.count(("grad_cam", "decoder.blocks.1")) == 1
    segx = out.maps[("segx", "decoder.blocks.1")]
    assert segx[gt == 0].abs().max() < 1e-6 and segx.max() > 0.99


def test_random_map_is_seeded_by_image_content(tiny_unet, tiny_images):
    a = xaibench.explain(tiny_unet, tiny_images, "random", "decoder.blocks.1")
    b = xaibench.explain(tiny_unet, tiny_images.flip(0), "random", "decoder.blocks.1")
    assert torch.equal(a, b.flip(0)) and not torch.equal(a[0], a[1])


def test_explain_api_shapes_targets_and_errors(tiny_unet, tiny_images):
    one = xaibench.explain(tiny_unet, tiny_images, "grad_cam", dict(tiny_unet.named_modules())["decoder.blocks.1"])
    assert isinstance(one, torch.Tensor) and one.shape == (3, 32, 32)
    many = xaibench.explain(tiny_unet, tiny_images, ["grad_cam", "eigen_cam"], ["decoder.blocks.1"])
    assert set(many) == {("grad_cam", "decoder.blocks.1"), ("eigen_cam", "decoder.blocks.1")}
    masks = torch.zeros(3, 32, 32)
    masks[:, :16] = 1
    by_mask = xaibench.explain(tiny_unet, tiny_images, "grad_cam", "decoder.blocks.1", target=masks)
    assert not torch.allclose(by_mask, one)
    with pytest.raises(UserError, match="exactly one per image"):
        xaibench.explain(tiny_unet, tiny_images, "grad_cam", "decoder.blocks.1", target=masks[:2])
    with pytest.raises(UserError, match="exactly one per image"):
        xaibench.explain(tiny_unet, tiny_images, "grad_cam", "decoder.blocks.1", target=[1, 1])
    with pytest.raises(UserError, match="Did you mean"):
        xaibench.explain(tiny_unet, tiny_images, "grad_cam", "decoder.block.1")
    assert not tiny_unet.training


def test_classifier_targets_explain_a_class_logit():
    import torchvision

    torch.manual_seed(0)
    m = torchvision.models.resnet18(num_classes=3).eval()
    x = torch.rand(2, 3, 64, 64)
    a = xaibench.explain(m, x, "grad_cam", "layer3", target=[0, 0])
    b = xaibench.explain(m, x, "grad_cam", "layer3", target=[2, 2])
    assert a.shape == (2, 64, 64) and a.max() > 0.99 and not torch.allclose(a, b)


def test_normalize_is_relu_minmax_resize_minmax():
    raw = torch.tensor([[[-1.0, 0.0], [1.0, 3.0]]])
    out = normalize(raw, (4, 4))
    assert out.shape == (1, 4, 4) and out.min() == 0 and abs(float(out.max()) - 1) < 1e-6
    assert torch.allclose(minmax(torch.tensor([[[2.0, 4.0]]])), torch.tensor([[[0.0, 1.0]]]), atol=1e-6)


def test_a_one_logit_classifier_explains_its_positive_class():
    from xaibench.engine.targets import TargetSpec, probabilities, resolve

    logits = torch.tensor([[2.0], [-1.0]])
    t = resolve(TargetSpec(), logits)
    assert t.channel.tolist() == [0, 0] and t.class_ids.tolist() == [1, 1]
    assert torch.allclose(probabilities(logits)[torch.arange(2), t.class_ids], torch.sigmoid(logits[:, 0]))


def test_segx_cache_key_follows_its_base_parameters(tiny_unet, tiny_images, tmp_path):
    reg = {c.name: c for c in X.BUILTIN}
    cache = HeatmapCache(tmp_path)
    a = HeatmapEngine(_loaded(tiny_unet), {"random": reg["random"](seed=0), "segx": X.SegX(base="random", mask="target")}, cache=cache)
    a.run(tiny_images, ["decoder.blocks.1"], pairs=[("segx", "decoder.blocks.1")])
    b = HeatmapEngine(_loaded(tiny_unet), {"random": reg["random"](seed=5), "segx": X.SegX(base="random", mask="target")}, cache=cache)
    b.run(tiny_images, ["decoder.blocks.1"], pairs=[("segx", "decoder.blocks.1")])
    assert ("segx", "decoder.blocks.1") in b.computed  # another base, so not a cache hit


def test_a_fused_layer_is_the_mean_of_its_parts_from_the_same_pass(tiny_unet, tiny_images):
    counter = PassCounter()
    fused = "mean(decoder1, decoder.blocks.1)"
    engine = _engine(tiny_unet, ["grad_cam", "layer_cam"], counter=counter)
    path = engine.model.resolve_layer(fused)
    assert path == f"mean({LAYERS[0]},{LAYERS[1]})"
    assert engine.model.layer_name(path) == "mean(decoder1,decoder2)"
    out = engine.run(tiny_images, [], pairs=[("grad_cam", path), ("layer_cam", path), ("grad_cam", LAYERS[0])])
    assert (counter.forwards, counter.backwards) == (1, 1)  # parts and plain layers share one pass
    single = _engine(tiny_unet, ["grad_cam"]).run(tiny_images, LAYERS).maps
    expected = (single[("grad_cam", LAYERS[0])] + single[("grad_cam", LAYERS[1])]) / 2
    assert torch.allclose(out.maps[("grad_cam", path)], expected, atol=1e-6)
    assert set(out.maps) == {("grad_cam", path), ("layer_cam", path), ("grad_cam", LAYERS[0])}


@pytest.mark.parametrize("bad", ["mean()", "mean(decoder1,)", "mean(decoder1, mean(decoder2))", "mean(decoder1, nowhere)"])
def test_a_bad_fused_layer_is_a_user_error(tiny_unet, bad):
    with pytest.raises(UserError):
        _loaded(tiny_unet).resolve_layer(bad)


def test_the_api_takes_fused_layers(tiny_unet, tiny_images):
    out = xaibench.explain(tiny_unet, tiny_images, "grad_cam", ["mean(decoder.blocks.2,decoder.blocks.1)"])
    assert out[("grad_cam", "mean(decoder.blocks.2,decoder.blocks.1)")].shape == (3, 32, 32)


def _poison(engine: HeatmapEngine, images: torch.Tensor, pairs) -> None:
    """Overwrite the cache entries of ``pairs`` with maps no explainer makes (ones)."""
    out = engine.run(images, [], pairs=pairs)
    for pair in pairs:
        engine._store(pair, [image_key(im) for im in images], engine.target_spec.key(), torch.ones_like(out.maps[pair]))


def test_recompute_reads_no_cached_map_and_overwrites_the_entries(tiny_unet, tiny_images, tmp_path):
    """``--fresh``: a map in the cache (here a wrong one, as a buggy plugin could leave) is not
    served again; it is computed and the entry overwritten, so the next run reads the right one."""
    pairs = [("grad_cam", LAYERS[0]), ("score_cam", LAYERS[0])]
    right = _engine(tiny_unet, ["grad_cam", "score_cam"]).run(tiny_images, [], pairs=pairs).maps
    _poison(_engine(tiny_unet, ["grad_cam", "score_cam"], cache=HeatmapCache(tmp_path)), tiny_images, pairs)
    served = _engine(tiny_unet, ["grad_cam", "score_cam"], cache=HeatmapCache(tmp_path)).run(tiny_images, [], pairs=pairs).maps
    assert all(torch.equal(served[p], torch.ones_like(served[p])) for p in pairs)  # what a resume reads
    fresh = _engine(tiny_unet, ["grad_cam", "score_cam"], cache=HeatmapCache(tmp_path), recompute=True)
    got = fresh.run(tiny_images, [], pairs=pairs).maps
    assert sorted(fresh.computed) == sorted(pairs) and fresh.cache.hits == 0
    after = _engine(tiny_unet, ["grad_cam", "score_cam"], cache=HeatmapCache(tmp_path))
    again = after.run(tiny_images, [], pairs=pairs).maps
    assert after.computed == []  # read from disk: the overwritten entries
    for p in pairs:
        assert torch.allclose(got[p], right[p], atol=1e-6) and torch.equal(again[p], got[p])


def test_recompute_names_only_some_explainers_and_the_composites_built_on_them(tiny_unet, tiny_images, tmp_path):
    """``--fresh-maps grad_cam``: grad_cam's maps and segx's (built on grad_cam) are computed
    again; score_cam's come from the cache; within the engine a map it stored is read as usual."""
    layer = LAYERS[0]
    pairs = [("grad_cam", layer), ("score_cam", layer), ("segx", layer)]

    def engine(**kw):
        e = _engine(tiny_unet, ["grad_cam", "score_cam"], cache=HeatmapCache(tmp_path), **kw)
        e.explainers["segx"] = X.SegX(base="grad_cam", mask="target")
        return e

    _poison(engine(), tiny_images, pairs)
    e = engine(recompute={"grad_cam"})
    got = e.run(tiny_images, [], pairs=pairs).maps
    assert sorted(e.computed) == [("grad_cam", layer), ("segx", layer)]
    assert torch.equal(got[("score_cam", layer)], torch.ones_like(got[("score_cam", layer)]))  # kept: not named
    assert not torch.equal(got[("grad_cam", layer)], torch.ones_like(got[("grad_cam", layer)]))
    e.run(tiny_images, [], pairs=pairs)  # a second batch of the same images: this run's own maps
    assert len(e.computed) == 2
