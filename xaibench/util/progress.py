"""rich progress bars, silenced when not wanted (tests, --quiet, no terminal)."""

from __future__ import annotations

from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(stderr=True)


def warn(text: str) -> None:
    """``warning: TEXT`` on stderr, as written (no markup), wrapped by the terminal only."""
    console.print(f"warning: {text}", markup=False, highlight=False, soft_wrap=True)


class _Silent:
    def add_task(self, *a, **k):
        return 0

    def update(self, *a, **k):
        pass

    def advance(self, *a, **k):
        pass


@contextmanager
def progress_bar(enabled: bool = True):
    if not enabled:
        yield _Silent()
        return
    with Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    ) as bar:
        yield bar
