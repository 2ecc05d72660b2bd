"""The ``xaibench`` command: run, list, validate, leaderboard.

A user error prints one ``error: ...`` line on stderr and exits 2 (``--debug`` shows the
traceback); nothing is written for it.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path

from xaibench.errors import UserError

KINDS = ("explainers", "metrics", "datasets", "models")


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's own usage errors follow the same one-line contract
        self.print_usage(sys.stderr)
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)


def _names(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if not names:
        raise argparse.ArgumentTypeError(f"{text!r} names no explainer (give NAME[,NAME...])")
    return names


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="xaibench", description="Benchmark explanation methods for segmentation models.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of user errors")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

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

    ls = sub.add_parser("list", help="list registered plugins")
    ls.add_argument("kind", nargs="?", choices=KINDS, default=None)

    val = sub.add_parser("validate", help="check a config against the installed plugins without running it")
    val.add_argument("config", type=Path)

    lb = sub.add_parser("leaderboard", help="(re)generate a markdown leaderboard from run directories")
    lb.add_argument("run_dirs", type=Path, nargs="+")
    lb.add_argument("--output", type=Path, default=None, help="markdown file (default: print to stdout)")
    lb.add_argument("--title", default=None)
    return parser


def _cmd_run(args) -> int:
    from xaibench.config import load_config

    config = load_config(args.config)  # before torch is imported: a bad path or key is reported at once
    from xaibench.runner import run_benchmark

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


def _cmd_list(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from xaibench.plugins import load_registry

    registry = load_registry()
    table = Table(show_header=True)
    for c in ("name", "kind", "distribution", "description"):
        table.add_column(c)
    for kind in [args.kind] if args.kind else KINDS:
        for e in registry.entries(kind):
            doc = (e.cls.__doc__ or "").strip().splitlines()
            table.add_row(e.name, kind[:-1], e.distribution, doc[0] if doc else "")
    Console(width=160).print(table)
    return 0


def _cmd_validate(args) -> int:
    from xaibench.config import load_config

    config = load_config(args.config)  # before torch is imported: a bad path or key is reported at once
    from xaibench.contracts import check_first_samples
    from xaibench.runner import plan

    p = plan(config)
    splits = tuple(p.dataset.fold_splits) if config.run.folds else (config.split,)
    check_first_samples(p.dataset, config.dataset.name, tuple(dict.fromkeys(("train", *splits))), config.source)  # one real sample of each
    run = config.run
    where = f"{config.dataset.name}/{'+'.join(p.dataset.fold_splits)} in {run.folds} folds" if run.folds else f"{config.dataset.name}/{config.split}"
    parts = ([f"{run.folds} folds"] if run.folds else []) + ([f"{len(run.seeds)} seeds"] if run.seeds else [])
    reps = f", {len(p.replicates)} replicates ({' x '.join(parts)}): every model is trained {len(p.replicates)} times" if len(p.replicates) > 1 else ""
    print(f"ok: {args.config}: {len(p.cells)} cells on {where}{reps}")
    for m in p.models:
        print(
            f"  {m.ref.label} ({m.ref.name}): {len(m.explainer_names)} explainers x layers [{', '.join(m.layers)}] x "
            f"{len(config.thresholds())} thresholds x {len(config.grid.perturbations)} perturbations, {len(p.metrics)} metrics "
            f"-> {len(m.cells)} cells"
        )
    return 0


def _aggregates(names: set[str]) -> dict:
    """The dataset statistics of the metrics in a results table that declare one (metrics no
    longer installed fall back to the mean)."""
    from xaibench.plugins import load_registry
    from xaibench.stats import metric_aggregates

    registry = load_registry()
    known = {n: registry.get("metrics", n) for n in names if n in registry.names("metrics")}
    return metric_aggregates(known)


def _copy_plots(run_dir: Path, output: Path) -> list[str]:
    """Copy the run's plots next to ``output`` (into ``<output stem>/``) so the leaderboard file
    and its images can be committed together; returns their links relative to ``output``."""
    import shutil

    pngs = sorted((run_dir / "plots").glob("*.png"))
    if not pngs:
        return []
    dest = output.resolve().parent / output.stem
    dest.mkdir(parents=True, exist_ok=True)
    for old in dest.glob("*.png"):
        if old.name not in {p.name for p in pngs}:
            old.unlink()
    for png in pngs:
        shutil.copyfile(png, dest / png.name)
    return [f"{output.stem}/{png.name}" for png in pngs]


def _cmd_leaderboard(args) -> int:
    import pandas as pd

    from xaibench import leaderboard
    from xaibench.results import ResultStore, atomic_write_text
    from xaibench.stats import replicate_statistics, summarize

    frames = []
    manifest = ResultStore(args.run_dirs[0]).read_manifest() or {}
    seed = int(manifest.get("seed", 0))
    for d in args.run_dirs:
        table = d / "results.parquet"
        if not table.exists():
            raise UserError(f"{str(d)!r} is not a run directory: {table} does not exist")
        frames.append(ResultStore(d).read())
    df = pd.concat(frames, ignore_index=True)
    aggregates = _aggregates(set(df["metric"]))
    per_replicate = replicate_statistics(df, aggregates)
    summary = summarize(df, seed, aggregates, per_replicate)
    title = args.title or ("xaibench leaderboard: " + ", ".join(d.name for d in args.run_dirs))
    plots = _copy_plots(args.run_dirs[0], args.output) if len(args.run_dirs) == 1 and args.output is not None else []
    text = leaderboard.render(df, summary, title, seed, plots, per_replicate)
    if args.output:
        atomic_write_text(args.output, text)
        print(f"leaderboard: {args.output}")
    else:
        sys.stdout.write(text)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    commands = {"run": _cmd_run, "list": _cmd_list, "validate": _cmd_validate, "leaderboard": _cmd_leaderboard}
    try:
        return commands[args.command](args)
    except UserError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
