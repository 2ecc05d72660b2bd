"""The runner: config -> plugins -> grid -> shared passes per batch -> tidy rows -> summary.

Per model x image batch it asks the heatmap engine for every (explainer, layer) pair the
missing cells need (one forward, one backward where needed, cached maps reused), then the
evaluation step scores every cell with batched perturbations. Rows go to the run directory in
atomic parts; cells already there are skipped (resume).
"""

from __future__ import annotations

import fnmatch
import inspect
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from xaibench.config.parse import Config, ModelRef, instantiate
from xaibench.config.vocabulary import EMPTY_MASK_REFERENCE, MODEL_QUALITY
from xaibench.engine import sanity as sanity_check
from xaibench.engine.capture import PassCounter
from xaibench.engine.devices import cuda_precision, resolve_device
from xaibench.engine.grid import Cell, expand, layers_of
from xaibench.errors import UserError
from xaibench.registry.discovery import Registry, load_registry
from xaibench.report import console as report
from xaibench.report import methods, plots, provenance, publish
from xaibench.report.models import at_chance, ranked_results
from xaibench.report.stats import metric_aggregates, summary_of
from xaibench.runs import budget, model_files
from xaibench.runs.executors import Unit, run_local, run_ray
from xaibench.runs.manifest import run_manifest
from xaibench.runs.replicates import ReplicateData, fold_splits, replicate_data, replicates
from xaibench.runs.results import ResultStore, atomic_write_text
from xaibench.runs.worker import dataset_key
from xaibench.util.progress import progress_bar, warn


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

    #: explainers whose cached maps the workers' engines do not read (``True``: all; ``--fresh``)
    fresh_maps: bool | frozenset[str] = frozenset()
    #: model label -> layer alias -> module path, as the models resolved them (the manifest's ``layers``)
    layer_paths: dict[str, dict[str, str]]

    def __init__(self, config: Config, registry: Registry, sanity: bool = False):
        src = config.source
        self.config = config
        self.registry = registry
        self.layer_paths = {}
        self.metric_names = registry.expand("metrics", config.grid.metrics)
        # every leaderboard opens with the explained model's quality: the model_* metrics join
        # every grid (one clean forward per image, shared with the maps; listing them is allowed)
        self.metric_names += [m for m in MODEL_QUALITY if m not in self.metric_names and m in registry.names("metrics")]
        # a background-inclusive mIoU is shown beside the empty mask's (model-level, from the truth)
        refs = [EMPTY_MASK_REFERENCE[m] for m in self.metric_names if m in EMPTY_MASK_REFERENCE]
        self.metric_names += [m for m in dict.fromkeys(refs) if m not in self.metric_names and m in registry.names("metrics")]
        params = {n: config.metric_params.get(n, {}) for n in self.metric_names}
        for n, ref in EMPTY_MASK_REFERENCE.items():  # the reference scores the images its mIoU scores
            if ref in params and "images" in params.get(n, {}):
                params[ref] = {"images": params[n]["images"], **params[ref]}
        self.metrics = {n: instantiate(registry.get("metrics", n), params[n], f"{src}: [metric_params.{n}]", config.seed) for n in self.metric_names}
        for n in config.metric_params:
            if n not in self.metrics:
                raise UserError(f"{src}: [metric_params.{n}]: {n!r} is not a metric of grid.metrics ({', '.join(self.metric_names)})")
        self.dataset = instantiate(registry.get("datasets", config.dataset.name), config.dataset.params, f"{src}: [dataset]", config.seed)
        if config.run.folds:
            fold_splits(self.dataset, src)
        self.models: list[ModelPlan] = []
        self._seeded: dict[tuple[int, int], Any] = {}
        self.replicates = replicates(config.run.folds, config.run.seeds, config.seed)
        used_explainers: set[str] = set()
        self.loaded_models: set[str] = set()  #: model plugins explainers load for themselves (segx's segmenter)
        for ref in config.models:
            where = f"{src}: [model]" if len(config.models) == 1 else f"{src}: [[models]] {ref.label!r}"
            plugin = instantiate(registry.get("models", ref.name), ref.params, where, config.seed)
            if config.run.seeds:
                self._check_seedable(registry.get("models", ref.name), ref, where)
            names = registry.expand("explainers", ref.explainers or config.grid.explainers)
            explainers: dict[str, Any] = {}
            for n in names:
                self._explainer(explainers, n, ref)
            for n in ref.explainer_params:
                if n not in explainers:
                    raise UserError(f"{where}: explainer_params.{n}: {n!r} is not an explainer of this model ({', '.join(sorted(explainers))})")
            used_explainers |= set(explainers)
            per = layers_of(explainers, names, ref.layers or config.grid.layers, f"{where}" if ref.layers else f"{src}: grid")
            cells = expand(ref.label, names, per, ref.thresholds or config.thresholds(), config.grid.perturbations, self.metrics, src)
            if sanity or config.run.sanity:
                cells += [Cell(ref.label, e, l, "", "", sanity_check.METRIC) for e in names for l in per[e]]
            layers = tuple(dict.fromkeys(l for n in names for l in per[n]))
            self.models.append(ModelPlan(ref, plugin, explainers, names, layers, cells))
        for n in config.explainer_params:
            if n not in used_explainers:
                raise UserError(f"{src}: [explainer_params.{n}]: {n!r} is not an explainer of this benchmark ({', '.join(sorted(used_explainers))})")
        self.cells = [c for m in self.models for c in m.cells]
        #: model label -> fingerprints of the files its weights come from (:mod:`xaibench.runs.model_files`)
        self.model_files = {m.ref.label: model_files.fingerprint(m.plugin) for m in self.models}
        self.used = [("explainers", n) for n in sorted(used_explainers)] + [("metrics", n) for n in self.metrics]
        self.used += [("datasets", config.dataset.name)] + [("models", n) for n in dict.fromkeys([m.ref.name for m in self.models] + sorted(self.loaded_models))]

    def _check_seedable(self, cls: type, ref: ModelRef, where: str) -> None:
        """``[run] seeds`` trains every model once per seed, through its ``seed`` parameter."""
        if "seed" in ref.params:
            raise UserError(f"{where}: seed: the model sets its own seed, which run.seeds replaces; remove one of them")
        if "seed" not in inspect.signature(cls.__init__).parameters:
            raise UserError(f"{where}: model {ref.name!r} has no seed parameter, so run.seeds cannot train it with other seeds")

    def model_plugin(self, index: int, seed: int) -> Any:
        """The plugin instance of model ``index`` that trains with ``seed`` (a replicate's seed)."""
        mp = self.models[index]
        if seed == self.config.seed:
            return mp.plugin
        key = (index, seed)
        if key not in self._seeded:
            where = f"{self.config.source}: [[models]] {mp.ref.label!r}"
            self._seeded[key] = instantiate(self.registry.get("models", mp.ref.name), mp.ref.params, where, seed)
        return self._seeded[key]

    def _explainer(self, into: dict[str, Any], name: str, ref: ModelRef, stack: tuple = ()) -> None:
        """Instantiate explainer ``name`` for model ``ref`` (and the bases it composes): the
        benchmark's ``[explainer_params.NAME]``, overridden key by key by the model's own."""
        if name in into:
            return
        if name in stack:
            raise UserError(f"{self.config.source}: explainer {name!r} composes itself")
        src = self.config.source
        own = ref.explainer_params.get(name)
        where = f"{src}: [explainer_params.{name}]" if own is None else f"{src}: [[models]] {ref.label!r} explainer_params.{name}"
        params = {**self.config.explainer_params.get(name, {}), **(own or {})}
        try:
            cls = self.registry.get("explainers", name)
        except UserError as exc:
            if not stack:
                raise
            raise UserError(f"{src}: explainer {stack[-1]!r} (its [explainer_params.{stack[-1]}] bases) uses {name!r}: {exc}") from None
        inst = instantiate(cls, params, where, self.config.seed)
        into[name] = inst
        for model, model_params in getattr(inst, "loads_models", ()):  # checked now, loaded (trained) when fitted
            try:
                instantiate(self.registry.get("models", model), model_params, f"{where}:", self.config.seed)
            except UserError as exc:
                raise UserError(f"{where}: {exc}" if not str(exc).startswith(src) else str(exc)) from None
            self.loaded_models.add(model)
        for base in getattr(inst, "composes", ()):
            self._explainer(into, base, ref, stack + (name,))


def plan(config: Config, registry: Registry | None = None, sanity: bool = False) -> Plan:
    """Check a config against the installed plugins without running anything (``xaibench validate``)."""
    return Plan(config, registry or load_registry(), sanity)


def run_benchmark(
    config: Config,
    out: str | Path | None = None,
    *,
    fresh: bool = False,
    fresh_maps: Iterable[str] = (),
    device: str | None = None,
    sanity: bool = False,
    executor: str = "local",
    show_progress: bool = True,
    extra_plugins: Iterable[object] = (),
    counter: PassCounter | None = None,
) -> pd.DataFrame:
    """Run (or resume) a benchmark and return its tidy results.

    ``fresh``: start over, recomputing every map too (no cached map is read). ``fresh_maps``:
    explainer names (or patterns): their maps, and those of composites built on them, are
    computed again (and overwrite the cache) and their rows in the run directory are dropped;
    the other rows stay."""
    t0 = time.perf_counter()
    registry = load_registry(extra_plugins)
    if executor not in ("local", "ray"):
        raise UserError(f"--executor {executor!r} is not one of 'local', 'ray'")
    p = plan(config, registry, sanity)
    p.fresh_maps = True if fresh else _fresh_map_names(p, fresh_maps)
    wanted = device or config.run.device
    # with Ray the GPUs are the workers' (the driver loads the models on its CPU)
    dev = torch.device("cuda") if executor == "ray" and wanted == "cuda" else resolve_device(wanted)

    t_data = time.perf_counter()
    data = replicate_data(config, p.dataset, dataset_key(config))
    data_s = time.perf_counter() - t_data
    scored = next((d.samples[0] for d in data if d.samples), None)
    budget.check_plan(p, scored, sum(len(d.samples) for d in data), warn)

    out_dir = Path(out) if out is not None else Path("runs") / config.name
    store = ResultStore(out_dir, default_seed=config.seed)
    created = not out_dir.exists()
    counter = counter or PassCounter()
    timings: dict[str, float] = {"data_s": data_s}
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
            _check_params_unchanged(config, manifest)
            _check_weights_unchanged(p, manifest, out_dir)
            # non-finite counts of the batches scored before a resume still describe the table
            timings.update({k: v for k, v in ((manifest or {}).get("timings") or {}).items() if k.startswith("non_finite_")})
            if p.fresh_maps and p.fresh_maps is not True:
                store.drop_explainers(p.fresh_maps)
            # written before any row, so an interrupted run is still recognised on resume
            store.write_json("manifest.json", run_manifest(config, p, registry, dev, {}, counter, data, None))
            done = store.done()
            units = _units(p, data, done, config.run.batch_size)
            if units:
                with cuda_precision(dev, config.run.tf32):
                    _execute(p, units, data, store, done, dev, counter, timings, show_progress, out_dir, executor)
            df = store.read()
            summary = _write_outputs(p, registry, dev, data, df, store, counter, timings, t0)
    except UserError:
        if created and not store.has_results():
            shutil.rmtree(out_dir, ignore_errors=True)
        raise
    report.warn_empty_metrics(summary)
    report.warn_non_finite(timings)
    if show_progress:
        report.print_top(summary)
    chance = at_chance(summary)
    if chance and config.run.chance == "error":  # the table and leaderboard are written: nothing is lost
        model, why = next(iter(chance.items()))
        raise UserError(f"{config.source}: model {model!r} is at chance ({why}); [run] chance = 'error' refuses to rank its explanations (results kept in {out_dir})")
    return df


def _write_outputs(p: Plan, registry: Registry, dev, data: list[ReplicateData], df: pd.DataFrame, store: ResultStore, counter: PassCounter, timings: dict, t0: float) -> pd.DataFrame:
    """The run directory's summary, plots, leaderboard and final manifest, from the table ``df``;
    returns the summary."""
    config, out_dir = p.config, store.out
    t1 = time.perf_counter()
    aggregates = metric_aggregates(p.metrics)
    summary, per_replicate = summary_of(df, config.seed, aggregates)
    atomic_write_text(out_dir / "summary.csv", summary.to_csv(index=False))
    plot_paths = plots.threshold_curves(summary, out_dir / "plots")
    plot_paths += plots.replicate_spread(per_replicate, out_dir / "plots")
    scores = methods.method_scores(ranked_results(df, summary, config.run.chance), config.seed, aggregates)  # the CD diagrams' and the leaderboard's
    plot_paths += plots.cd_diagrams(scores, out_dir / "plots")
    rel = [str(pp.relative_to(out_dir)) for pp in plot_paths]
    if (out_dir / "plots" / "gallery.png").exists():
        rel.append("plots/gallery.png")
    timings["summary_s"] = time.perf_counter() - t1
    timings["total_s"] = time.perf_counter() - t0
    manifest = run_manifest(config, p, registry, dev, timings, counter, data, len(df))
    board, title = out_dir / "leaderboard.md", f"{config.name} leaderboard"
    facts = [provenance.run_facts(out_dir, manifest, board)]
    text = publish.compose(df, summary, per_replicate, config.seed, title, rel, facts, board, report.non_finite_notes(timings), config.run.chance, aggregates, manifest.get("layers"), scores)
    atomic_write_text(board, text)
    store.write_json("manifest.json", manifest)
    return summary


def _fresh_map_names(p: Plan, patterns: Iterable[str]) -> frozenset[str]:
    """The explainers ``--fresh-maps`` names (names or patterns such as ``"*grad*"``) and the
    composites built on them: those whose maps are computed again."""
    patterns = list(patterns)
    known = sorted({n for mp in p.models for n in mp.explainers})
    for pat in patterns:
        if not fnmatch.filter(known, pat):
            raise UserError(f"--fresh-maps: {pat!r} names no explainer of this benchmark; its explainers: {', '.join(known)}")
    out: set[str] = set()
    for mp in p.models:
        def built_on(name: str, explainers=mp.explainers) -> bool:
            return any(fnmatch.fnmatchcase(name, pat) for pat in patterns) or any(built_on(b) for b in getattr(explainers[name], "composes", ()))

        out |= {n for n in mp.explainers if built_on(n)}
    return frozenset(out)


def _gallery_extras(explainers: dict[str, Any], images: torch.Tensor) -> dict[str, torch.Tensor]:
    """The images explainers make for the gallery (``gallery_image``), each shown once: a second
    explainer with the same image (e.g. SegX variants sharing a segmenter) adds no column."""
    extras: dict[str, torch.Tensor] = {}
    for name, e in explainers.items():
        make = getattr(e, "gallery_image", None)
        if callable(make):
            image = make(images)
            if not any(x.shape == image.shape and torch.equal(x, image) for x in extras.values()):
                extras[f"{name}:\n{getattr(e, 'gallery_title', 'its image')}"] = image
    return extras


def _check_params_unchanged(config: Config, manifest: dict | None) -> None:
    """Resuming with other parameters for an explainer or metric already in the table would mix
    two definitions under one name: refuse, naming the first difference."""
    if not manifest:
        return
    old = manifest.get("config", {})
    before_models = {m.get("label"): m.get("explainer_params") or {} for m in old.get("models", [])}
    for ref in config.models:
        if ref.label in before_models:  # a new model has no rows to mix with
            where = lambda name, label=ref.label: f"[[models]] {label!r} explainer_params.{name}"  # noqa: E731
            _refuse_changed(config, where, before_models[ref.label], ref.explainer_params, lambda name: True)
    for table in ("explainer_params", "metric_params"):
        before, now = old.get(table, {}) or {}, getattr(config, table)
        # a table added or removed matters only for a name the earlier run used
        _refuse_changed(
            config, lambda name, table=table: f"[{table}.{name}]", before, now,
            lambda name, before=before, now=now: name in before and name in now or _used_before(old, name),
        )


def _check_weights_unchanged(p: Plan, manifest: dict | None, out_dir: Path) -> None:
    """Resuming after a model's checkpoint (or other weight file) changed would keep the old
    model's rows under the new one's name: refuse, naming the model and the file."""
    if not manifest or "model_files" not in manifest:
        return
    diff = model_files.changed(manifest["model_files"], p.model_files)
    if diff:
        label, path = diff
        raise UserError(
            f"{p.config.source}: model {label!r}: {path!r} has changed since the results in {str(out_dir)!r} were made "
            "(its rows are of the previous weights); use --fresh to score the new weights, or --out for another directory"
        )


def _refuse_changed(config: Config, where: Callable[[str], str], before: dict, now: dict, matters: Callable[[str], bool]) -> None:
    """A user error for the first name whose parameters differ between ``before`` and ``now``
    and ``matters(name)``; ``where(name)`` names its table in the message."""
    for name in sorted(set(before) | set(now)):
        if before.get(name) != now.get(name) and matters(name):
            raise UserError(
                f"{config.source}: {where(name)} differs from the run in this directory "
                f"({before.get(name, {})} before, {now.get(name, {})} now); use --fresh or another --out"
            )


def _used_before(old_config: dict, name: str) -> bool:
    grid = old_config.get("grid", {})
    models = old_config.get("models", [])
    return name in grid.get("explainers", ()) or name in grid.get("metrics", ()) or any(name in m.get("explainers", ()) for m in models)


def _units(p: Plan, data: list[ReplicateData], done: set, batch_size: int) -> list[Unit]:
    """Work units: each model x replicate x image batch that still has missing (cell, image) pairs."""
    units = []
    for index, mp in enumerate(p.models):
        for r, d in enumerate(data):
            rep, image_ids = (d.replicate.fold_label, d.replicate.seed), d.image_ids
            for start in range(0, len(d.samples), batch_size):
                ids = image_ids[start : start + batch_size]
                missing = [c.key for c in mp.cells if any((c.key, i, *rep) not in done for i in ids)]
                if missing:
                    units.append(Unit(index, list(range(start, start + len(ids))), missing, r))
    return units


def _execute(p: Plan, units, data: list[ReplicateData], store: ResultStore, done, dev, counter, timings, show_progress, out_dir: Path, executor: str) -> None:
    gallery = out_dir / "plots" / "gallery.png"
    run = run_ray if executor == "ray" else run_local
    total = sum(len(u.sample_indices) for u in units)
    reps = f" x {len(data)} replicates" if len(data) > 1 else ""
    images = len({i for d in data for i in d.image_ids})
    with progress_bar(show_progress) as bar:
        task = bar.add_task(f"{p.config.name}: {len(p.cells)} cells x {images} images{reps}", total=total)
        for unit, result, worker in run(p, units, data, done, dev, counter, show_progress):
            t = time.perf_counter()
            store.append(result.rows)
            timings["write_s"] = timings.get("write_s", 0.0) + time.perf_counter() - t
            for k, v in result.timings.items():
                timings[k] = timings.get(k, 0) + v
            if worker is not None:
                p.layer_paths.setdefault(worker.mp.ref.label, dict(worker.layer_paths))
                timings[f"model_load_s[{worker.mp.ref.label}{worker.replicate_suffix}]"] = worker.load_s
                if worker.fitted:
                    timings[f"explainer_fit_s[{worker.mp.ref.label}{worker.replicate_suffix}]"] = worker.fit_s
            if result.maps is not None and not gallery.exists() and unit.model_index == 0:
                batch = [data[unit.replicate].samples[i] for i in unit.sample_indices]
                paths = worker.layer_paths
                named = {(e, l): result.maps.maps[(e, paths[l])] for e in worker.mp.explainer_names for l in worker.mp.layers if (e, paths[l]) in result.maps.maps}
                images = torch.stack([s.image for s in batch])
                extras = _gallery_extras(worker.explainers, images)
                plots.gallery(images, torch.stack([s.mask for s in batch]), named, gallery, extras=extras)
            bar.update(task, advance=len(unit.sample_indices))
