"""Where metrics are computed: one image batch's maps -> tidy rows for the requested cells.

Thresholds are resolved per image (Otsu differs by map), every perturbed input the cells
need is collected into one :class:`~xaibench.engine.perturbation.PerturbationBatch` (duplicates once,
forwards in chunks), then each metric scores its cells.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
from skimage.filters import threshold_otsu

from xaibench.engine.grid import Cell
from xaibench.engine.heatmaps import BatchMaps
from xaibench.engine.perturbation import PerturbationBatch, keep_mask
from xaibench.errors import UserError
from xaibench.metrics.base import MetricContext
from xaibench.registry.contracts import Lending, check_scores, origin


def threshold_values(heatmap: torch.Tensor, label: str) -> torch.Tensor:
    """Per-image thresholds [B] for a threshold label (a number, or ``otsu``)."""
    return thresholds_of({"": heatmap}, [("", label)])[("", label)]


def thresholds_of(heat: Mapping[object, torch.Tensor], wanted: Sequence[tuple[object, str]]) -> dict[tuple[object, str], torch.Tensor]:
    """Per-image thresholds [B] of each (key of ``heat``, threshold label) in ``wanted``. Otsu's
    (scikit-image's, per map; 0.5 for a constant map) reads the maps on the host: all of them in
    one copy, not one per map."""
    otsu = [k for k, label in wanted if label == "otsu"]
    out = {}
    if otsu:
        host = torch.stack([heat[k].detach() for k in otsu]).cpu().numpy()
        for k, maps in zip(otsu, host):
            vals = [float(threshold_otsu(m)) if np.ptp(m) > 0 else 0.5 for m in maps]
            out[(k, "otsu")] = torch.tensor(vals, dtype=heat[k].dtype, device=heat[k].device)
    for k, label in wanted:
        if label != "otsu":
            out[(k, label)] = torch.full((heat[k].shape[0],), float(label), dtype=heat[k].dtype, device=heat[k].device)
    return out


def evaluate_batch(
    cells: Sequence[Cell],
    metrics: Mapping[str, object],
    maps: BatchMaps,
    layer_paths: Mapping[str, str],
    images: torch.Tensor,
    ground_truth: torch.Tensor | None,
    fill: torch.Tensor,
    forward: Callable[[torch.Tensor], torch.Tensor],
    chunk_size: int,
    labels: torch.Tensor | None = None,
    stats: dict[str, float] | None = None,
) -> list[tuple[Cell, torch.Tensor, torch.Tensor | None, dict[str, torch.Tensor] | None]]:
    """Scores of every cell for this batch: (cell, values [B], thresholds [B] or None, counts):
    counts are a pooled metric's per-image counts (name -> float64 [B] on the CPU, NaN for an
    image left out), None for other metrics. ``stats`` (if given) gets ``thresholds_s`` and the
    perturbed rows requested and forwarded (``perturbed_requested``, ``perturbed_forwarded``)."""
    t0 = time.perf_counter()
    heat = {c.pair: maps.maps[(c.explainer, layer_paths[c.layer])] for c in cells if c.explainer}
    thresholds = thresholds_of(heat, list(dict.fromkeys((c.pair, c.threshold) for c in cells if c.threshold)))
    binaries = {(pair, label): heat[pair] >= t[:, None, None] for (pair, label), t in thresholds.items()}

    t1 = time.perf_counter()
    region = maps.target.region
    if region is None and ground_truth is not None:
        region = (ground_truth == maps.target.class_ids.to(ground_truth.device)[:, None, None]).float()
    batch = PerturbationBatch(images, fill, clean_logits=maps.logits)
    for c in cells:
        if c.perturbation:
            key = (c.pair, c.threshold, c.perturbation)
            if key not in batch:
                batch.add(key, keep_mask(c.perturbation, binaries[(c.pair, c.threshold)], region))
    if batch.requested:
        batch.run(forward, chunk_size)
    if stats is not None:
        stats["thresholds_s"] = stats.get("thresholds_s", 0.0) + t1 - t0
        stats["perturbed_requested"] = stats.get("perturbed_requested", 0) + batch.requested
        stats["perturbed_forwarded"] = stats.get("perturbed_forwarded", 0) + batch.unique

    out = []
    lending = Lending()  # the shared tensors fingerprinted once per batch, not per cell
    for c in cells:
        t = thresholds.get((c.pair, c.threshold))
        ctx = MetricContext(
            images=images,
            ground_truth=ground_truth,
            target=maps.target,
            logits=maps.logits,
            heatmap=heat.get(c.pair),  # None for a model-level metric
            forward=forward,
            fill=fill,
            labels=labels,
            threshold=t,
            binary=binaries.get((c.pair, c.threshold)),
            perturbed_logits=batch.result((c.pair, c.threshold, c.perturbation)) if c.perturbation else None,
        )
        values, counts = _compute(metrics[c.metric], c, ctx, lending)
        out.append((c, values.detach().float(), (c.pair, c.threshold) if t is not None else None, counts))
    lending.finish()
    return _to_host(out, thresholds)


def _to_host(out: list, thresholds: dict[tuple, torch.Tensor]) -> list:
    """The cells' values and thresholds on the CPU: one copy of all values, one per threshold
    (a copy per cell would wait for the device once per cell)."""
    on_device = [i for i, (_, v, _, _) in enumerate(out) if v.device.type != "cpu"]  # a pooled metric's are on the CPU already
    moved = dict(zip(on_device, torch.stack([out[i][1] for i in on_device]).cpu())) if on_device else {}
    held = {k: t.detach().cpu() for k, t in thresholds.items()}
    return [(c, moved.get(i, v), None if k is None else held[k], counts) for i, (c, v, k, counts) in enumerate(out)]


LENT = ("images", "ground_truth", "logits", "heatmap", "binary", "perturbed_logits", "threshold", "fill")


def _compute(metric: object, cell: Cell, ctx: MetricContext, lending: Lending) -> tuple[torch.Tensor, dict[str, torch.Tensor] | None]:
    """``metric.compute(ctx)``, checked: a user error names the metric, its distribution and the
    cell; scores must be [B], or a pooled metric's counts (:func:`~xaibench.registry.contracts.check_scores`,
    which returns the values and the counts); no lent tensor may change."""
    where = f"cell {cell.key}"
    with lending.lend(ctx, LENT, f"metric {cell.metric!r} ({origin(metric)})"):
        try:
            values = metric.compute(ctx)
        except (ValueError, UserError) as exc:  # a metric that cannot apply here (no ground truth, a classifier, ...)
            raise UserError(f"metric {cell.metric!r} ({origin(metric)}) on {where}: {exc}") from exc
    return check_scores(values, metric, cell.metric, ctx.images.shape[0], where)
