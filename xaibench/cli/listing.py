"""``xaibench list [KIND]``: every registered plugin with the distribution that provides it."""

from __future__ import annotations

KINDS = ("explainers", "metrics", "datasets", "models")


def add_parser(sub) -> None:
    ls = sub.add_parser("list", help="list registered plugins")
    ls.add_argument("kind", nargs="?", choices=KINDS, default=None)
    ls.set_defaults(command_function=command)


def command(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from xaibench.registry.discovery import load_registry

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
