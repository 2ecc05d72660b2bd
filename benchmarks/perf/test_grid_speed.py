"""The WHU study's whole grid (seed 001: its five CAMs and the other three, at decoder1 and
decoder2, thresholds 0.1-0.5, M1/M2/M3, confidence, entropy and IoU drop) on a cached model,
timed three ways in one run (issue 27 item 2):

- xaibench: ``xaibench.run`` on a TOML config, a ``torch_model`` checkpoint and an
  ``image_folder`` dataset written to a temporary folder (a ``--fresh`` run after a warm-up run
  of one image, so imports and first-call costs are not counted);
- the user's way: pytorch-grad-cam per method and layer, then one forward per perturbed image
  (batch size 1), then the metric arithmetic in torch;
- the pass floor: one forward + backward of the batch hooked at both layers, Score-CAM's K
  masked forwards and Ablation-CAM's K tail forwards per layer and image, and one forward per
  distinct perturbed input, each batched at its best chunk size (probed first, not counted).

Run with ``python -m pytest benchmarks/perf/test_grid_speed.py -p no:cacheprovider
--benchmark-disable-gc --benchmark-columns=mean -s``; the ratios are in the terminal summary.
"""

from __future__ import annotations

import copy
import json
import os
import time

import numpy as np
import pytest
import torch

import xaibench
from xaibench.config.vocabulary import BACKGROUND_ONLY, HIGHLIGHTED_ONLY, HIGHLIGHTED_PLUS_TARGET
from xaibench.config.vocabulary import MODES as VOCAB_MODES
from xaibench.engine.capture import shared_pass
from xaibench.models.smp_unet import unet_tail

from .conftest import GRID_METHODS as METHODS
from .conftest import LAYERS, N_IMAGES, RESULTS, SIZE

pgc = pytest.importorskip("pytorch_grad_cam")
from pytorch_grad_cam.utils.image import scale_cam_image  # noqa: E402
from pytorch_grad_cam.utils.model_targets import SemanticSegmentationTarget  # noqa: E402

from .test_cam_speed import ORACLE, _ablation_by_full_forwards  # noqa: E402

THRESHOLDS = [0.1, 0.2, 0.3, 0.4, 0.5]
MODES = list(VOCAB_MODES)
METRICS = ["confidence", "entropy", "iou_drop"]
CHUNKS = [4, 8, 16, 32, 64]
TIMES: dict[str, float] = {}
STORE: dict[str, object] = {}
KEYS = {"xaibench": "xaibench run            s", "user": "user's way              s", "floor": "pass floor              s"}


def _config(root, n_images: int, chunk: int) -> str:
    data, checkpoint = (root / "data").as_posix(), (root / "unet.pt").as_posix()
    return f"""[benchmark]
name = "grid-speed"
seed = 0

[dataset]
name = "image_folder"
root = "{data}"
n_images = {n_images}

[model]
name = "torch_model"
arch = "Unet"
encoder = "resnet18"
classes = 1
checkpoint = "{checkpoint}"

[grid]
explainers = {json.dumps(METHODS)}
layers = ["decoder1", "decoder2"]
thresholds = {json.dumps(THRESHOLDS)}
perturbations = {json.dumps(MODES)}
metrics = {json.dumps(METRICS)}

[run]
batch_size = {N_IMAGES}
chunk_size = {chunk}
fill = "zero"
"""


@pytest.fixture(scope="module")
def truth(images):
    """Fixed ground truth: smooth noise thresholded at its median (a speed benchmark: any masks do)."""
    g = torch.Generator().manual_seed(3)
    coarse = torch.rand(images.shape[0], 1, 8, 8, generator=g)
    smooth = torch.nn.functional.interpolate(coarse, size=images.shape[-2:], mode="bilinear")[:, 0]
    return smooth > smooth.median()


def _timed_best(run, sizes) -> tuple[int, float]:
    """The chunk size of ``sizes`` at which ``run(chunk)`` is fastest, and its time."""
    times = {}
    for n in sizes:
        t = time.perf_counter()
        run(n)
        times[n] = time.perf_counter() - t
    best = min(times, key=times.get)
    return best, times[best]


@pytest.fixture(scope="module")
def best(unet, images):
    """The floor's fastest set-up, probed on 64 inputs (not counted): the memory layout of the
    network (as given, or channels-last as xaibench lays out its CPU models) and the chunk size
    of full forwards and of each layer's tail forwards."""
    RESULTS["load average (1 min) at the start"] = os.getloadavg()[0]
    x, out = images[:1].repeat(64, 1, 1, 1), {}
    layouts = {"as given": unet, "channels-last": copy.deepcopy(unet).to(memory_format=torch.channels_last)}
    times = {}
    for name, model in layouts.items():
        # the batch's forward + backward once first: first-call costs out of every timing
        cap = shared_pass(model, images, LAYERS, score=lambda o: o.sum(dim=(1, 2, 3)), extra=["encoder"])
        with torch.no_grad():
            model(x[:4])
            times[name] = _timed_best(lambda n, m=model: [m(x[s : s + n]) for s in range(0, 64, n)], CHUNKS)
    layout = min(times, key=lambda k: times[k][1])
    out["model"], out["full"] = layouts[layout], times[layout][0]
    tails = {l: unet_tail(out["model"], l) for l in LAYERS}
    cap, idx = shared_pass(out["model"], images[:1], LAYERS, extra=["encoder"]), torch.zeros(64, dtype=torch.long)
    with torch.no_grad():
        for layer in LAYERS:
            acts = cap.activations[layer].repeat(64, 1, 1, 1)
            out[layer] = _timed_best(lambda n, a=acts, l=layer: [tails[l].fn(a[s : s + n], cap.extras, idx[s : s + n]) for s in range(0, 64, n)], CHUNKS)[0]
    RESULTS[f"floor: {layout}, chunk of full forwards"] = out["full"]
    RESULTS["floor: chunk of tail forwards (decoder1)"] = out[LAYERS[0]]
    return out


def _stream(run, rows: int, chunk: int) -> None:
    """``run(rows of one chunk)`` over rows ``0 .. rows - 1``, each chunk's inputs gathered as
    it goes (a runner never holds every perturbed input at once)."""
    order = torch.arange(rows)
    for s in range(0, rows, chunk):
        run(order[s : s + chunk])


def test_pass_floor(benchmark, images, best):
    """The grid's passes and nothing else: what any runner must at least spend."""
    unet, full = best["model"], best["full"]
    tails = {l: unet_tail(unet, l) for l in LAYERS}
    n_perturbed = len(METHODS) * len(LAYERS) * len(THRESHOLDS) * len(MODES)  # per image

    def floor():
        n = images.shape[0]
        cap = shared_pass(unet, images, LAYERS, score=lambda o: o.sum(dim=(1, 2, 3)), extra=["encoder"])
        with torch.no_grad():
            for layer in LAYERS:  # every image's K inputs in one stream, chunked across images
                act, k = cap.activations[layer], cap.activations[layer].shape[1]
                if "score_cam" in METHODS:
                    _stream(lambda r, k=k: unet(images[r // k]), n * k, full)
                if "ablation_cam" in METHODS:
                    _stream(lambda r, k=k, a=act, l=layer: tails[l].fn(a[r // k], cap.extras, r // k), n * k, best[layer])
            _stream(lambda r: unet(images[r // n_perturbed]), n * n_perturbed, full)

    benchmark.pedantic(floor, rounds=1, iterations=1)
    TIMES["floor"] = benchmark.stats.stats.mean
    RESULTS[KEYS["floor"]] = TIMES["floor"]


def _user_maps(unet, images, method, layer, pred, targets):
    """One pytorch-grad-cam call (Ablation-CAM: the full-forward fallback, see test_cam_speed)."""
    if method == "ablation_cam":
        raw = _ablation_by_full_forwards(unet, images, layer, pred)
        return scale_cam_image(raw, (images.shape[-1], images.shape[-2]))
    with ORACLE[method](model=unet, target_layers=[dict(unet.named_modules())[layer]]) as cam:
        return cam(input_tensor=images, targets=targets)


def _iou(pred: torch.Tensor, truth: torch.Tensor) -> float:
    union = (pred | truth).sum()
    return float((pred & truth).sum() / union) if union else float("nan")


def _user_scores(unet, image, region, truth, clean_iou, keep, mode) -> dict[str, float]:
    """One forward of one perturbed image, then confidence, entropy and (M1) IoU drop."""
    with torch.no_grad():
        logit = unet(image * keep)[0, 0]
    p = torch.sigmoid(logit)
    h = -(p * torch.log(p.clamp_min(1e-12)) + (1 - p) * torch.log((1 - p).clamp_min(1e-12)))
    out = {"confidence": float(p[region].mean()), "entropy": float(h[region].mean())}
    if mode == BACKGROUND_ONLY:
        out["iou_drop"] = _iou(logit > 0, truth) - clean_iou
    return out


def test_users_way(benchmark, unet, images, truth):
    """What a user writes today: a library call per method and layer, one forward per perturbed
    image, the metrics by hand."""

    def user():
        with torch.no_grad():
            logits = unet(images)[:, 0]
        region = logits > 0
        pred = region.float().numpy()
        targets = [SemanticSegmentationTarget(0, pred[i]) for i in range(len(images))]
        clean = [_iou(region[i], truth[i]) for i in range(len(images))]
        scores = {}
        for method in METHODS:
            for layer in LAYERS:
                maps = torch.from_numpy(_user_maps(unet, images, method, layer, pred, targets))
                for t in THRESHOLDS:
                    for mode in MODES:
                        for i in range(len(images)):
                            b = maps[i] >= t
                            keep = {BACKGROUND_ONLY: ~b, HIGHLIGHTED_ONLY: b, HIGHLIGHTED_PLUS_TARGET: b | region[i]}[mode]
                            key = (method, layer, t, mode, i)
                            scores[key] = _user_scores(unet, images[i : i + 1], region[i], truth[i], clean[i], keep.float(), mode)
        return scores

    STORE["user"] = benchmark.pedantic(user, rounds=1, iterations=1)
    TIMES["user"] = benchmark.stats.stats.mean
    RESULTS[KEYS["user"]] = TIMES["user"]


@pytest.fixture(scope="module")
def run_root(tmp_path_factory, unet, images, truth):
    """The cached model and the dataset as a user has them: a state dict and a folder."""
    root = tmp_path_factory.mktemp("grid")
    for sub in ("images", "masks"):
        (root / "data" / "test" / sub).mkdir(parents=True)
    for i in range(images.shape[0]):
        np.save(root / "data" / "test" / "images" / f"tile{i:03d}.npy", images[i].numpy())
        np.save(root / "data" / "test" / "masks" / f"tile{i:03d}.npy", truth[i].numpy().astype(np.uint8))
    torch.save(unet.state_dict(), root / "unet.pt")
    return root


def _unimportable_plugins() -> str:
    """Entry points of the ``xaibench`` group whose package is not there (e.g. an editable
    install whose folder moved): skipped, as the grid needs only built-ins."""
    from importlib import metadata, util

    eps = metadata.entry_points(group="xaibench")
    return ",".join(ep.name for ep in eps if util.find_spec(ep.value.split(":")[0].split(".")[0]) is None)


def test_xaibench(benchmark, run_root, best, monkeypatch):
    monkeypatch.setenv("XAIBENCH_CACHE", str(run_root / "cache"))
    if _unimportable_plugins():
        monkeypatch.setenv("XAIBENCH_DISABLE_PLUGINS", _unimportable_plugins())
    chunk = best["full"]
    (run_root / "warm.toml").write_text(_config(run_root, 1, chunk))
    (run_root / "grid.toml").write_text(_config(run_root, N_IMAGES, chunk))
    xaibench.run(str(run_root / "warm.toml"), out=run_root / "warm", show_progress=False)
    out = run_root / "run"

    def ours():
        return xaibench.run(str(run_root / "grid.toml"), out=out, fresh=True, show_progress=False)

    df = STORE["xaibench"] = benchmark.pedantic(ours, rounds=1, iterations=1)
    assert len(df) and set(METRICS) <= set(df["metric"])
    TIMES["xaibench"] = benchmark.stats.stats.mean
    RESULTS[KEYS["xaibench"]] = TIMES["xaibench"]
    manifest = json.loads((out / "manifest.json").read_text())
    _report_breakdown(manifest.get("timings") or {}, manifest.get("passes") or {})


PARTS = ["data_s", "heatmaps_s", "thresholds_s", "perturbed_forwards_s", "metric_arithmetic_s", "metrics_s", "write_s", "summary_s"]
PASSES = ["forwards", "forward_rows", "backwards", "tail_forwards", "tail_rows", "perturbed_requested", "perturbed_forwarded"]


def _report_breakdown(timings: dict, passes: dict) -> None:
    """Where xaibench's time went, as fractions of the run's ``total_s`` (whichever keys the
    manifest has), and its pass counts."""
    total = timings.get("total_s")
    if not total:
        return
    RESULTS["xaibench total_s (manifest)"] = total
    for k in PARTS:
        if k in timings:
            RESULTS[f"  share {k}"] = timings[k] / total
    if "perturbed_forwards_s" in timings:  # maps' passes are inside heatmaps_s: an upper bound on passes
        RESULTS["  share outside maps + perturbed fwds"] = 1 - (timings.get("heatmaps_s", 0) + timings["perturbed_forwards_s"]) / total
    for k in PASSES:
        if k in passes:
            RESULTS[f"passes {k}"] = passes[k]


def _score_differences(user: dict, df) -> np.ndarray:
    """|xaibench's score - the user's| for every cell, image and metric of the grid but Eigen-CAM's
    (the sign of its singular vector is arbitrary), NaN where either is undefined."""
    alias = {LAYERS[0]: "decoder1", LAYERS[1]: "decoder2"}
    ours = df[df["metric"].isin(METRICS)].set_index(["explainer", "layer", "threshold", "perturbation", "metric", "image_id"])["value"]
    diffs = []
    for (method, layer, t, mode, i), scores in user.items():
        if method != "eigen_cam":
            for metric, v in scores.items():
                diffs.append(abs(ours[(method, alias[layer], str(t), mode, metric, f"tile{i:03d}")] - v))
    return np.array(diffs, dtype=float)


def test_report_ratios():
    if len(TIMES) < 3:
        pytest.skip("needs the three timings of this module")
    RESULTS["xaibench / floor (x)   target <= 1.2"] = TIMES["xaibench"] / TIMES["floor"]
    RESULTS["user / xaibench (x)    target >= 5"] = TIMES["user"] / TIMES["xaibench"]
    RESULTS["1 - floor/xaibench     target < 0.10"] = 1 - TIMES["floor"] / TIMES["xaibench"]
    RESULTS[f"grid: {len(METHODS)} methods x {len(LAYERS)} layers x {len(THRESHOLDS)} thr x {len(MODES)} modes, images"] = N_IMAGES
    RESULTS["image side (px)"] = SIZE
    RESULTS["load average (1 min) at the end"] = os.getloadavg()[0]
    diff = _score_differences(STORE["user"], STORE["xaibench"])
    RESULTS["scores compared (xaibench vs user)"] = len(diff)
    RESULTS["  of them equal within 1e-3"] = float(np.mean(diff[~np.isnan(diff)] < 1e-3))
    assert np.nanmedian(diff) < 1e-3  # the three ways compute the same grid
