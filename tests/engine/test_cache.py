"""The heatmap cache key holds everything a map depends on: for each ingredient, a run that
changes only it must compute its maps again instead of reading the first run's."""

import copy
import importlib.util
import textwrap

import pytest
import torch

import xaibench.registry.builtin.explainers as X
from xaibench.engine.cache import HeatmapCache, code_fingerprint
from xaibench.engine.heatmaps import HeatmapEngine
from xaibench.engine.targets import TargetSpec
from xaibench.models.base import LoadedModel

LAYER = "decoder.blocks.1"
PLUGIN = """
import torch
from xaibench.registry.passes import Pass


class Probe:
    name = "probe"
    needs = Pass.ACTIVATIONS
    version = "1"

    def __init__(self, scale: float = 1.0):
        self.scale = scale

    def explain(self, ctx):
        acts = ctx.activations.mean(1)
        gt = torch.nn.functional.interpolate(ctx.ground_truth[:, None].float(), size=acts.shape[-2:])[:, 0]
        return acts * self.scale + {offset}
"""


def _plugin(tmp_path, offset: str):
    """The same class (module, name, version) from another source file: only its code differs
    (imported as a plugin's module is: in ``sys.modules``, where its source file is found)."""
    import sys

    path = tmp_path / f"probe_{len(list(tmp_path.glob('probe_*')))}.py"
    path.write_text(textwrap.dedent(PLUGIN.format(offset=offset)))
    spec = importlib.util.spec_from_file_location("xaibench_probe_plugin", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module.Probe


@pytest.fixture
def setup(tiny_unet, tiny_images, tmp_path):
    gt = torch.zeros(3, 32, 32, dtype=torch.long)
    gt[0, 4:12, 4:12] = 1
    gt[1, 16:28, 10:20] = 1
    gt[2, 2:30, 2:8] = 1
    probe = _plugin(tmp_path, "0.5 * gt")
    base = dict(model=tiny_unet, images=tiny_images, gt=gt, layer=LAYER, explainers={"grad_cam": X.GradCAM(), "probe": probe()}, target=TargetSpec("ground_truth"))
    cache_dir = tmp_path / "cache"

    def run(**changes):
        s = {**base, **changes}
        loaded = LoadedModel(s["model"], "binary", {"decoder1": LAYER})
        engine = HeatmapEngine(loaded, s["explainers"], target=s["target"], cache=HeatmapCache(cache_dir))
        out = engine.run(s["images"], [s["layer"]], ground_truth=s["gt"])
        return engine.computed, out

    run()
    return run, base, tmp_path


def _other_weights(m):
    m = copy.deepcopy(m)
    with torch.no_grad():
        next(m.parameters()).add_(0.01)
    return m


def test_the_same_inputs_read_every_map_from_the_cache(setup):
    run, _, _ = setup
    computed, _ = run()
    assert computed == []


@pytest.mark.parametrize(
    "ingredient",
    ["model weights", "image", "layer", "explainer name", "parameters", "target region", "target class", "ground-truth mask"],
)
def test_changing_one_ingredient_computes_the_maps_again(setup, ingredient):
    run, base, _ = setup
    change = {
        "model weights": lambda: {"model": _other_weights(base["model"])},
        "image": lambda: {"images": base["images"] + 0.01},
        "layer": lambda: {"layer": "decoder.blocks.2"},
        "explainer name": lambda: {"explainers": {"grad_cam_again": X.GradCAM(), "probe_again": base["explainers"]["probe"]}},
        "parameters": lambda: {"explainers": {"grad_cam": X.GradCAM(), "probe": type(base["explainers"]["probe"])(scale=2.0)}},
        "target region": lambda: {"target": TargetSpec("predicted")},
        "target class": lambda: {"target": TargetSpec("ground_truth", class_id=0)},  # the background
        "ground-truth mask": lambda: {"gt": base["gt"].flip(0)},  # the labels of two tiles swapped
    }[ingredient]()
    computed, _ = run(**change)
    assert len(computed) == (1 if ingredient == "parameters" else 2), computed  # parameters: the probe's only


def test_the_explainers_version_and_code_are_in_the_key(setup, monkeypatch):
    run, base, tmp_path = setup
    probe = type(base["explainers"]["probe"])
    monkeypatch.setattr(probe, "version", "2")
    computed, _ = run()
    assert computed == [("probe", LAYER)]
    fixed = _plugin(tmp_path, "0.25 * gt")  # the plugin's explainer fixed: same name, class, version
    monkeypatch.setattr(fixed, "version", "2")
    computed, out = run(explainers={"grad_cam": X.GradCAM(), "probe": fixed()})
    assert computed == [("probe", LAYER)]
    assert code_fingerprint(fixed) != code_fingerprint(probe)


def test_images_with_the_same_pixels_and_other_masks_keep_their_own_maps(tiny_unet, tiny_images, tmp_path):
    images = tiny_images[:1].repeat(2, 1, 1, 1)
    gt = torch.zeros(2, 32, 32, dtype=torch.long)
    gt[0, 2:10, 2:10] = 1
    gt[1, 20:30, 20:30] = 1
    loaded = LoadedModel(tiny_unet, "binary", {"decoder1": LAYER})
    engine = lambda: HeatmapEngine(loaded, {"grad_cam": X.GradCAM()}, target=TargetSpec("ground_truth"), cache=HeatmapCache(tmp_path))  # noqa: E731
    first = engine().run(images, [LAYER], ground_truth=gt).maps[("grad_cam", LAYER)]
    assert not torch.allclose(first[0], first[1])
    again = engine().run(images, [LAYER], ground_truth=gt).maps[("grad_cam", LAYER)]
    assert torch.equal(first, again)


def _entries(root):
    return sorted(root.rglob("*.npz"))


@pytest.mark.parametrize(
    "damage",
    ["garbage bytes", "wrong shape", "not finite", "checksum", "float64"],
)
def test_a_damaged_entry_is_computed_again_rewritten_and_reported_once(tiny_unet, tiny_images, tmp_path, capsys, damage):
    import hashlib

    import numpy as np

    loaded = LoadedModel(tiny_unet, "binary", {"decoder1": LAYER})
    run = lambda: HeatmapEngine(loaded, {"grad_cam": X.GradCAM()}, cache=HeatmapCache(tmp_path)).run(tiny_images, [LAYER])  # noqa: E731
    first = run().maps[("grad_cam", LAYER)]
    entries = _entries(tmp_path)
    assert len(entries) == 3
    for path in entries[:2]:
        arr = np.load(path)["map"]
        bad = {
            "wrong shape": arr[:16],
            "not finite": np.full_like(arr, np.nan),
            "checksum": arr * 0.5,
            "float64": arr.astype(np.float64),
        }.get(damage)
        if bad is None:
            path.write_bytes(b"\x00garbage")
            continue
        sha = hashlib.sha1(bad.tobytes()).digest() if damage != "checksum" else hashlib.sha1(arr.tobytes()).digest()
        with open(path, "wb") as f:
            np.savez(f, map=bad, sha1=np.frombuffer(sha, dtype=np.uint8))
    capsys.readouterr()
    engine = HeatmapEngine(loaded, {"grad_cam": X.GradCAM()}, cache=HeatmapCache(tmp_path))
    again = engine.run(tiny_images, [LAYER]).maps[("grad_cam", LAYER)]
    assert torch.equal(again, first) and engine.computed == [("grad_cam", LAYER)] and engine.cache.rejected == 2
    captured = capsys.readouterr()
    out = captured.out + captured.err
    assert out.count("warning: cached map") == 1  # once, not per entry
    third = HeatmapEngine(loaded, {"grad_cam": X.GradCAM()}, cache=HeatmapCache(tmp_path))
    third.run(tiny_images, [LAYER])
    assert third.computed == [] and third.cache.rejected == 0  # rewritten


def test_an_unwritable_cache_warns_once_and_the_run_goes_on(tiny_unet, tiny_images, tmp_path, monkeypatch, capsys):
    import xaibench.engine.cache as cache_module

    def full(path, write):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cache_module, "atomic_write", full)
    loaded = LoadedModel(tiny_unet, "binary", {"decoder1": LAYER})
    engine = HeatmapEngine(loaded, {"grad_cam": X.GradCAM(), "eigen_cam": X.EigenCAM()}, cache=HeatmapCache(tmp_path))
    out = engine.run(tiny_images, [LAYER])
    assert len(out.maps) == 2 and _entries(tmp_path) == []
    text = capsys.readouterr()
    assert (text.out + text.err).count("cannot write the heatmap cache") == 1 and "No space left on device" in text.out + text.err


def test_memory_holds_the_most_recent_maps_only_and_the_disk_the_rest(tmp_path):
    from xaibench.engine.cache import HeatmapCache

    maps = {f"k{i}": torch.full((8, 8), float(i)) for i in range(10)}  # 256 bytes each
    for root in (tmp_path / "c", None):
        cache = HeatmapCache(root, memory_bytes=3 * 256)
        for k, m in maps.items():
            cache.put(k, m)
        assert cache._mem_bytes == 3 * 256 and list(cache._mem) == ["k7", "k8", "k9"]  # flat, whatever the images
        cache.get("k7")  # used: the last to go
        cache.put("k10", torch.zeros(8, 8))
        assert list(cache._mem) == ["k9", "k7", "k10"]
        got = cache.get("k0", (8, 8))
        if root is None:
            assert got is None  # forgotten: the engine computes it again
        else:
            assert torch.equal(got, maps["k0"]) and "k0" in cache._mem  # read back from disk
