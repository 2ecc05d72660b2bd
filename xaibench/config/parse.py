"""Benchmark configuration: a TOML file read with tomllib into frozen dataclasses.

Every error names the file, the key and what is allowed. Plugin parameters (the keys of
``[dataset]``, ``[model]`` and ``[explainer_params.NAME]`` besides ``name``) are checked
against the plugin class's constructor by :func:`check_plugin_params`.

Layout::

    [benchmark]  name, seed, description
    [dataset]    name, split ("test"), n_images (0 = all), + the dataset plugin's parameters
    [model]      name, + the model plugin's parameters
    [[models]]   instead of [model], several: name, label, explainers, layers, + parameters
    [grid]       explainers, layers, thresholds | threshold_sweep, perturbations, metrics
    [run]        batch_size, chunk_size, fill, target, class_id, device, tf32, non_finite, sanity,
                 folds, seeds (replicates: K-fold cross-validation, training seeds) (all optional)
    [explainer_params.NAME] / [metric_params.NAME]                 (optional)
"""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from xaibench.config.hashing import stable_hash
from xaibench.config.params import check_plugin_params, instantiate  # noqa: F401 (their home is config.params)
from xaibench.config.vocabulary import DEVICES, FILLS, SPLITS, TARGETS
from xaibench.config.vocabulary import MODES as PERTURBATIONS
from xaibench.errors import UserError

NON_FINITE = ("warn", "error")


@dataclass(frozen=True)
class PluginRef:
    name: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelRef(PluginRef):
    """A model of the benchmark: plugin name, parameters, the label it gets in results, and
    optional per-model ``explainers`` / ``layers`` that replace the grid's for this model, and
    ``explainer_params`` that override the benchmark's for this model."""

    label: str = ""
    explainers: tuple[str, ...] = ()
    layers: tuple[str, ...] = ()
    #: explainer -> parameters, overriding ``[explainer_params.NAME]`` key by key for this model
    explainer_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: thresholds that replace the grid's for this model (e.g. one for binary composite masks)
    thresholds: tuple[float | str, ...] = ()


@dataclass(frozen=True)
class Grid:
    explainers: tuple[str, ...]
    layers: tuple[str, ...]
    thresholds: tuple[float | str, ...]
    perturbations: tuple[str, ...]
    metrics: tuple[str, ...]
    threshold_sweep: int = 0


@dataclass(frozen=True)
class RunOptions:
    batch_size: int = 8
    chunk_size: int = 16
    fill: str = "zero"
    target: str = "predicted"
    device: str = "cpu"
    sanity: bool = False
    class_id: int = -1  #: the class explained; -1: class 1 for segmentation, the predicted class for classifiers
    tf32: bool = False  #: let CUDA convolutions and matmuls use TF32 (faster, ~1e-3 relative error)
    non_finite: str = "warn"  #: a model output or map with NaN/inf: "warn" (its rows are NaN, unranked) or "error"
    chance: str = "warn"  #: a model at chance: "warn" (its explanations listed apart), "error" (refuse the run) or "rank"
    folds: int = 0  #: K-fold cross-validation over the dataset's fold pool; 0 = no folds
    seeds: tuple[int, ...] = ()  #: train every model once per seed; () = once, with [benchmark] seed
    ray_cpus_per_worker: float = 1.0  #: --executor ray: CPUs each actor takes (one actor per this many CPUs)
    ray_gpus_per_worker: float = 1.0  #: --executor ray --device cuda: GPUs each actor takes (0.5: two actors share one)


#: the [run] keys whose values are a fixed set; every key, its type and default are RunOptions' fields
_RUN_ALLOWED = {"fill": FILLS, "target": TARGETS, "device": DEVICES, "non_finite": NON_FINITE, "chance": ("warn", "error", "rank")}


@dataclass(frozen=True)
class Config:
    name: str
    seed: int
    dataset: PluginRef
    models: tuple[ModelRef, ...]
    grid: Grid
    run: RunOptions = RunOptions()
    split: str = "test"
    n_images: int = 0
    description: str = ""
    explainer_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    metric_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    source: str = "<config>"

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("source")
        for m in d["models"]:  # written only where given, so configs without it hash as before
            if not m["thresholds"]:
                m.pop("thresholds")
        for key in ("non_finite", "chance"):  # likewise, at their defaults
            if d["run"][key] == "warn":
                d["run"].pop(key)
        for key in ("ray_cpus_per_worker", "ray_gpus_per_worker"):
            if d["run"][key] == 1.0:
                d["run"].pop(key)
        return d

    def hash(self) -> str:
        """Hash of the whole configuration."""
        return stable_hash(self.as_dict())

    def identity(self) -> str:
        """Hash of what determines the model and the images (all but the grid and the run's speed knobs).

        Results of two configs with the same identity can share a run directory: adding
        explainers, thresholds or metrics to a config resumes into the same table.
        """
        d = self.as_dict()
        for k in ("grid", "description", "explainer_params", "metric_params"):
            d.pop(k)
        # a model's explainers, layers and explainer parameters are its part of the grid (blanked,
        # not dropped, so that the identities of configs without them stay what they were)
        d["models"] = [{**{k: v for k, v in m.items() if k not in ("explainer_params", "thresholds")}, "explainers": (), "layers": ()} for m in d["models"]]
        d["run"] = {"fill": self.run.fill, "target": self.run.target, "class_id": self.run.class_id}
        # the fold split decides which model scores which image; seeds are not here: a new seed
        # adds replicates beside the earlier ones, as a new model adds rows beside the others
        if self.run.folds:
            d["run"]["folds"] = self.run.folds
        return stable_hash(d)

    def thresholds(self) -> tuple[float | str, ...]:
        """Explicit thresholds plus the sweep's, in order, without repeats."""
        values = list(self.grid.thresholds)
        n = self.grid.threshold_sweep
        values += [round((i + 1) / (n + 1), 6) for i in range(n)]
        return tuple(dict.fromkeys(values))


def _thresholds(reader: _Reader, raw: list) -> list[float | str]:
    """A ``thresholds`` list: numbers in [0, 1] (as floats) or ``"otsu"``."""
    out: list[float | str] = []
    for t in raw:
        if t == "otsu" or (isinstance(t, (int, float)) and not isinstance(t, bool) and 0 <= t <= 1):
            out.append(t if t == "otsu" else float(t))
        else:
            raise reader.fail("thresholds", f"{t!r} is not allowed; a threshold is a number in [0, 1] or 'otsu'")
    return out


class _Reader:
    """Typed access to one TOML table, with errors that name file and key."""

    def __init__(self, source: str, table: dict, prefix: str):
        self.source, self.table, self.prefix = source, table, prefix
        self.used: set[str] = set()

    def fail(self, key: str, msg: str) -> UserError:
        return UserError(f"{self.source}: {self.prefix}.{key}: {msg}")

    def get(self, key: str, kind: type | tuple, default: Any = ..., allowed: tuple | None = None) -> Any:
        self.used.add(key)
        if key not in self.table:
            if default is ...:
                raise UserError(f"{self.source}: missing key {self.prefix}.{key}")
            return default
        value = self.table[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
            names = " or ".join(k.__name__ for k in kinds)
            raise self.fail(key, f"expected {names}, got {type(value).__name__} {value!r}")
        if allowed is not None and value not in allowed:
            raise self.fail(key, f"{value!r} is not allowed; allowed: {', '.join(map(repr, allowed))}")
        return value

    def str_list(self, key: str, default: Any = ..., allowed: tuple | None = None) -> tuple[str, ...]:
        value = self.get(key, list, default)
        for v in value:
            if not isinstance(v, str):
                raise self.fail(key, f"expected a list of strings, found {v!r}")
            if allowed is not None and v not in allowed:
                raise self.fail(key, f"{v!r} is not allowed; allowed: {', '.join(map(repr, allowed))}")
        if not value and default is ...:
            raise self.fail(key, "must not be empty")
        return tuple(value)

    def rest(self) -> dict[str, Any]:
        return {k: v for k, v in self.table.items() if k not in self.used}

    def no_rest(self, allowed: tuple[str, ...]) -> None:
        extra = sorted(set(self.table) - self.used)
        if extra:
            raise self.fail(extra[0], f"unknown key; allowed keys of [{self.prefix}]: {', '.join(allowed)}")


def parse_config(data: dict, source: str = "<config>") -> Config:
    """Validate a parsed TOML document and build a :class:`Config`."""
    _check_tables(data, source)
    name, seed, description = _benchmark(_Reader(source, data["benchmark"], "benchmark"))
    d = _Reader(source, data["dataset"], "dataset")
    dataset_name = d.get("name", str)
    split = d.get("split", str, "test", SPLITS)
    n_images = d.get("n_images", int, 0)
    if n_images < 0:
        raise d.fail("n_images", "must be >= 0 (0 = the whole split)")
    dataset = PluginRef(dataset_name, d.rest())
    models = _models(data, source)
    grid = _grid(_Reader(source, data["grid"], "grid"), models)
    run = _run(_Reader(source, data.get("run", {}), "run"))
    if run.folds and "split" in data["dataset"]:
        raise d.fail("split", "is not used with run.folds (each fold is scored on its held-out images); remove it")
    params = {section: _param_tables(data, section, source) for section in ("explainer_params", "metric_params")}
    return Config(
        name=name,
        seed=seed,
        description=description,
        dataset=dataset,
        models=models,
        grid=grid,
        run=run,
        split=split,
        n_images=n_images,
        explainer_params=params["explainer_params"],
        metric_params=params["metric_params"],
        source=source,
    )


_TABLES = ("benchmark", "dataset", "model", "models", "grid", "run", "explainer_params", "metric_params")


def _check_tables(data: dict, source: str) -> None:
    """The document's top-level tables: the required ones there, no unknown one, each of its kind."""
    for section in ("benchmark", "dataset", "grid"):
        if section not in data:
            raise UserError(f"{source}: missing table [{section}]")
    if ("model" in data) == ("models" in data):
        raise UserError(f"{source}: give exactly one of [model] (one model) or [[models]] (several)")
    unknown = sorted(set(data) - set(_TABLES))
    if unknown:
        raise UserError(f"{source}: unknown table [{unknown[0]}]; allowed: {', '.join(_TABLES)}")
    for section in data:
        if section == "models":
            if not isinstance(data[section], list) or not data[section] or not all(isinstance(t, dict) for t in data[section]):
                raise UserError(f"{source}: models: must be an array of tables [[models]]")
        elif not isinstance(data[section], dict):
            raise _Reader(source, data, "").fail(section, "must be a table")


def _benchmark(b: _Reader) -> tuple[str, int, str]:
    name = b.get("name", str)
    if not name or any(c in name for c in "/\\") or name.startswith(".") or any(not c.isprintable() for c in name):
        raise b.fail("name", f"{name!r} must be a non-empty file-name-safe string (no slashes, leading dot, newlines or other control characters)")
    seed = b.get("seed", int, 0)
    description = b.get("description", str, "")
    b.no_rest(("name", "seed", "description"))
    return name, seed, description


def _models(data: dict, source: str) -> tuple[ModelRef, ...]:
    models = []
    tables = [("model", data["model"])] if "model" in data else [(f"models[{i}]", t) for i, t in enumerate(data["models"])]
    for prefix, table in tables:
        m = _Reader(source, table, prefix)
        mname = m.get("name", str)
        label = m.get("label", str, mname)
        mex = m.str_list("explainers", [])
        mlayers = m.str_list("layers", [])
        mparams = m.get("explainer_params", dict, {})
        for k, v in mparams.items():
            if not isinstance(v, dict):
                raise m.fail(f"explainer_params.{k}", "must be a table of parameters")
        mthresholds = _thresholds(m, m.get("thresholds", list, []))
        models.append(ModelRef(mname, m.rest(), label, mex, mlayers, {k: dict(v) for k, v in mparams.items()}, tuple(mthresholds)))
    labels = [m.label for m in models]
    if len(set(labels)) != len(labels):
        dup = next(l for l in labels if labels.count(l) > 1)
        raise UserError(f"{source}: models: label {dup!r} is used twice; give each [[models]] entry its own label")
    return tuple(models)


def _grid(g: _Reader, models: tuple[ModelRef, ...]) -> Grid:
    every_model_has = lambda key: all(getattr(m, key) for m in models)  # noqa: E731
    explainers = g.str_list("explainers", () if every_model_has("explainers") else ...)
    layers = g.str_list("layers", () if every_model_has("layers") else ...)
    thresholds = _thresholds(g, g.get("thresholds", list, []))
    sweep = g.get("threshold_sweep", int, 0)
    if sweep < 0:
        raise g.fail("threshold_sweep", "must be >= 0")
    perturbations = g.str_list("perturbations", [], PERTURBATIONS)
    metrics = g.str_list("metrics")
    g.no_rest(("explainers", "layers", "thresholds", "threshold_sweep", "perturbations", "metrics"))
    return Grid(explainers, layers, tuple(thresholds), perturbations, metrics, sweep)


def _run(r: _Reader) -> RunOptions:
    """``[run]``: every key, its type and its default are :class:`RunOptions`' fields."""
    keys = [f for f in fields(RunOptions) if f.name != "seeds"]
    kind = lambda f: (int, float) if isinstance(f.default, float) else type(f.default)  # noqa: E731  (1 means 1.0)
    values = {f.name: r.get(f.name, kind(f), f.default, _RUN_ALLOWED.get(f.name)) for f in keys}
    run = RunOptions(**{k: float(v) if isinstance(getattr(RunOptions, k), float) else v for k, v in values.items()}, seeds=_seeds(r))
    for key in ("ray_cpus_per_worker", "ray_gpus_per_worker"):
        value = getattr(run, key)
        if not value > 0 or (value > 1 and value != int(value)):
            raise r.fail(key, f"{value} is not allowed; give a fraction in (0, 1] or a whole number")
    if run.batch_size < 1 or run.chunk_size < 1:
        raise r.fail("batch_size" if run.batch_size < 1 else "chunk_size", "must be >= 1")
    if run.class_id < -1:
        raise r.fail("class_id", "must be a class id >= 0, or -1 for the default")
    if run.folds == 1 or run.folds < 0:
        raise r.fail("folds", f"{run.folds} is not allowed; give K >= 2 folds, or 0 (the default) for none")
    r.no_rest(tuple(f.name for f in fields(RunOptions)))
    return run


def _param_tables(data: dict, section: str, source: str) -> dict[str, dict[str, Any]]:
    table = data.get(section, {})
    for k, v in table.items():
        if not isinstance(v, dict):
            raise UserError(f"{source}: {section}.{k}: must be a table of parameters")
    return {k: dict(v) for k, v in table.items()}


def _seeds(r: _Reader) -> tuple[int, ...]:
    seeds = r.get("seeds", list, [])
    if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds):
        raise r.fail("seeds", f"expected a list of integers >= 0, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise r.fail("seeds", f"{seeds!r} repeats a seed; give each seed once")
    return tuple(seeds)


def load_config(path: str | Path) -> Config:
    path = Path(path)
    if path.is_dir():
        raise UserError(f"config file {str(path)!r} is a directory; give the path of a .toml file (e.g. {str(path / 'NAME.toml')!r})")
    if not path.is_file():
        raise UserError(f"config file {str(path)!r} does not exist")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path}: not valid TOML: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not a UTF-8 text file") from exc
    return parse_config(data, str(path))
