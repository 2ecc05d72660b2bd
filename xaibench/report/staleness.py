"""Is a committed leaderboard still what its benchmark produces? Text compared with a float tolerance.

Two generations of a leaderboard are compared line by line, without their provenance
sections (dates, versions and devices differ between machines; :mod:`xaibench.report.provenance`).
Lines are aligned on their *skeleton* (the line with every number replaced by ``#``), so a
moved value shows as one changed row and a reordered ranking as removed and added rows. Within
aligned lines every integer (counts, ranks, ``n``) and every word must be equal, and decimal
numbers may differ by at most ``tolerance`` (default :data:`TOLERANCE`: one unit in the last
digit of the 4-decimal means and CIs, which float noise between machines can flip when a value
sits on a rounding boundary). ``tolerance=0`` compares the text exactly. Two rows of a ranking
whose values are within the tolerance of each other but swap places are reported as moved.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field

from xaibench.report.provenance import body

TOLERANCE = 1e-4
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?")
_SHOWN = 40  #: changed lines shown in a report; the rest are counted


@dataclass
class Change:
    section: str  #: the ``##`` / ``###`` headings above the lines
    old: list[str]
    new: list[str]


@dataclass
class Comparison:
    changes: list[Change] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  #: provenance differences that make the file stale
    hints: list[str] = field(default_factory=list)  #: what may explain a stale file (shown, not a reason)
    skipped: str = ""  #: why the file was not regenerated (a package its data ships in is missing); not stale

    @property
    def stale(self) -> bool:
        return bool(self.changes or self.notes)

    def report(self, name: str, tolerance: float) -> str:
        """A short diff: the sections, then ``-`` committed and ``+`` regenerated lines."""
        if self.skipped:
            return f"{name}: skipped: {self.skipped}"
        if not self.stale:
            return f"{name}: up to date (numbers within {tolerance:g})"
        moved = sum(max(len(c.old), len(c.new)) for c in self.changes)
        reasons = ([f"{moved} line(s) differ beyond {tolerance:g}"] if moved else []) + self.notes
        out = [f"{name}: stale: " + "; ".join(reasons)]
        shown, section = 0, None
        for c in self.changes:
            if shown >= _SHOWN:
                break
            if c.section != section:  # one heading for the changes of a section
                out.append(f"  in {c.section or '(header)'}:")
                section = c.section
            for sign, lines in (("-", c.old), ("+", c.new)):
                for line in lines[: _SHOWN - shown]:
                    out.append(f"    {sign} {line}")
            shown += max(len(c.old), len(c.new))
        if moved > shown:
            out.append(f"  ... and {moved - shown} more line(s)")
        out += [f"  note: {h}" for h in self.hints]
        return "\n".join(out)


def skeleton(line: str) -> str:
    return _NUMBER.sub("#", line)


def _numbers_agree(a: str, b: str, tolerance: float) -> bool:
    if tolerance <= 0:
        return a == b
    if skeleton(a) != skeleton(b):
        return False
    for x, y in zip(_NUMBER.findall(a), _NUMBER.findall(b)):
        decimal = "." in x or "." in y or "e" in x.lower() or "e" in y.lower()
        if (x != y) if not decimal else abs(float(x) - float(y)) > tolerance + 1e-9:
            return False
    return True


def _sections(lines: list[str]) -> list[str]:
    """For each line, the headings it sits under (``## A / ### B``)."""
    out, h2, h3 = [], "", ""
    for line in lines:
        if line.startswith("## "):
            h2, h3 = line[3:], ""
        elif line.startswith("### "):
            h3 = line[4:]
        out.append(h2 + (f" / {h3}" if h3 else ""))
    return out


def compare(committed: str, regenerated: str, tolerance: float = TOLERANCE) -> Comparison:
    """The changes between a committed leaderboard and a regeneration (provenance excluded)."""
    old, new = body(committed).rstrip("\n").splitlines(), body(regenerated).rstrip("\n").splitlines()
    where = _sections(old)
    matcher = difflib.SequenceMatcher(a=[skeleton(l) for l in old], b=[skeleton(l) for l in new], autojunk=False)
    result = Comparison()
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op != "equal":
            result.changes.append(Change(where[i1] if i1 < len(old) else (where[-1] if where else ""), old[i1:i2], new[j1:j2]))
            continue
        run: Change | None = None
        for i, j in zip(range(i1, i2), range(j1, j2)):
            if _numbers_agree(old[i], new[j], tolerance):
                run = None
                continue
            if run is None or run.section != where[i]:
                run = Change(where[i], [], [])
                result.changes.append(run)
            run.old.append(old[i])
            run.new.append(new[j])
    return result
