"""The grid: explainer x layer x threshold x perturbation x metric, as cells with stable keys.

A metric that uses no threshold gets threshold ``""``; one with no perturbation gets
perturbation ``""``; one with a fixed perturbation (IoU drop) gets that mode whatever the
grid's perturbation axis says. Thresholds are text in results (``"0.1"``, ``"otsu"``).
A metric with ``uses_map = False`` (a model-level metric: classifier accuracy, say) reads no
map, so it gets ONE cell per model, with explainer, layer, threshold and perturbation ``""``.
A pixel attribution explains the input, not a layer: it gets the layer ``input`` only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from xaibench.config.vocabulary import INPUT_LAYER
from xaibench.errors import UserError
from xaibench.explainers.base import explains_input


def threshold_label(t: float | str) -> str:
    return t if isinstance(t, str) else f"{t:g}"


def uses_map(metric: object) -> bool:
    """Whether a metric reads a heatmap (default) or only the model's output (``uses_map = False``)."""
    return bool(getattr(metric, "uses_map", True))


@dataclass(frozen=True, order=True)
class Cell:
    model: str
    explainer: str
    layer: str
    threshold: str
    perturbation: str
    metric: str

    @property
    def key(self) -> str:
        return "|".join((self.model, self.explainer, self.layer, self.threshold, self.perturbation, self.metric))

    @property
    def pair(self) -> tuple[str, str]:
        return (self.explainer, self.layer)


def layers_of(explainers: Mapping[str, object], names: Sequence[str], layers: Sequence[str], source: str = "<config>") -> dict[str, tuple[str, ...]]:
    """Each explainer's layers: the grid's, or ``("input",)`` for a pixel attribution (it
    explains the input, so a grid's layers axis gives it one cell)."""
    out = {}
    for name in names:
        if explains_input(explainers[name], explainers):
            out[name] = (INPUT_LAYER,)
        elif INPUT_LAYER in layers:
            raise UserError(f"{source}: layers: {INPUT_LAYER!r} is the input image, which only pixel attributions explain; {name!r} explains a layer (pixel attributions get layer 'input' by themselves)")
        else:
            out[name] = tuple(layers)
    return out


def expand(
    model: str,
    explainers: Sequence[str],
    layers: Sequence[str] | Mapping[str, Sequence[str]],
    thresholds: Sequence[float | str],
    perturbations: Sequence[str],
    metrics: Mapping[str, object],
    source: str = "<config>",
) -> list[Cell]:
    """All cells of the grid, in a stable order."""
    labels = [threshold_label(t) for t in thresholds]
    cells: list[Cell] = []
    for mname, metric in metrics.items():
        ts = labels if metric.uses_threshold else [""]
        if metric.uses_threshold and not ts:
            raise UserError(f"{source}: grid.thresholds: metric {mname!r} binarises maps, so give thresholds or threshold_sweep")
        mode = metric.perturbation
        if not uses_map(metric):
            if metric.uses_threshold or mode:
                raise UserError(f"{source}: metric {mname!r} reads no map (uses_map = False), so it can use neither a threshold nor a perturbation")
            cells.append(Cell(model, "", "", "", "", mname))
            continue
        if mode and not metric.uses_threshold:
            raise UserError(f"{source}: metric {mname!r} perturbs the input but uses no threshold; a perturbation needs a binarised map")
        if mode == "cell":
            if not perturbations:
                raise UserError(f"{source}: grid.perturbations: metric {mname!r} needs at least one perturbation mode")
            modes = list(perturbations)
        else:
            modes = [mode or ""]
        for e in explainers:
            for l in layers[e] if isinstance(layers, Mapping) else layers:
                for t in ts:
                    for p in modes:
                        cells.append(Cell(model, e, l, t, p, mname))
    return cells
