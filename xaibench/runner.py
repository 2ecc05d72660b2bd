"""The runner: config -> plugins -> grid -> shared passes per batch -> tidy rows -> summary.

Per model x image batch it asks the heatmap engine for every (explainer, layer) pair the
missing cells need (one forward, one backward where needed, cached maps reused), then the
evaluation step scores every cell with batched perturbations. Rows go to the run directory in
atomic parts; cells already there are skipped (resume).
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
import shutil
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable

import pandas as pd
import torch

from xaibench import leaderboard, plots
from xaibench.cache import HeatmapCache, default_cache_dir, image_key
from xaibench.capture import PassCounter
from xaibench.config import Config, ModelRef, _hash, instantiate
from xaibench.errors import UserError
from xaibench.evaluation import evaluate_batch
from xaibench.grid import Cell, expand
from xaibench.heatmaps import HeatmapEngine
from xaibench.metrics.base import direction
from xaibench.models.training import LoadContext
from xaibench.perturb import fill_values
from xaibench.plugins import Registry, load_registry
from xaibench.progress import console, progress_bar
from xaibench.results import ResultStore, atomic_write_text
from xaibench.stats import summarize
from xaibench.targets import TargetSpec


def _versions(registry: Registry, used: Iterable[tuple[str, str]]) -> dict[str, str]:
    names = {"xaibench", "torch", "torchvision", "segmentation-models-pytorch", "timm", "numpy", "pandas", "pyarrow", "scipy", "pluggy", "torchmetrics"}
    names |= {registry.entry(kind, name).distribution for kind, name in used}
    out = {"python": platform.python_version()}
    for n in sorted(names):
        try:
            out[n] = metadata.version(n)
        except metadata.PackageNotFoundError:
            out[n] = "(not installed)"
    return out


@dataclass
class ModelPlan:
    """One model of the benchmark: its plugin instance, explainers, layers and cells."""

    ref: ModelRef
    plugin: Any
    explainers: dict[str, Any]
    explainer_names: list[str]
    layers: tuple[str, ...]
    cells: list[Cell]


class Plan:
    """Everything resolved from a config before any heavy work: plugins, parameters, cells."""

    def __init__(self, config: Config, registry: Registry):
        src = config.source
        self.config = config
        self.registry = registry
        self.metric_names = registry.expand("metrics", config.grid.metrics)
        self.metrics = {
            n: instantiate(registry.get("metrics", n), config.metric_params.get(n, {}), f"{src}: [metric_params.{n}]")
            for n in self.metric_names
        }
        self.dataset = instantiate(registry.get("datasets", config.dataset.name), config.dataset.params, f"{src}: [dataset]", config.seed)
        self.models: list[ModelPlan] = []
        used_explainers: set[str] = set()
        for i, ref in enumerate(config.models):
            where = f"{src}: [model]" if len(config.models) == 1 else f"{src}: [[models]] {ref.label!r}"
            plugin = instantiate(registry.get("models", ref.name), ref.params, where, config.seed)
            names = registry.expand("explainers", ref.explainers or config.grid.explainers)
            explainers: dict[str, Any] = {}
            for n in names:
                self._explainer(explainers, n)
            used_explainers |= set(explainers)
            layers = ref.layers or config.grid.layers
            cells = expand(ref.label, names, layers, config.thresholds(), config.grid.perturbations, self.metrics, src)
            self.models.append(ModelPlan(ref, plugin, explainers, names, layers, cells))
        for n in config.explainer_params:
            if n not in used_explainers:
                raise UserError(f"{src}: [explainer_params.{n}]: {n!r} is not an explainer of this benchmark ({', '.join(sorted(used_explainers))})")
        self.cells = [c for m in self.models for c in m.cells]
        self.used = [("explainers", n) for n in sorted(used_explainers)] + [("metrics", n) for n in self.metrics]
        self.used += [("datasets", config.dataset.name)] + [("models", m.ref.name) for m in self.models]

    def _explainer(self, into: dict[str, Any], name: str, stack: tuple = ()) -> None:
        if name in into:
            return
        if name in stack:
            raise UserError(f"{self.config.source}: explainer {name!r} composes itself")
        where = f"{self.config.source}: [explainer_params.{name}]"
        inst = instantiate(self.registry.get("explainers", name), self.config.explainer_params.get(name, {}), where, self.config.seed)
        into[name] = inst
        for base in getattr(inst, "composes", ()):
            self._explainer(into, base, stack + (name,))


def plan(config: Config, registry: Registry | None = None) -> Plan:
    """Check a config against the installed plugins without running anything (``xaibench validate``)."""
    return Plan(config, registry or load_registry())


def _stack(samples) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    return (
        torch.stack([s.image for s in samples]),
        torch.stack([s.mask for s in samples]),
        [s.image_id for s in samples],
    )


def run_benchmark(
    config: Config,
    out: str | Path | None = None,
    *,
    fresh: bool = False,
    device: str | None = None,
    show_progress: bool = True,
    extra_plugins: Iterable[object] = (),
    counter: PassCounter | None = None,
) -> pd.DataFrame:
    """Run (or resume) a benchmark and return its tidy results."""
    t0 = time.perf_counter()
    registry = load_registry(extra_plugins)
    p = plan(config, registry)
    device_name = device or config.run.device
    if device_name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available on this machine; use --device cpu")
    dev = torch.device(device_name)

    try:
        samples = p.dataset.split(config.split)
    except (KeyError, IndexError) as exc:
        raise UserError(f"{config.source}: dataset.split = {config.split!r}: {exc}") from exc
    n = len(samples) if not config.n_images else min(config.n_images, len(samples))
    if n == 0:
        raise UserError(f"{config.source}: dataset {config.dataset.name!r} has no images in split {config.split!r}")
    samples = [samples[i] for i in range(n)]

    out_dir = Path(out) if out is not None else Path("runs") / config.name
    store = ResultStore(out_dir)
    created = not out_dir.exists()
    counter = counter or PassCounter()
    timings: dict[str, float] = {}
    try:
        with store.lock():
            if fresh:
                store.clear()
            manifest = store.read_manifest()
            if manifest and store.has_results() and manifest.get("identity") != config.identity():
                raise UserError(
                    f"run directory {str(out_dir)!r} holds results of a different benchmark setup (dataset, model or seed differ); "
                    "use --fresh to start over or --out for a new directory"
                )
            done = store.done()
            bs = config.run.batch_size
            for mp in p.models:
                batches = []
                for start in range(0, n, bs):
                    chunk = samples[start : start + bs]
                    missing = [c for c in mp.cells if any((c.key, x.image_id) not in done for x in chunk)]
                    if missing:
                        batches.append((chunk, missing))
                if batches:
                    _compute(p, mp, config, batches, store, done, dev, counter, timings, show_progress, out_dir)
            df = store.read()
            t1 = time.perf_counter()
            summary = summarize(df, config.seed)
            atomic_write_text(out_dir / "summary.csv", summary.to_csv(index=False))
            plot_paths = plots.threshold_curves(summary, out_dir / "plots")
            rel = [str(pp.relative_to(out_dir)) for pp in plot_paths]
            if (out_dir / "plots" / "gallery.png").exists():
                rel.append("plots/gallery.png")
            atomic_write_text(out_dir / "leaderboard.md", leaderboard.render(df, summary, f"{config.name} leaderboard", config.seed, rel))
            timings["summary_s"] = time.perf_counter() - t1
            timings["total_s"] = time.perf_counter() - t0
            store.write_json(
                "manifest.json",
                {
                    "benchmark": config.name,
                    "config": config.as_dict(),
                    "config_hash": config.hash(),
                    "identity": config.identity(),
                    "source": config.source,
                    "seed": config.seed,
                    "device": str(dev),
                    "versions": _versions(registry, p.used),
                    "timings": timings,
                    "passes": vars(counter),
                    "cells": len(p.cells),
                    "images": n,
                    "rows": int(len(df)),
                    "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                },
            )
    except UserError:
        if created and not store.has_results():
            shutil.rmtree(out_dir, ignore_errors=True)
        raise
    if show_progress:
        _print_top(summary)
    return df


def _compute(p: Plan, mp: ModelPlan, config: Config, batches, store: ResultStore, done, dev, counter, timings, show_progress, out_dir: Path) -> None:
    t = time.perf_counter()
    dataset_key = _hash({"name": config.dataset.name, "params": config.dataset.params, "seed": config.seed})
    ctx = LoadContext(dataset=p.dataset, dataset_key=dataset_key, device=dev, cache_dir=default_cache_dir(), show_progress=show_progress)
    model = mp.plugin.load(ctx)
    timings[f"model_load_s[{mp.ref.label}]"] = time.perf_counter() - t
    layer_paths = {l: model.resolve_layer(l) for l in mp.layers}
    engine = HeatmapEngine(
        model,
        mp.explainers,
        target=TargetSpec(region=config.run.target),
        chunk_size=config.run.chunk_size,
        cache=HeatmapCache(default_cache_dir() / "heatmaps"),
        counter=counter,
    )
    mean = p.dataset.channel_mean() if config.run.fill == "mean" else None
    module = model.module

    @torch.no_grad()
    def forward(x: torch.Tensor) -> torch.Tensor:
        outs = []
        for s in range(0, x.shape[0], config.run.chunk_size):
            o = module(x[s : s + config.run.chunk_size])
            outs.append(o[0] if isinstance(o, (tuple, list)) else o)
            counter.forwards += 1
            counter.forward_rows += min(config.run.chunk_size, x.shape[0] - s)
        return torch.cat(outs)

    t_maps = t_metrics = 0.0
    total = sum(len(b[0]) for b in batches)
    gallery_done = (out_dir / "plots" / "gallery.png").exists()
    with progress_bar(show_progress) as bar:
        task = bar.add_task(f"{config.name} · {mp.ref.label}: {len(mp.cells)} cells", total=total)
        for batch_samples, missing in batches:
            images, truth, ids = _stack(batch_samples)
            images, truth = images.to(dev), truth.to(dev)
            pairs = list(dict.fromkeys((c.explainer, layer_paths[c.layer]) for c in missing))
            t1 = time.perf_counter()
            maps = engine.run(images, list(layer_paths.values()), ground_truth=truth, pairs=pairs, image_keys=[image_key(im) for im in images])
            t2 = time.perf_counter()
            fill = fill_values(images, config.run.fill, mean)
            labels = _labels(batch_samples, dev)
            scored = evaluate_batch(missing, p.metrics, maps, layer_paths, images, truth, fill, forward, config.run.chunk_size, labels)
            t_maps += t2 - t1
            t_metrics += time.perf_counter() - t2
            store.append(_rows(config, scored, ids, done, p.metrics))
            if not gallery_done and mp is p.models[0]:
                named = {(e, l): maps.maps[(e, layer_paths[l])] for e, l in dict.fromkeys((c.explainer, c.layer) for c in missing)}
                plots.gallery(images, truth, named, out_dir / "plots" / "gallery.png")
                gallery_done = True
            bar.update(task, advance=len(ids))
    for key, value in (("heatmaps_s", t_maps), ("metrics_s", t_metrics), ("heatmap_cache_hits", engine.cache.hits), ("heatmaps_computed", len(engine.computed))):
        timings[key] = timings.get(key, 0) + value


def _labels(samples, dev) -> torch.Tensor | None:
    labels = [s.label for s in samples]
    return None if any(l is None for l in labels) else torch.tensor(labels, dtype=torch.long, device=dev)


def _rows(config: Config, scored: list[tuple[Cell, torch.Tensor, torch.Tensor | None]], ids: list[str], done, metrics) -> pd.DataFrame:
    cols: dict[str, list] = {k: [] for k in ("dataset", "model", "explainer", "layer", "threshold", "perturbation", "metric", "image_id", "value", "threshold_value", "direction", "cell_key")}
    for cell, values, thr in scored:
        d = direction(metrics[cell.metric], cell.perturbation)
        for i, image_id in enumerate(ids):
            if (cell.key, image_id) in done:
                continue
            cols["dataset"].append(config.dataset.name)
            cols["model"].append(cell.model)
            cols["explainer"].append(cell.explainer)
            cols["layer"].append(cell.layer)
            cols["threshold"].append(cell.threshold)
            cols["perturbation"].append(cell.perturbation)
            cols["metric"].append(cell.metric)
            cols["image_id"].append(image_id)
            cols["value"].append(float(values[i]))
            cols["threshold_value"].append(float(thr[i]) if thr is not None else float("nan"))
            cols["direction"].append(d)
            cols["cell_key"].append(cell.key)
    return pd.DataFrame(cols)


def _print_top(summary: pd.DataFrame, top: int = 3) -> None:
    from rich.table import Table

    table = Table(title="leaderboard: best cells per metric")
    for c in ("metric", "mode", "rank", "explainer", "layer", "threshold", "mean", "95% CI"):
        table.add_column(c)
    for (metric, pert), block in summary.groupby(["metric", "perturbation"], sort=True, dropna=False):
        block = block.dropna(subset=["mean"])
        if block.empty:
            continue
        block = block.sort_values("mean", ascending=block["direction"].iloc[0] != "higher")
        for i, (_, r) in enumerate(block.head(top).iterrows()):
            table.add_row(metric, pert or "–", str(i + 1), r["explainer"], r["layer"], r["threshold"] or "–", f"{r['mean']:.4f}", f"[{r['ci_low']:.4f}, {r['ci_high']:.4f}]")
    console.print(table)
