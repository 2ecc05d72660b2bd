"""``xaibench layers CONFIG.toml``: a model's layers with their output shapes and channels, to
pick ``[grid] layers`` without reading the model's code.

The model is built as ``xaibench validate`` builds it (no training: a checkpoint's weights, or
initial ones) and run once, with hooks, on the first image of the scored split.
"""

from __future__ import annotations

from pathlib import Path


def add_parser(sub) -> None:
    cmd = sub.add_parser("layers", help="list a model's layers (module paths, aliases, output shapes, channels)")
    cmd.add_argument("config", type=Path)
    cmd.add_argument("--model", default="", help="the label of one model of the config (default: every model)")
    cmd.add_argument("--depth", type=int, default=0, help="only module paths with at most this many dots + 1 parts (0: all)")
    cmd.add_argument("--all", action="store_true", help="also modules whose output is not a feature map")
    cmd.set_defaults(command_function=command)


def command(args) -> int:
    from xaibench.config.parse import load_config

    config = load_config(args.config)
    from xaibench.engine.cache import default_cache_dir
    from xaibench.engine.devices import resolve_device
    from xaibench.errors import UserError, did_you_mean
    from xaibench.models.training import LoadContext
    from xaibench.registry.contracts import first_sample
    from xaibench.runs.model_probe import probe
    from xaibench.runs.runner import plan
    from xaibench.runs.worker import dataset_key

    p = plan(config)
    models = [m for m in p.models if not args.model or m.ref.label == args.model]
    if not models:
        raise UserError(f"--model: {did_you_mean(args.model, [m.ref.label for m in p.models], 'model label')}")
    sample = first_sample(p.dataset, config.split, config.dataset.name, config.source)
    if sample is None:
        raise UserError(f"{config.source}: dataset {config.dataset.name!r} has no images in split {config.split!r} to run the model on")
    ctx = LoadContext(p.dataset, dataset_key(config), resolve_device(config.run.device), default_cache_dir(), show_progress=False)
    for mp in models:
        for line in getattr(mp.plugin, "runs_code", ()):
            print(f"runs code: {line}", flush=True)
        build = getattr(mp.plugin, "structure", None)
        if build is None:
            raise UserError(f"{config.source}: model plugin {mp.ref.name!r} cannot be built without training, so `xaibench layers` cannot list it; run it once, or use model torch_model")
        model = build(ctx)
        pr = probe(model, sample.image)
        print(f"{mp.ref.label} ({mp.ref.name}), {model.task}, on an image of {'x'.join(map(str, sample.image.shape))} (C x H x W):")
        _table(pr, args.depth, args.all)
        if not pr.hookable:
            print("  (TorchScript: its layers run in compiled code that no hook reaches, so only 'output' and 'input' can be explained)")
    return 0


def _table(pr, depth: int, every: bool) -> None:
    rows = [("layer", "alias", "module", "output shape", "channels", "tail")]
    for info in pr.layers:
        if depth and info.path.count(".") + 1 > depth and not info.aliases:
            continue
        if not every and info.channels is None and not info.aliases and info.path and pr.hookable:
            continue
        shape = "x".join(map(str, info.shape)) if info.shape else "-"
        rows.append((info.path or "output", ",".join(info.aliases), info.kind, shape, str(info.channels or "-"), info.tail))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
