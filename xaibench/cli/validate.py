"""``xaibench validate CONFIG.toml``: check a config against the installed plugins without running it."""

from __future__ import annotations

from pathlib import Path


def add_parser(sub) -> None:
    val = sub.add_parser("validate", help="check a config against the installed plugins without running it")
    val.add_argument("config", type=Path)
    val.set_defaults(command_function=command)


def command(args) -> int:
    from xaibench.config.parse import load_config

    config = load_config(args.config)  # before torch is imported: a bad path or key is reported at once
    from xaibench.registry.contracts import check_first_samples
    from xaibench.runs.runner import plan

    p = plan(config)
    splits = tuple(p.dataset.fold_splits) if config.run.folds else (config.split,)
    check_first_samples(p.dataset, config.dataset.name, tuple(dict.fromkeys(("train", *splits))), config.source)  # one real sample of each
    from xaibench.runs import budget
    from xaibench.util.progress import warn

    # the size of the scored set, and one of its samples: no image beyond the first is read here
    sizes = [len(p.dataset.split(split)) for split in splits]
    n_images = min(config.n_images, sum(sizes)) if config.n_images and not config.run.folds else sum(sizes)
    first = next((p.dataset.split(split)[0] for split, n in zip(splits, sizes) if n), None)
    budget.check_plan(p, first, n_images, warn)
    run = config.run
    where = f"{config.dataset.name}/{'+'.join(p.dataset.fold_splits)} in {run.folds} folds" if run.folds else f"{config.dataset.name}/{config.split}"
    parts = ([f"{run.folds} folds"] if run.folds else []) + ([f"{len(run.seeds)} seeds"] if run.seeds else [])
    reps = f", {len(p.replicates)} replicates ({' x '.join(parts)}): every model is trained {len(p.replicates)} times" if len(p.replicates) > 1 else ""
    # the models, built without training: the code a config runs is named before it runs
    from xaibench.engine.cache import default_cache_dir
    from xaibench.engine.devices import resolve_device
    from xaibench.models.training import LoadContext
    from xaibench.runs.cost import check_models
    from xaibench.runs.worker import dataset_key

    ctx = LoadContext(p.dataset, dataset_key(config), resolve_device(config.run.device), default_cache_dir(), show_progress=False)
    lines = check_models(p, ctx, first.image if first is not None else None, n_images, str(args.config), lambda line: print(line, flush=True), warn)
    print(f"ok: {args.config}: {len(p.cells)} cells on {where}{reps}")
    for m in p.models:
        print(
            f"  {m.ref.label} ({m.ref.name}): {len(m.explainer_names)} explainers x layers [{', '.join(m.layers)}] x "
            f"{len(config.thresholds())} thresholds"
            + (f" x {len(config.grid.perturbations)} perturbations" if config.grid.perturbations else "")
            + f", {len(p.metrics)} metrics "
            f"-> {len(m.cells)} cells"
        )
    for line in lines:
        print(line)
    return 0
