"""The files a model's weights come from, fingerprinted, so that a resumed run never mixes the
rows of two different models under one label.

A run directory keeps its rows across runs of the same config (adding explainers or metrics
resumes into the table). A config names a checkpoint by its path, so retraining the model into
the same file leaves the config unchanged: without this check the next ``xaibench run`` would
keep the old model's rows and report them as the new model's. Each model's files are hashed
before anything runs and recorded in the run's manifest; a resume whose files differ is refused.

A model plugin may say which files its weights come from with an optional method
``weight_files() -> list of paths`` (``torch_model``: the checkpoint, the TorchScript file, the
factory's source); otherwise its ``checkpoint`` attribute is used where it has one.
"""

from __future__ import annotations

from pathlib import Path

from xaibench.config.hashing import content_hash


def weight_files(plugin: object) -> list[str]:
    """The paths the plugin's weights are read from (may be empty: trained, cached by config)."""
    own = getattr(plugin, "weight_files", None)
    if callable(own):
        return [str(p) for p in own() if p]
    checkpoint = getattr(plugin, "checkpoint", "")
    return [str(checkpoint)] if isinstance(checkpoint, (str, Path)) and str(checkpoint) else []


def fingerprint(plugin: object) -> dict[str, str]:
    """Path -> 16 hex digits of the file's content (``"missing"`` where there is no such file;
    loading the model then says what is wrong)."""
    out = {}
    for path in weight_files(plugin):
        p = Path(path).expanduser()
        out[path] = content_hash(p.read_bytes())[:16] if p.is_file() else "missing"
    return out


def changed(before: dict[str, dict[str, str]], now: dict[str, dict[str, str]]) -> tuple[str, str] | None:
    """The first (model label, path) whose fingerprint differs between a run directory's
    manifest (``before``) and this run (``now``), for the models in both; None if none."""
    for label in sorted(set(before) & set(now)):
        for path in sorted(set(before[label]) | set(now[label])):
            if before[label].get(path) != now[label].get(path):
                return label, path
    return None
