"""Where results are written: the run directory's tidy table, in atomic parts, under a lock.

``parts/part-*.parquet`` are written one per image batch (temporary file, fsync, rename), and
``results.parquet`` is rewritten the same atomic way after each part, so a kill -9 at any
moment leaves a readable table. Resume reads the parts: a (cell, image) already there is not
computed again.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from xaibench.errors import UserError

FIXED_COLUMNS = ["dataset", "model", "explainer", "layer", "threshold", "perturbation", "metric", "image_id", "value"]
COLUMNS = FIXED_COLUMNS + ["threshold_value", "direction", "cell_key"]
SCHEMA = pa.schema(
    [(c, pa.string()) for c in FIXED_COLUMNS[:-1]]
    + [("value", pa.float64()), ("threshold_value", pa.float64()), ("direction", pa.string()), ("cell_key", pa.string())]
)
OUTPUTS = ("results.parquet", "summary.csv", "leaderboard.md", "manifest.json", "parts", "plots")


def atomic_write(path: Path, write) -> None:
    """Call ``write(tmp_path)`` then rename the temporary file over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


class ResultStore:
    """The run directory."""

    def __init__(self, out: Path | str):
        self.out = Path(out)
        self.parts = self.out / "parts"
        self.table = self.out / "results.parquet"

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Exclusive use of the run directory; a second concurrent run fails with a clear error."""
        self.out.mkdir(parents=True, exist_ok=True)
        path = self.out / ".lock"
        f = open(path, "a+")
        try:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.seek(0)
                holder = f.read().strip() or "another process"
                raise UserError(f"run directory {str(self.out)!r} is in use by another xaibench run ({holder}); wait for it or use --out") from None
            f.seek(0)
            f.truncate()
            f.write(f"pid {os.getpid()}")
            f.flush()
            yield
        finally:
            f.close()  # closing releases the lock (so does the process dying)

    def clear(self) -> None:
        """Remove everything xaibench wrote here (``--fresh``)."""
        for name in OUTPUTS:
            p = self.out / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()

    def has_results(self) -> bool:
        return self.parts.is_dir() and any(self.parts.glob("part-*.parquet"))

    def read(self) -> pd.DataFrame:
        """All rows written so far (from the parts; the consolidated table is a convenience copy)."""
        files = sorted(self.parts.glob("part-*.parquet")) if self.parts.is_dir() else []
        if not files:
            return pd.DataFrame({c: pd.Series(dtype="float64" if c in ("value", "threshold_value") else "object") for c in COLUMNS})
        tables = []
        for f in files:
            try:
                tables.append(pq.read_table(f, schema=SCHEMA))
            except (OSError, pa.ArrowInvalid):
                continue  # a part that never finished its rename cannot be here; anything else foreign is skipped
        return pa.concat_tables(tables).to_pandas() if tables else self.read_empty()

    def read_empty(self) -> pd.DataFrame:
        return SCHEMA.empty_table().to_pandas()

    def done(self) -> set[tuple[str, str]]:
        """(cell key, image id) pairs already in the table."""
        df = self.read()
        return set(zip(df["cell_key"], df["image_id"]))

    def append(self, rows: pd.DataFrame) -> None:
        """Write one part atomically, then refresh ``results.parquet`` atomically."""
        if rows.empty:
            return
        table = pa.Table.from_pandas(rows[COLUMNS], schema=SCHEMA, preserve_index=False)
        self.parts.mkdir(parents=True, exist_ok=True)
        n = len(list(self.parts.glob("part-*.parquet")))
        part = self.parts / f"part-{n:06d}-{uuid.uuid4().hex[:8]}.parquet"
        atomic_write(part, lambda tmp: pq.write_table(table, tmp))
        self.consolidate()

    def consolidate(self) -> None:
        df = self.read()
        table = pa.Table.from_pandas(df[COLUMNS], schema=SCHEMA, preserve_index=False)
        atomic_write(self.table, lambda tmp: pq.write_table(table, tmp))

    def write_json(self, name: str, data: dict) -> None:
        atomic_write_text(self.out / name, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")

    def read_manifest(self) -> dict | None:
        path = self.out / "manifest.json"
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            return None
