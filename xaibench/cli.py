"""The ``xaibench`` command: run, list, validate, leaderboard.

A user error prints one ``error: ...`` line on stderr and exits 2 (``--debug`` shows the
traceback); nothing is written for it.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path

from xaibench import cpu_isa
from xaibench.errors import UserError
from xaibench.staleness import TOLERANCE

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

    lb = sub.add_parser(
        "leaderboard",
        help="make a markdown leaderboard from run directories, or check / regenerate the committed ones",
        description=(
            "xaibench leaderboard RUN_DIR... [--output FILE]: one leaderboard (several run directories of one benchmark rank together); "
            "--check [FILE.md...]: regenerate committed leaderboards and compare (exit 1 with a diff when stale); "
            "--all: regenerate the stale ones and the index; --index: regenerate DIR/README.md's index table."
        ),
    )
    lb.add_argument("paths", type=Path, nargs="*", metavar="PATH", help="run directories; with --check: leaderboard files (default: all in --dir)")
    lb.add_argument("--output", type=Path, default=None, help="markdown file (default: print to stdout)")
    lb.add_argument("--title", default=None)
    mode = lb.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="regenerate and compare; change nothing (exit 0 up to date, 1 stale)")
    mode.add_argument("--all", action="store_true", help="regenerate every committed leaderboard that is stale, with its plots, and the index")
    lb.add_argument("--index", action="store_true", help="regenerate the index table in DIR/README.md (with --check: only check it)")
    lb.add_argument("--only", nargs="+", default=[], metavar="NAME", help="with --check or --all: only DIR/NAME.md")
    lb.add_argument("--dir", type=Path, default=Path("leaderboard"), help="the committed leaderboards (default: leaderboard)")
    lb.add_argument("--runs", type=Path, default=None, help="keep the regenerated runs in RUNS/<run name> (replaced); default: a temporary folder")
    lb.add_argument("--tolerance", type=float, default=None, help=f"largest difference of a decimal number that is not a change (default {TOLERANCE:g}; 0: exact text)")
    lb.add_argument("--quiet", action="store_true", help="no progress bars")
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
    from xaibench import budget
    from xaibench.progress import warn

    # the size of the scored set, and one of its samples: no image beyond the first is read here
    sizes = [len(p.dataset.split(split)) for split in splits]
    n_images = min(config.n_images, sum(sizes)) if config.n_images and not config.run.folds else sum(sizes)
    first = next((p.dataset.split(split)[0] for split, n in zip(splits, sizes) if n), None)
    budget.check_plan(p, first, n_images, warn)
    run = config.run
    where = f"{config.dataset.name}/{'+'.join(p.dataset.fold_splits)} in {run.folds} folds" if run.folds else f"{config.dataset.name}/{config.split}"
    parts = ([f"{run.folds} folds"] if run.folds else []) + ([f"{len(run.seeds)} seeds"] if run.seeds else [])
    reps = f", {len(p.replicates)} replicates ({' x '.join(parts)}): every model is trained {len(p.replicates)} times" if len(p.replicates) > 1 else ""
    print(f"ok: {args.config}: {len(p.cells)} cells on {where}{reps}")
    for m in p.models:
        print(
            f"  {m.ref.label} ({m.ref.name}): {len(m.explainer_names)} explainers x layers [{', '.join(m.layers)}] x "
            f"{len(config.thresholds())} thresholds"
            + (f" x {len(config.grid.perturbations)} perturbations" if config.grid.perturbations else "")
            + f", {len(p.metrics)} metrics "
            f"-> {len(m.cells)} cells"
        )
    return 0


def _cmd_leaderboard(args) -> int:
    if args.check or args.all:
        return _cmd_regenerate(args)
    if args.only or args.runs or args.tolerance is not None:
        raise UserError("--only, --runs and --tolerance go with --check or --all")
    if args.index and not args.paths:
        from xaibench import index

        changed = index.refresh(args.dir)
        print(f"index: {args.dir / 'README.md'}" + ("" if changed else " (unchanged)"))
        return 0
    if not args.paths:
        raise UserError("give run directories (xaibench leaderboard RUN_DIR... --output FILE), or --check, --all or --index")
    from xaibench.publish import copy_plots, render_runs
    from xaibench.results import atomic_write_text

    text = render_runs(args.paths, args.output, args.title)
    if args.output is None:
        sys.stdout.write(text)
        return 0
    atomic_write_text(args.output, text)
    if len(args.paths) == 1:
        copy_plots(args.paths[0], args.output)
    print(f"leaderboard: {args.output}")
    return 0


def _cmd_regenerate(args) -> int:
    """``--check`` and ``--all``: regenerate committed leaderboards; 1 if any was stale (``--check``)."""
    from xaibench import index, regenerate

    if args.output or args.title:
        raise UserError("--output and --title go with run directories, not with --check or --all")
    tolerance = TOLERANCE if args.tolerance is None else args.tolerance
    if tolerance < 0:
        raise UserError(f"--tolerance {tolerance:g} is negative")
    if args.all and args.paths:
        raise UserError("--all regenerates every leaderboard in --dir; name some with --only NAME, not as paths")
    if args.check and args.index:
        if args.paths or args.only:
            raise UserError("--check --index checks only the index; leave out the leaderboard files")
        stale = index.refresh(args.dir, write=False)
        print(f"index: {args.dir / 'README.md'}: " + ("stale: regenerate it with `xaibench leaderboard --index`" if stale else "up to date"))
        return int(stale)
    files = args.paths or regenerate.select(args.dir, args.only)
    if args.all:
        index.refresh(args.dir, write=False)  # a README without index markers fails now, not after the runs
    sources = [regenerate.source(f) for f in files]  # every file's benchmark is found before the first (long) run
    stale = 0
    with regenerate.runs_folder(args.runs) as runs:
        for f, src in zip(files, sources):
            outcome = regenerate.check(src, runs, tolerance, show_progress=not args.quiet)
            first, *rest = outcome.comparison.report(str(f), tolerance).split("\n")
            print("\n".join([f"{first} [{outcome.seconds:.0f} s]", *rest]), flush=True)  # the time on the verdict's line
            if outcome.comparison.stale and args.all:
                regenerate.write(outcome)
                print(f"  regenerated {f}")
            stale += outcome.comparison.stale
    if args.all:
        print(f"index: {args.dir / 'README.md'}" + ("" if index.refresh(args.dir) else " (unchanged)"))
        return 0
    if not args.paths and not args.only and index.refresh(args.dir, write=False):
        print(f"index: {args.dir / 'README.md'}: stale: regenerate it with `xaibench leaderboard --index`")
        stale += 1
    return 1 if stale else 0


class _Terminated(KeyboardInterrupt):
    """SIGTERM, turned into the same orderly stop as Ctrl-C."""


def _on_sigterm(signum, frame):
    raise _Terminated()


def _io_error(exc: OSError) -> str:
    """One line for a failed read or write: what, where, and what to do."""
    import errno

    where = f" on {str(exc.filename)!r}" if exc.filename else ""
    todo = {
        errno.ENOSPC: "free some space",
        errno.EDQUOT: "free some space",
        errno.EACCES: "make it writable (or choose another --out / XAIBENCH_CACHE)",
        errno.EPERM: "make it writable (or choose another --out / XAIBENCH_CACHE)",
        errno.EROFS: "choose a writable place (--out / XAIBENCH_CACHE)",
    }.get(exc.errno, "check the path")
    return f"{exc.strerror or exc}{where}; {todo}, then rerun the same command (what was written is kept and resumes)"


def main(argv: list[str] | None = None) -> int:
    import signal
    import threading

    args = build_parser().parse_args(argv)
    commands = {"run": _cmd_run, "list": _cmd_list, "validate": _cmd_validate, "leaderboard": _cmd_leaderboard}
    in_main = threading.current_thread() is threading.main_thread()
    before = signal.signal(signal.SIGTERM, _on_sigterm) if in_main else None
    try:
        cpu_isa.pin()  # before anything imports torch: the same kernels, so the same trained models, on every CPU
        return commands[args.command](args)
    except UserError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a full disk, a read-only folder: the user's to fix, not a crash
        if args.debug:
            traceback.print_exc()
        print(f"error: {_io_error(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        print("error: interrupted; rerun the same command to resume", file=sys.stderr)
        return 143 if isinstance(exc, _Terminated) else 130
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, before)


if __name__ == "__main__":
    sys.exit(main())
