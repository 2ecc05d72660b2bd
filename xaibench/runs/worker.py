"""The per-batch work of a benchmark: one model loaded, maps and scores for image batches.

A :class:`BatchWorker` holds one loaded model, its heatmap engine and the batched forward used
by perturbation metrics. The local executor runs one in-process; the Ray executor runs one per
Ray actor. Both call :meth:`BatchWorker.process` with a batch of samples and the cells still
missing for it, and get tidy rows back.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import pandas as pd
import torch

from xaibench.config.hashing import stable_hash
from xaibench.config.parse import Config
from xaibench.config.vocabulary import LOWER
from xaibench.engine import sanity as sanity_check
from xaibench.engine.cache import HeatmapCache, default_cache_dir, image_key
from xaibench.engine.capture import PassCounter
from xaibench.engine.evaluation import evaluate_batch
from xaibench.engine.grid import Cell
from xaibench.engine.heatmaps import BatchMaps, HeatmapEngine
from xaibench.engine.perturbation import fill_values
from xaibench.engine.targets import TargetSpec
from xaibench.errors import UserError
from xaibench.explainers.fitting import FitContext, fit_explainers, model_loader
from xaibench.metrics.base import direction
from xaibench.models.base import LoadedModel, logits_of
from xaibench.models.training import LoadContext
from xaibench.registry.contracts import check_sample
from xaibench.runs.replicates import ReplicateData
from xaibench.runs.results import COLUMNS as ROW_COLUMNS
from xaibench.runs.results import COUNTS, encode_counts


@dataclass
class BatchResult:
    rows: pd.DataFrame
    maps: BatchMaps | None = None  # kept for the gallery (local executor only)
    timings: dict[str, float] = field(default_factory=dict)


def target_spec(config: Config) -> TargetSpec:
    return TargetSpec(region=config.run.target, class_id=None if config.run.class_id < 0 else config.run.class_id)


def dataset_key(config: Config) -> str:
    return stable_hash({"name": config.dataset.name, "params": config.dataset.params, "seed": config.seed})


@dataclass
class WorkerState:
    """What a worker of one model x replicate needs that loading or training makes: the model,
    the explainers (with the networks fitted for them), and the dataset's channel mean. The driver
    makes it once and ships it to Ray actors, so no worker reads the driver's disk or trains."""

    model: LoadedModel
    explainers: dict
    fitted: dict
    mean: torch.Tensor | None
    load_s: float = 0.0
    fit_s: float = 0.0

    def networks(self) -> list[torch.nn.Module]:
        """The model's module and every network the explainers are or hold (what is shipped and moved)."""
        held = [v for e in self.explainers.values() for v in [e, *getattr(e, "__dict__", {}).values()]]
        return [self.model.module] + [v for v in held if isinstance(v, torch.nn.Module)]


def replicate_suffix(plan, replicate) -> str:
    """`` (fold 2, seed 1)`` where the plan has replicates, else empty (names timings and shipments)."""
    return f" ({replicate.describe()})" if len(plan.replicates) > 1 else ""


def load_state(plan, model_index: int, data: ReplicateData, device: torch.device, show_progress: bool = False) -> WorkerState:
    """Load (or train on a cache miss) model ``model_index`` of ``plan`` for ``data``'s replicate,
    and fit the explainers that need a network of their own on its training images."""
    mp, seed = plan.models[model_index], data.replicate.seed
    t = time.perf_counter()
    ctx = LoadContext(dataset=data.dataset, dataset_key=data.dataset_key, device=device, cache_dir=default_cache_dir(), show_progress=show_progress)
    model = plan.model_plugin(model_index, seed).load(ctx)
    load_s = time.perf_counter() - t
    # explainers with a network of their own train it on this replicate's training images
    # (and one whose network is a model plugin, segx's segmenter, loads it as the models are)
    fit = FitContext(**vars(ctx), seed=seed, model=model, title=f"for {mp.ref.label}{replicate_suffix(plan, data.replicate)}", load_model=model_loader(plan.registry, ctx, seed))
    explainers, fitted, fit_s = fit_explainers(mp.explainers, fit)
    mean = data.dataset.channel_mean() if plan.config.run.fill == "mean" else None
    return WorkerState(model, explainers, fitted, mean, load_s, fit_s)


class BatchWorker:
    """Maps and scores of image batches for one model of a plan (``state``: what
    :func:`load_state` made, shipped from elsewhere; without it the worker loads its own)."""

    def __init__(self, plan, model_index: int, data: ReplicateData, device: torch.device, show_progress: bool = False, counter: PassCounter | None = None, state: WorkerState | None = None):
        self.plan = plan
        self.config: Config = plan.config
        self.mp = plan.models[model_index]
        self.replicate = data.replicate
        self.device = device
        self.counter = counter or PassCounter()
        state = state or load_state(plan, model_index, data, device, show_progress)
        self.state = state
        self.model, self.explainers, self.fitted, self.mean = state.model, state.explainers, state.fitted, state.mean
        self.load_s, self.fit_s = state.load_s, state.fit_s
        self.layer_paths = {l: self.model.resolve_layer(l) for l in self.mp.layers}
        run = self.config.run
        self.engine = HeatmapEngine(
            self.model,
            self.explainers,
            target=target_spec(self.config),
            chunk_size=run.chunk_size,
            cache=HeatmapCache(default_cache_dir() / "heatmaps"),
            counter=self.counter,
            fitted=self.fitted,
            recompute=getattr(plan, "fresh_maps", ()),  # --fresh: all; --fresh-maps: those named
        )
        self.random_engine: HeatmapEngine | None = None
        self.forward_s = 0.0  #: time in :meth:`forward` (perturbed inputs), for the manifest's timings

    @property
    def replicate_suffix(self) -> str:
        """`` (fold 2, seed 1)`` where the run has replicates, else empty (names timings)."""
        return replicate_suffix(self.plan, self.replicate)

    @torch.inference_mode()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of any inputs, in chunks of ``[run] chunk_size``."""
        n = self.config.run.chunk_size
        t = time.perf_counter()
        outs = []
        for s in range(0, x.shape[0], n):
            o = self.model.module(x[s : s + n])
            outs.append(logits_of(o))
            self.counter.forwards += 1
            self.counter.forward_rows += min(n, x.shape[0] - s)
        out = torch.cat(outs)
        self.forward_s += time.perf_counter() - t
        return out

    def process(self, samples: list, missing: list[Cell], done: set | frozenset = frozenset()) -> BatchResult:
        """Rows for the ``missing`` cells on ``samples`` ((cell, image, fold, seed) in ``done`` are left out)."""
        config, dev, paths = self.config, self.device, self.layer_paths
        n = getattr(self.plan.dataset, "num_classes", 2)
        for s in samples:
            check_sample(s, config.dataset.name, n, self.replicate.describe())
        images = torch.stack([s.image for s in samples]).to(dev)
        truth = torch.stack([s.mask for s in samples]).to(dev)
        ids = [s.image_id for s in samples]
        labels = None if any(s.label is None for s in samples) else torch.tensor([s.label for s in samples], device=dev)
        pairs = list(dict.fromkeys((c.explainer, paths[c.layer]) for c in missing if c.explainer))  # model-level cells need no map
        computed, hits, rejected = len(self.engine.computed), self.engine.cache.hits, self.engine.cache.rejected
        t1 = time.perf_counter()
        maps = self.engine.run(images, list(paths.values()), ground_truth=truth, pairs=pairs, image_keys=[image_key(im) for im in images])
        t2 = time.perf_counter()
        fill = fill_values(images, config.run.fill, self.mean)
        regular = [c for c in missing if c.metric != sanity_check.METRIC]
        stats: dict[str, float] = {}
        forward_s = self.forward_s
        scored = evaluate_batch(regular, self.plan.metrics, maps, paths, images, truth, fill, self.forward, config.run.chunk_size, labels, stats)
        self.counter.perturbed_requested += int(stats.pop("perturbed_requested", 0))
        self.counter.perturbed_forwarded += int(stats.pop("perturbed_forwarded", 0))
        scored += self._sanity([c for c in missing if c.metric == sanity_check.METRIC], images, truth, maps)
        scored, non_finite = self._blank_non_finite(scored, maps, ids)
        t3 = time.perf_counter()
        forwards = self.forward_s - forward_s
        thresholds = stats.get("thresholds_s", 0.0)
        timings = {
            "heatmaps_s": t2 - t1,
            "metrics_s": t3 - t2,  # = the three below, and the sanity check's maps
            "thresholds_s": thresholds,  # Otsu and fixed thresholds, binarising
            "perturbed_forwards_s": forwards,  # every forward of a perturbed input (the metrics' own included)
            "metric_arithmetic_s": max(0.0, t3 - t2 - forwards - thresholds),
            "heatmaps_computed": len(self.engine.computed) - computed,  # counts for this batch only: the runner sums them
            "heatmap_cache_hits": self.engine.cache.hits - hits,
            "heatmap_cache_rejected": self.engine.cache.rejected - rejected,  # entries on disk that failed their checks
            **non_finite,
        }
        return BatchResult(self._rows(scored, ids, done), maps, timings)

    def _blank_non_finite(self, scored: list, maps: BatchMaps, ids: list[str]) -> tuple[list, dict[str, int]]:
        """A model output or map with NaN/inf on an image makes every score of it on that image
        NaN (an empty prediction would otherwise score, e.g. an IoU drop of 0.0), so no table
        ranks it; returns the scores and the counts per model (``[run] non_finite = "error"``: stop)."""
        bad_out = ~torch.isfinite(maps.logits.detach()).flatten(1).all(1).cpu()
        bad_map = {p: ~torch.isfinite(m).flatten(1).all(1).cpu() for p, m in maps.maps.items()}
        n_maps = int(sum(int(b.sum()) for b in bad_map.values()))
        if not bad_out.any() and not n_maps:
            return scored, {}
        label = self.mp.ref.label
        if self.config.run.non_finite == "error":
            first = ids[int(bad_out.nonzero()[0])] if bad_out.any() else next(ids[int(b.nonzero()[0])] for b in bad_map.values() if b.any())
            what = "outputs" if bad_out.any() else "maps"
            raise UserError(f"model {label!r}{self.replicate_suffix}: non-finite (NaN or inf) {what} on image {first!r}; [run] non_finite = \"error\" stops here")
        out = []
        for cell, values, thr, counts in scored:
            bad = bad_out | (bad_map.get((cell.explainer, self.layer_paths[cell.layer]), torch.zeros_like(bad_out)) if cell.explainer else False)
            if bad.any():
                values = torch.as_tensor(values).detach().cpu().double().clone()
                values[bad] = float("nan")
            out.append((cell, values, thr, counts))
        return out, {f"non_finite_outputs[{label}]": int(bad_out.sum()), f"non_finite_maps[{label}]": n_maps}

    def _sanity(self, checks: list[Cell], images, truth, maps: BatchMaps) -> list:
        if not checks:
            return []
        if self.random_engine is None:
            run = self.config.run
            self.random_engine = HeatmapEngine(
                sanity_check.randomized_copy(self.model, self.config.seed),
                self.explainers,
                target=target_spec(self.config),
                chunk_size=run.chunk_size,
                fitted=self.fitted,
            )
        pairs = [(c.explainer, self.layer_paths[c.layer]) for c in checks]
        # the randomised model explains the same region as the trained one, so only the model differs
        rnd = self.random_engine.run(images, list(self.layer_paths.values()), ground_truth=truth, pairs=pairs, target=maps.target.region)
        return [(c, sanity_check.rank_correlation(maps.maps[p], rnd.maps[p]), None, None) for c, p in zip(checks, pairs)]

    def _rows(self, scored, ids: list[str], done) -> pd.DataFrame:
        config = self.config
        fold, seed = self.replicate.fold_label, self.replicate.seed
        cols: dict[str, list] = {k: [] for k in ROW_COLUMNS}
        for cell, values, thr, counts in scored:
            texts = _count_texts(counts, len(ids))
            if cell.metric == sanity_check.METRIC:
                d = LOWER
            else:
                d = direction(self.plan.metrics[cell.metric], cell.perturbation)
            for i, image_id in enumerate(ids):
                if (cell.key, image_id, fold, seed) in done:
                    continue
                for k, v in (
                    ("dataset", config.dataset.name), ("model", cell.model), ("explainer", cell.explainer),
                    ("layer", cell.layer), ("threshold", cell.threshold), ("perturbation", cell.perturbation),
                    ("metric", cell.metric), ("image_id", image_id), ("value", float(values[i])),
                    ("threshold_value", float(thr[i]) if thr is not None else float("nan")), ("direction", d),
                    ("cell_key", cell.key), ("fold", fold), ("seed", seed), (COUNTS, texts[i]),
                ):
                    cols[k].append(v)
        return pd.DataFrame(cols)


def _count_texts(counts: dict[str, torch.Tensor] | None, n: int) -> list[str]:
    """Each image's counts as the ``counts`` column's text; empty without counts or for an image left out."""
    if counts is None:
        return [""] * n
    table = torch.stack(list(counts.values()), 1)  # [n, names]
    left_out = table.isnan().any(1).tolist()
    return ["" if out else encode_counts(dict(zip(counts, row))) for out, row in zip(left_out, table.tolist())]
