"""Provenance footers: what produced a leaderboard, written into it and read back from it.

Every leaderboard ends with a ``## Provenance`` section: per run directory, the benchmark, its
config (linked relative to the file), the config hash, the xaibench, plugin and torch versions,
the device and when the run finished, and the commands that check and regenerate the file. The
same facts follow as JSON in an HTML comment (invisible on GitHub), which
``xaibench leaderboard --check``, ``--all`` and ``--index`` read back
(:func:`read`); :func:`body` is the file without the section, the part ``--check`` compares.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

HEADING = "## Provenance"
_COMMENT = re.compile(r"<!-- xaibench-provenance (\{.*?\}) -->", re.S)
_CORE = {"python", "torch", "torchvision", "segmentation-models-pytorch", "timm", "numpy", "pandas", "pyarrow", "scipy", "pluggy", "torchmetrics"}


@dataclass(frozen=True)
class RunFacts:
    """One run directory's part of a leaderboard's provenance (from its ``manifest.json``)."""

    name: str  #: the run directory's name (model labels are prefixed with it when runs are merged)
    benchmark: str
    config: str  #: the config file, relative to the leaderboard file ("" if unknown)
    config_hash: str
    identity: str
    dataset: str
    models: list[str]
    rows: int
    device: str
    finished: str
    description: str = ""
    versions: dict[str, str] = field(default_factory=dict)
    cpu: str = ""  #: the host's CPU model and torch's vector capability ("" in files made before it was recorded)
    cpu_isa: str = ""  #: the kernel instruction-set variables in force (xaibench.engine.cpu_isa; "" when the CPU chose)

    def plugins(self) -> dict[str, str]:
        """The versions of the plugin distributions the run used (everything but xaibench and its stack)."""
        return {k: v for k, v in self.versions.items() if k not in _CORE and k != "xaibench"}


@dataclass(frozen=True)
class Provenance:
    title: str
    runs: list[RunFacts]


def _relative(path: Path, to_dir: Path) -> str:
    return Path(os.path.relpath(path.resolve(), to_dir.resolve())).as_posix()


def run_facts(run_dir: Path, manifest: dict, output: Path | None, config_path: Path | None = None) -> RunFacts:
    """Facts of one run; ``config_path`` (default: the manifest's ``source``, relative to the
    working directory) is written relative to ``output``'s folder."""
    config = manifest.get("config", {})
    source = config_path or Path(manifest.get("source", ""))
    where = output.parent if output is not None else Path.cwd()
    models = [m.get("label") or m.get("name", "") for m in config.get("models", [])]
    return RunFacts(
        name=run_dir.name,
        benchmark=manifest.get("benchmark", ""),
        config=_relative(source, where) if source.is_file() else "",
        config_hash=manifest.get("config_hash", ""),
        identity=manifest.get("identity", ""),
        dataset=config.get("dataset", {}).get("name", ""),
        models=models,
        rows=int(manifest.get("rows") or 0),
        device=manifest.get("device", ""),
        finished=manifest.get("finished") or "",
        description=config.get("description", ""),
        versions=dict(manifest.get("versions", {})),
        cpu=manifest.get("cpu", ""),
        cpu_isa=manifest.get("cpu_isa", ""),
    )


def commands(output: Path | None, runs: list[RunFacts], title: str) -> list[str]:
    """The commands that check and regenerate ``output`` (paths as written: relative to the
    working directory the leaderboard was made in)."""
    if output is None or not all(r.config for r in runs):
        return []
    out = output.as_posix()
    configs = [(Path(os.path.relpath(output.parent / r.config))).as_posix() for r in runs]
    steps = [f"xaibench run {c} --out runs/{r.name}" for c, r in zip(configs, runs)]
    steps.append(f"xaibench leaderboard {' '.join('runs/' + r.name for r in runs)} --output {out} --title {json.dumps(title)}")
    lines = [f"Check: `xaibench leaderboard --check {out}`", ""]
    if len(runs) == 1 and output.stem == runs[0].name:
        lines.append(f"Regenerate: `xaibench leaderboard --all --only {output.stem} --dir {output.parent.as_posix()}`, or by hand:")
    else:
        lines.append("Regenerate:")
    lines += ["", "```console", *steps, "```"]
    return lines


def _device(r: RunFacts) -> str:
    cpu = "; ".join(x for x in (r.cpu, r.cpu_isa) if x)
    return f"{r.device or '–'} ({cpu})" if cpu else (r.device or "–")


def render(prov: Provenance, output: Path | None) -> str:
    """The ``## Provenance`` section (readable table, commands, and the JSON comment)."""
    rows = []
    for r in prov.runs:
        config = f"[`{Path(r.config).name}`]({r.config})" if r.config else "–"
        plugins = ", ".join(f"{k} {v}" for k, v in sorted(r.plugins().items())) or "–"
        rows.append(
            f"| {r.name} | {r.benchmark} | {config} | `{r.config_hash[:12]}` | {r.versions.get('xaibench', '–')} | {plugins} | "
            f"{r.versions.get('torch', '–')} | {_device(r)} | {r.finished or '–'} |"
        )
    header = "| run | benchmark | config | config hash | xaibench | plugins | torch | device | finished |"
    payload = json.dumps({"format": 1, "title": prov.title, "runs": [asdict(r) for r in prov.runs]}, sort_keys=True).replace("-->", "--\\u003e")
    out = [HEADING, "", header, "|" + "---|" * 9, *rows]
    cmds = commands(output, prov.runs, prov.title)
    if cmds:
        out += ["", *cmds]
    out += ["", f"<!-- xaibench-provenance {payload} -->"]
    return "\n".join(out) + "\n"


def read(text: str) -> Provenance | None:
    """The provenance written into a leaderboard's text, or ``None`` if it has none (or a broken one)."""
    found = _COMMENT.search(text)
    if not found:
        return None
    try:
        data = json.loads(found.group(1))
        return Provenance(title=data["title"], runs=[RunFacts(**r) for r in data["runs"]])
    except (ValueError, KeyError, TypeError):
        return None


def body(text: str) -> str:
    """The leaderboard without its provenance section (what two generations must agree on)."""
    at = text.find("\n" + HEADING + "\n")
    return text if at < 0 else text[: at + 1]
