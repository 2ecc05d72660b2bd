"""User-facing errors.

A :class:`UserError` is a mistake the user can fix (bad config, unknown plugin name,
missing data, unreadable image). The CLI prints it as one ``error: ...`` line and exits 2,
without a traceback. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import difflib


class UserError(Exception):
    """A problem in the user's input, reported as one line without a traceback."""


class MissingPackage(UserError):
    """Data (or code) that ships in a Python package that is not installed; the message says
    how to install it (``requirement``, e.g. ``deepforest==2.1.0``). ``xaibench leaderboard
    --check`` and ``--all`` skip a benchmark that stops with it, rather than fail."""

    def __init__(self, message: str, requirement: str = "") -> None:
        super().__init__(message)
        self.requirement = requirement

    def __reduce__(self):
        return (type(self), (str(self), self.requirement))


def did_you_mean(name: str, choices: list[str] | tuple[str, ...], kind: str) -> str:
    """Message for an unknown ``name`` among ``choices``: closest matches, then all of them."""
    close = difflib.get_close_matches(name, choices, n=3, cutoff=0.5)
    msg = f"unknown {kind} {name!r}."
    if close:
        msg += " Did you mean " + " or ".join(repr(c) for c in close) + "?"
    msg += " Available: " + (", ".join(sorted(choices)) if choices else "(none registered)")
    return msg
