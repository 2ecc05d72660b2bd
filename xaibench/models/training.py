"""Train-on-first-use for model plugins: a seeded loop with a progress bar, cached by config hash.

No machine here reaches a model hub, so a model plugin without a checkpoint trains itself on
the dataset's train split the first time it is used and caches the weights under
``$XAIBENCH_CACHE/models/`` keyed by a hash of everything that determines them.
"""

from __future__ import annotations

import math
import os
import pickle
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from xaibench.config.hashing import config_hash as config_hash  # public: xaibench.plugin re-exports it
from xaibench.errors import UserError
from xaibench.models.onednn import avoiding_onednn_bug
from xaibench.util.atomic import atomic_write
from xaibench.util.progress import progress_bar, warn


@dataclass
class LoadContext:
    """What a model plugin's ``load`` receives."""

    dataset: Any
    dataset_key: str  #: hash of the dataset plugin's name and parameters
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    cache_dir: Path = field(default_factory=lambda: Path(os.environ.get("XAIBENCH_CACHE", Path.home() / ".cache" / "xaibench")))
    show_progress: bool = True

    def model_path(self, name: str, params: dict) -> Path:
        """Where model plugin ``name`` caches the weights it trains with ``params`` on this
        dataset: ``CACHE/models/NAME-HASH.pt``, the hash of the name, ``params`` and the dataset
        key (:func:`config_hash`); give the values used, not the TOML text, so that an explicit
        default is the same model."""
        return self.cache_dir / "models" / f"{name}-{config_hash(model=name, params=params, dataset=self.dataset_key)}.pt"


def save_atomic(state: dict, path: Path) -> None:
    """``torch.save(state, path)``, atomically (:func:`xaibench.util.atomic.atomic_write`: a crash
    leaves the old file or the new one, never a torn checkpoint under ``path``)."""
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_checkpoint(module: nn.Module, path: str | Path, what: str = "this model") -> None:
    """Load weights saved as a state dict (or {"state_dict": ...}) with ``weights_only=True``.

    Keys under one wrapper prefix (``module.`` from DataParallel, ``model.`` from Lightning) are
    matched without it when that makes them fit exactly. A checkpoint that does not fit is one
    user error naming a few missing, unexpected and mis-shaped keys with their counts.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"checkpoint {str(path)!r} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # torch's text advises weights_only=False: never do that here
        raise UserError(
            f"checkpoint {str(path)!r} cannot be read as torch weights: it is not a file of tensors (pickled objects, possibly code, "
            "or no torch file at all), and xaibench does not load anything else; save the weights with torch.save(model.state_dict(), path)"
        ) from exc
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"checkpoint {str(path)!r} cannot be read as torch weights: {first}") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise UserError(f"checkpoint {str(path)!r} holds {type(state).__name__}, not a state dict of tensors; save it with torch.save(model.state_dict(), path)")
    state = _unwrapped(state, module.state_dict())
    problem = _misfit(state, module.state_dict())
    try:
        if problem:
            raise RuntimeError(problem)
        module.load_state_dict(state)
    except (RuntimeError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise UserError(
            f"checkpoint {str(path)!r} does not fit {what}: {first}; give the settings it was saved with (architecture, encoder, classes, "
            "in_channels, options; `xaibench layers CONFIG` lists this model's modules), or save it with torch.save(model.state_dict(), path)"
        ) from exc


def _unwrapped(state: dict, want: dict) -> dict:
    """``state`` without a wrapper prefix shared by every key, where that makes the keys fit."""
    for prefix in ("module.", "model.", "net.", "_orig_mod."):
        if state and all(k.startswith(prefix) for k in state):
            stripped = {k[len(prefix) :]: v for k, v in state.items()}
            if set(stripped) == set(want):
                return stripped
    return state


def _misfit(state: dict, want: dict, few: int = 3) -> str:
    """What differs between a checkpoint's keys and the model's ('' when they fit)."""

    def listed(keys: list[str]) -> str:
        return ", ".join(keys[:few]) + (f", ... ({len(keys) - few} more)" if len(keys) > few else "")

    missing = [k for k in want if k not in state]
    unexpected = [k for k in state if k not in want]
    shapes = [f"{k} {'x'.join(map(str, state[k].shape))} in the checkpoint, {'x'.join(map(str, want[k].shape))} here" for k in want if k in state and state[k].shape != want[k].shape]
    parts = ([f"{len(missing)} keys missing ({listed(missing)})"] if missing else []) + ([f"{len(unexpected)} unexpected ({listed(unexpected)})"] if unexpected else [])
    parts += [f"{len(shapes)} of another shape ({listed(shapes)})"] if shapes else []
    return "; ".join(parts)


def lr_schedule(opt: torch.optim.Optimizer, schedule: str, lr: float, total_steps: int):
    """The scheduler stepped after every batch (None for a constant rate)."""
    if schedule == "constant":
        return None
    if schedule == "one_cycle":
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(total_steps, 1), pct_start=0.2)
    raise UserError(f"lr schedule {schedule!r} is not one of 'constant', 'one_cycle'")


def _score(module: nn.Module, select: Callable[[nn.Module], float]) -> float:
    module.eval()
    with torch.no_grad():
        score = float(select(module))
    module.train()
    return score if math.isfinite(score) else -math.inf


def batches(samples: Sequence, batch_size: int, generator: torch.Generator):
    order = torch.randperm(len(samples), generator=generator).tolist()
    for s in range(0, len(order), batch_size):
        items = [samples[i] for i in order[s : s + batch_size]]
        yield items


def train_or_load(
    module: nn.Module,
    cache_path: Path,
    train_step: Callable[[nn.Module, list, torch.optim.Optimizer], dict[str, float]],
    samples: Sequence,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    device: torch.device,
    title: str,
    show_progress: bool = True,
    optimizer: Callable[..., torch.optim.Optimizer] | None = None,
    schedule: str = "constant",
    select: Callable[[nn.Module], float] | None = None,
) -> nn.Module:
    """Load ``cache_path`` if present, else train ``module`` with ``train_step`` and save it there.

    ``optimizer(params, lr=lr)`` builds the optimiser (default ``torch.optim.Adam``); pass e.g.
    ``functools.partial(torch.optim.Adam, betas=(0.5, 0.999))`` for other settings.
    ``schedule``: ``"constant"`` (``lr`` throughout) or ``"one_cycle"`` (torch's ``OneCycleLR``
    with peak ``lr``, warm-up over the first 20 % of the steps, annealed to near zero: a recipe
    that converges to the same quality from any seed more often than a constant rate does).
    ``select(module) -> score`` (higher is better, called in eval mode after every epoch, e.g.
    the IoU on the validation split): the weights of the best epoch are kept, not the last.
    """
    if cache_path.is_file():
        try:
            module.load_state_dict(torch.load(cache_path, map_location="cpu", weights_only=True))
            return module.to(device).eval()
        except Exception as exc:  # a stale or torn cache entry: train again, and say why
            reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            warn(f"cached model {cache_path} cannot be loaded ({reason}); training it again")
    if len(samples) == 0:
        raise UserError(f"{title}: the dataset's train split is empty; nothing to train on")
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    module.to(device).train()
    opt = (optimizer or torch.optim.Adam)(module.parameters(), lr=lr)
    sched = lr_schedule(opt, schedule, lr, epochs * -(-len(samples) // batch_size))
    best: tuple[float, dict | None] = (-math.inf, None)
    with progress_bar(show_progress) as bar, avoiding_onednn_bug(module):
        task = bar.add_task(f"training {title}", total=epochs)
        for epoch in range(epochs):
            logs: dict[str, float] = {}
            n = 0
            for items in batches(samples, batch_size, gen):
                out = train_step(module, items, opt)
                if sched is not None:
                    sched.step()
                for k, v in out.items():
                    logs[k] = logs.get(k, 0.0) + v
                n += 1
            text = " ".join(f"{k}={v / max(n, 1):.4f}" for k, v in logs.items())
            if select is not None:
                score = _score(module, select)
                text += f" val={score:.4f}"
                if score >= best[0] or best[1] is None:  # ties: the later epoch (more annealed)
                    best = (score, {k: v.detach().clone() for k, v in module.state_dict().items()})
            bar.update(task, advance=1, description=f"training {title} epoch {epoch + 1}/{epochs} {text}")
    if best[1] is not None:
        module.load_state_dict(best[1])
    module.eval()
    try:
        save_atomic({k: v.detach().cpu() for k, v in module.state_dict().items()}, cache_path)
    except OSError as exc:  # a full or read-only cache costs the next run a training, not this run
        warn(f"cannot cache the trained model at {cache_path} ({exc.strerror or exc}); going on with it in memory (the next run trains it again)")
    return module
