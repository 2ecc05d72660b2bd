"""The ``xaibench`` command: run, list, validate, layers, leaderboard (one module each in this package).

A user error prints one ``error: ...`` line on stderr and exits 2 (``--debug`` shows the
traceback); nothing is written for it.
"""

from __future__ import annotations

import argparse
import sys
import traceback

from xaibench.cli import layers, leaderboard, listing, validate
from xaibench.cli import run as run_command
from xaibench.engine import cpu_isa
from xaibench.errors import UserError


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's own usage errors follow the same one-line contract
        self.print_usage(sys.stderr)
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="xaibench", description="Benchmark explanation methods for segmentation models.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of user errors")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for command in (run_command, listing, validate, layers, leaderboard):
        command.add_parser(sub)
    return parser


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
    in_main = threading.current_thread() is threading.main_thread()
    before = signal.signal(signal.SIGTERM, _on_sigterm) if in_main else None
    try:
        cpu_isa.pin()  # before anything imports torch: the same kernels, so the same trained models, on every CPU
        return args.command_function(args)
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
