"""What ``xaibench validate`` checks of a model before anything runs: the code the config runs,
the grid's layer names, and the grid's cost per image from the layers' channel counts.

Cost model (docs/architecture.md, "Performance model"): per image, one shared forward, one
backward where an explainer needs gradients (about two forwards), K masked full forwards for
Score-CAM and K tail forwards for Ablation-CAM at a layer of K channels (full forwards where the
model cannot be split there), and one forward per threshold x perturbation of each map. Seconds
are measured on this machine with the model's untrained weights (the same cost as trained ones).
Explainers that make their own passes (Captum's, ``Pass.MODEL_PASSES``) are named, not counted.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, field

from xaibench.config.vocabulary import INPUT_LAYER
from xaibench.engine.replay import tail_at
from xaibench.errors import UserError
from xaibench.models.base import LoadedModel, fused_parts
from xaibench.registry.passes import Pass
from xaibench.runs.model_probe import Probe, forward_seconds, probe, tail_seconds

#: a grid whose estimate exceeds this many seconds gets a warning at validate
LONG_S = 600.0
GRADS = Pass.GRADIENTS | Pass.INPUT_GRADIENTS


@dataclass
class Cost:
    """Seconds per image, and what they are made of: (what, forwards per image, seconds)."""

    per_image_s: float = 0.0
    parts: list[tuple[str, int, float]] = field(default_factory=list)
    not_counted: list[str] = field(default_factory=list)

    def add(self, what: str, rows: int, seconds: float) -> None:
        self.parts.append((what, rows, seconds))
        self.per_image_s += seconds


def resolve_layers(model: LoadedModel, layers: tuple[str, ...], where: str, config_path: str) -> dict[str, str]:
    """Module path of each grid layer; an unknown one is one error with the closest names."""
    paths = {}
    for layer in layers:
        try:
            paths[layer] = model.resolve_layer(layer)
        except UserError as exc:
            if not str(exc).startswith("unknown layer"):
                raise UserError(f"{where}: {exc}") from None
            names = list(model.layers) + [p for p, _ in model.module.named_modules() if p]
            wrong = next(p for p in (fused_parts(layer) or [layer]) if p not in names and p not in ("output", INPUT_LAYER))
            close = difflib.get_close_matches(wrong, names, n=3, cutoff=0.5)
            hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
            known = f"aliases: {', '.join(model.layers)}; " if model.layers else ""
            raise UserError(
                f"{where}: layer {wrong!r} is not a module of this model.{hint} ({known}`xaibench layers {config_path}` lists all {len(names)} names)"
            ) from None
    return paths


def _channels(pr: Probe, path: str, image_channels: int) -> int:
    if path == INPUT_LAYER:
        return image_channels
    info = next((i for i in pr.layers if i.path == path), None)
    return info.channels or 1 if info is not None else 1


def estimate(mp, model: LoadedModel, paths: dict[str, str], image, chunk_size: int) -> Cost:
    """Seconds per image of model plan ``mp``'s grid (see the module docstring)."""
    x = image[None].to(model.device)
    tails = {p: t for path in paths.values() for p in (fused_parts(path) or [path]) if p not in ("", INPUT_LAYER) and (t := tail_at(model, p, x)) is not None}
    keep = tuple(dict.fromkeys(e for t in tails.values() for e in t.extra if e != INPUT_LAYER)) + tuple(tails)
    pr = probe(model, image, keep=keep)
    outputs = {**pr.outputs, INPUT_LAYER: x}
    one, row = forward_seconds(model, image, max(1, min(chunk_size, 4)))
    cost = Cost()
    pairs = list(dict.fromkeys((c.explainer, c.layer) for c in mp.cells if c.explainer))
    needs = {n: getattr(e, "needs", Pass.NONE) for n, e in mp.explainers.items()}
    cost.add("shared forward", 1, one)
    if any(needs[e] & GRADS for e, _ in pairs):
        cost.add("backward", 2, 2 * one)
    for name, layer in pairs:
        for base in _with_bases(mp.explainers, name):
            for path in fused_parts(paths[layer]) or [paths[layer]]:
                k = _channels(pr, path, image.shape[0])
                if needs[base] & Pass.MASKED_FORWARDS:
                    cost.add(f"{base}@{layer}", k, k * row)
                if needs[base] & Pass.TAIL_FORWARDS:
                    tail = tails.get(path)
                    per = tail_seconds(tail, outputs[path], outputs, max(1, min(chunk_size, 4))) if tail else row
                    cost.add(f"{base}@{layer}" + (" (tail)" if tail else " (no tail: full forwards)"), k, k * per)
                if needs[base] & Pass.MODEL_PASSES and base not in cost.not_counted:
                    cost.not_counted.append(base)
    perturbed = len({(c.explainer, c.layer, c.threshold, c.perturbation) for c in mp.cells if c.perturbation})
    if perturbed:
        cost.add("perturbed inputs", perturbed, perturbed * row)
    return cost


def _with_bases(explainers: dict, name: str) -> list[str]:
    out = [name]
    for base in getattr(explainers[name], "composes", ()):
        out += [b for b in _with_bases(explainers, base) if b not in out]
    return out


def _duration(s: float) -> str:
    return f"{s:.1f} s" if s < 90 else f"{s / 60:.0f} min" if s < 5400 else f"{s / 3600:.1f} h"


def check_models(p, ctx, image, n_images: int, config_path: str, say: Callable[[str], None], warn: Callable[[str], None]) -> list[str]:
    """For each model of plan ``p``: ``say`` the code it runs (before running it), build it (no
    training), check the grid's layers; return a line per model with the estimate of the grid's
    cost, and ``warn`` about a long one."""
    config = p.config
    lines: list[str] = []
    out = lines.append
    for mp in p.models:
        where = f"{config.source}: model {mp.ref.label!r}"
        for line in getattr(mp.plugin, "runs_code", ()):
            say(f"  {mp.ref.label}: runs code: {line}")
        build = getattr(mp.plugin, "structure", None)
        if build is None or image is None:
            out(f"  {mp.ref.label}: layers are checked when the model loads (model plugin {mp.ref.name!r} is not built without training)")
            continue
        model = build(ctx)
        paths = resolve_layers(model, mp.layers, where, config_path)
        cost = estimate(mp, model, paths, image, config.run.chunk_size)
        reps = len(p.replicates)
        total = cost.per_image_s * n_images * reps
        top = sorted(cost.parts[1:], key=lambda t: -t[2])[:3]
        detail = ", ".join(f"{what} {rows}" for what, rows, _ in top)
        out(
            f"  {mp.ref.label}: ~{_duration(cost.per_image_s)} per image on {ctx.device.type} (forwards per image: {detail or 'one'})"
            f" -> ~{_duration(total)} for {n_images} images" + (f" x {reps} replicates" if reps > 1 else "")
            + (f"; not counted: {', '.join(cost.not_counted)} (their own passes)" if cost.not_counted else "")
        )
        if total > LONG_S and top:
            what, rows, _ = top[0]
            warn(
                f"{where}: this grid will take about {_duration(total)} (~{_duration(cost.per_image_s)} per image); most of it is {what} "
                f"({rows} forwards per image{', one per channel' if '@' in what else ''}): a layer with fewer channels, fewer images "
                "([dataset] n_images) or --device cuda cut it"
            )
    return lines
