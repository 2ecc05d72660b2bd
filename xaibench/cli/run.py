"""``xaibench run CONFIG.toml``: run (or resume) a benchmark into its run directory."""

from __future__ import annotations

import argparse
from pathlib import Path


def _names(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if not names:
        raise argparse.ArgumentTypeError(f"{text!r} names no explainer (give NAME[,NAME...])")
    return names


def add_parser(sub) -> None:
    run = sub.add_parser("run", help="run (or resume) a benchmark from a TOML config")
    run.add_argument("config", type=Path)
    run.add_argument("--out", type=Path, default=None, help="run directory (default: runs/<benchmark name>/)")
    run.add_argument("--fresh", action="store_true", help="discard earlier results in the run directory and start over, recomputing every map")
    run.add_argument(
        "--fresh-maps",
        type=_names,
        default=(),
        metavar="NAMES",
        help="comma-separated explainers (patterns allowed) whose cached maps are recomputed and whose rows are computed again; the other rows stay",
    )
    run.add_argument("--device", choices=("cpu", "cuda"), default=None, help="overrides [run] device")
    run.add_argument(
        "--executor",
        choices=("local", "ray"),
        default="local",
        help="where the grid runs: this process, or a Ray cluster (local one unless RAY_ADDRESS is set)",
    )
    run.add_argument("--sanity", action="store_true", help="also run the model-randomisation sanity check (Adebayo et al. 2018)")
    run.add_argument("--quiet", action="store_true", help="no progress bars or closing table")
    run.set_defaults(command_function=command)


def command(args) -> int:
    from xaibench.config.parse import load_config

    config = load_config(args.config)  # before torch is imported: a bad path or key is reported at once
    from xaibench.runs.runner import run_benchmark

    out = args.out or Path("runs") / config.name
    run_benchmark(
        config,
        out=out,
        fresh=args.fresh,
        fresh_maps=args.fresh_maps,
        device=args.device,
        sanity=args.sanity,
        executor=args.executor,
        show_progress=not args.quiet,
    )
    print(f"results: {out / 'results.parquet'}\nleaderboard: {out / 'leaderboard.md'}")
    return 0
