"""``xaibench leaderboard``: a leaderboard from run directories, or the committed ones checked
(``--check``), regenerated (``--all``) and indexed (``--index``)."""

from __future__ import annotations

import sys
from pathlib import Path

from xaibench.errors import UserError
from xaibench.report.staleness import TOLERANCE


def add_parser(sub) -> None:
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
    lb.set_defaults(command_function=command)


def command(args) -> int:
    if args.check or args.all:
        return _regenerate(args)
    if args.only or args.runs or args.tolerance is not None:
        raise UserError("--only, --runs and --tolerance go with --check or --all")
    if args.index and not args.paths:
        from xaibench.report import leaderboard_index as index

        changed = index.refresh(args.dir)
        print(f"index: {args.dir / 'README.md'}" + ("" if changed else " (unchanged)"))
        return 0
    if not args.paths:
        raise UserError("give run directories (xaibench leaderboard RUN_DIR... --output FILE), or --check, --all or --index")
    from xaibench.report.publish import copy_plots, render_runs
    from xaibench.runs.results import atomic_write_text

    text = render_runs(args.paths, args.output, args.title)
    if args.output is None:
        sys.stdout.write(text)
        return 0
    atomic_write_text(args.output, text)
    if len(args.paths) == 1:
        copy_plots(args.paths[0], args.output)
    print(f"leaderboard: {args.output}")
    return 0


def _regenerate(args) -> int:
    """``--check`` and ``--all``: regenerate committed leaderboards; 1 if any was stale (``--check``)."""
    from xaibench.report import leaderboard_index as index
    from xaibench.runs import regenerate

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
