"""Where the grid runs: in this process (``local``) or on a Ray cluster (``ray``).

An executor takes work units (one model x one replicate x one image batch, with the cells
still missing) and
yields their :class:`~xaibench.runs.worker.BatchResult` as they finish; the runner writes each one
to the run directory at once. Work is sharded by model x image batch, not by layer: all layers
of a batch share one forward and one backward, which a layer shard would pay again. A
replicate (fold x training seed, :mod:`xaibench.runs.replicates`) has its own trained models.

The Ray executor starts one actor per CPU (``ray.init(num_cpus=...)`` makes a local cluster
when no cluster address is set in ``RAY_ADDRESS``). Nothing on a worker reads the driver's disk:
the driver loads (or trains) every model of every replicate and fits the explainers' own
networks once, and puts each :class:`~xaibench.runs.worker.WorkerState` in Ray's object store
once; the samples travel decoded, the dataset object does not travel at all. An actor reads a
state on its first unit of that model x replicate.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from xaibench.engine import cpu_isa
from xaibench.errors import UserError
from xaibench.runs.worker import BatchResult, BatchWorker, WorkerState, load_state, replicate_suffix


@dataclass
class Unit:
    model_index: int
    sample_indices: list[int]  #: into the replicate's samples
    cell_keys: list[str]
    replicate: int = 0  #: index into the run's replicates

    @property
    def worker_key(self) -> tuple[int, int]:
        return (self.model_index, self.replicate)


def run_local(plan, units: list[Unit], data: list, done: set, device: torch.device, counter, show_progress: bool) -> Iterator[tuple[Unit, BatchResult, BatchWorker]]:
    workers: dict[tuple[int, int], BatchWorker] = {}
    for unit in units:
        if unit.worker_key not in workers:
            workers.clear()  # one model in memory at a time
            workers[unit.worker_key] = BatchWorker(plan, unit.model_index, data[unit.replicate], device, show_progress, counter)
        worker = workers[unit.worker_key]
        cells = {c.key: c for c in plan.models[unit.model_index].cells}
        batch = [data[unit.replicate].samples[i] for i in unit.sample_indices]
        yield unit, worker.process(batch, [cells[k] for k in unit.cell_keys], done), worker


RETRIES = 3  #: restarts of a dead Ray actor, and retries of the unit it was working on


def run_ray(plan, units: list[Unit], data: list, done: set, device: torch.device, counter, show_progress: bool, num_workers: int | None = None) -> Iterator[tuple[Unit, BatchResult, None]]:
    try:
        import ray
    except ImportError as exc:
        raise UserError("--executor ray needs Ray: pip install 'xaibench[ray]'") from exc
    if os.environ.get("RAY_ADDRESS") and not ray.is_initialized():  # before any model is trained
        _check_reachable(os.environ["RAY_ADDRESS"])
    # the driver trains (or loads) each model of each replicate once, on its CPU; the actors get
    # the weights through the object store, never from a disk (theirs may not hold the driver's cache)
    shipped: dict[str, int] = {}
    nodes: set[str] = set()
    gpus: set[str] = set()
    info = plan.executor_info = {"executor": "ray", "nodes": [], "shipped_bytes": shipped}
    states = {key: load_state(plan, key[0], data[key[1]], torch.device("cpu"), show_progress) for key in sorted({u.worker_key for u in units})}
    t = time.perf_counter()
    started = _init(ray, num_workers)
    info["start_s"] = time.perf_counter() - t  # connecting to (or starting) the cluster
    try:
        # a dead actor (killed, out of memory) is restarted and its unfinished units are retried;
        # what the other actors finished is already in the run directory
        Actor, n_actors = _actor_class(ray, plan.config.run, device, len(units))
        info.update(actors=n_actors, cpus_per_worker=plan.config.run.ray_cpus_per_worker, gpus_per_worker=plan.config.run.ray_gpus_per_worker if device.type == "cuda" else 0)
        # in the object store, referenced from here for the whole run: a restarted actor's
        # constructor reads them again (arguments passed inline are freed after the first start)
        t = time.perf_counter()
        plan_ref, data_ref = ray.put(plan), ray.put([dataclasses.replace(d, dataset=None, samples=list(d.samples)) for d in data])
        state_refs = {key: ray.put(state) for key, state in states.items()}
        info["ship_s"] = time.perf_counter() - t  # the plan, the decoded images and the weights into the object store
        shipped.update({f"{plan.models[k[0]].ref.label}{replicate_suffix(plan, data[k[1]].replicate)}": _nbytes(st) for k, st in states.items()})
        actors = [Actor.remote(plan_ref, data_ref, state_refs, device.type) for _ in range(n_actors)]
        pending = {}
        for i, unit in enumerate(units):
            ids = {data[unit.replicate].image_ids[j] for j in unit.sample_indices}
            keys = set(unit.cell_keys)
            unit_done = {d for d in done if d[0] in keys and d[1] in ids}
            pending[actors[i % n_actors].process.remote(unit, unit_done)] = unit
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            unit = pending.pop(ready[0])
            t = time.perf_counter()
            try:
                result, passes, node, gpu_ids = ray.get(ready[0])
            except ray.exceptions.RayTaskError as exc:
                if isinstance(exc.cause, UserError):  # said on the worker: said here, once
                    raise exc.cause from None
                missing = missing_module(str(exc))
                if missing:
                    raise UserError(missing) from exc
                raise
            except ray.exceptions.RayActorError as exc:
                missing = missing_module(str(exc))
                if missing:
                    raise UserError(missing) from exc
                raise UserError(
                    f"a Ray worker died {RETRIES + 1} times on model {unit.model_index} images {unit.sample_indices[0]}..{unit.sample_indices[-1]} "
                    f"({type(exc).__name__}); the finished batches are kept: rerun the same command to resume"
                ) from exc
            info["gather_s"] = info.get("gather_s", 0.0) + time.perf_counter() - t  # the rows back to the driver
            for k, v in passes.items():
                setattr(counter, k, getattr(counter, k) + v)
            nodes.add(node)
            gpus.update(f"{node[:8]}:{g}" for g in gpu_ids)
            yield unit, result, None
    finally:
        info.update(nodes=sorted(nodes), gpus=sorted(gpus))
        if started:
            ray.shutdown()


def _init(ray, num_workers: int | None) -> bool:
    """Connect to the cluster at ``RAY_ADDRESS``, or start a local one; True if started here."""
    if ray.is_initialized():
        return False
    # the workers use the driver's settings and kernel instruction set (xaibench.engine.cpu_isa)
    env = {"env_vars": {k: v for k, v in os.environ.items() if k.startswith("XAIBENCH_") or k in cpu_isa.VARIABLES}}
    address = os.environ.get("RAY_ADDRESS")
    try:
        if address:  # an existing cluster: it decides its own resources
            ray.init(log_to_driver=False, runtime_env=env)
        else:
            n = num_workers or int(os.environ.get("XAIBENCH_RAY_CPUS", os.cpu_count() or 1))
            gpus = os.environ.get("XAIBENCH_RAY_GPUS")  # GPUs the local cluster declares (default: those it finds)
            ray.init(num_cpus=n, include_dashboard=False, log_to_driver=False, runtime_env=env, **({"num_gpus": int(gpus)} if gpus else {}))
    except ConnectionError as exc:
        raise UserError(f"--executor ray: no Ray cluster at RAY_ADDRESS={address!r} ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); start one (ray start --head) or unset RAY_ADDRESS for a local one") from exc
    return True


def _check_reachable(address: str) -> None:
    """A ``host:port`` in ``RAY_ADDRESS`` that accepts no connection is one error line now (Ray
    itself waits on it for minutes); ``auto`` and ``ray://`` addresses are left to Ray."""
    import socket

    host, _, port = address.rpartition(":")
    if address == "auto" or "://" in address or not port.isdigit() or not host:
        return
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as exc:
        raise UserError(f"--executor ray: no Ray cluster at RAY_ADDRESS={address!r} ({exc.strerror or exc}); start one (ray start --head) or unset RAY_ADDRESS for a local one") from None


def _actor_class(ray, run, device: torch.device, n_units: int):
    """The actor class with its resources, and how many actors the cluster has room for: one per
    ``ray_cpus_per_worker`` CPUs, or with ``--device cuda`` one per ``ray_gpus_per_worker`` GPUs."""
    total = ray.cluster_resources()
    if device.type == "cuda":
        if not total.get("GPU"):
            raise UserError("--device cuda with --executor ray: the Ray cluster declares no GPUs; add GPU nodes, or use --device cpu")
        room = int(total["GPU"] / run.ray_gpus_per_worker + 1e-9)
        options = {"num_cpus": run.ray_cpus_per_worker, "num_gpus": run.ray_gpus_per_worker}
    else:
        room = int(ray.available_resources().get("CPU", 1) / run.ray_cpus_per_worker + 1e-9)
        options = {"num_cpus": run.ray_cpus_per_worker}
    Actor = ray.remote(max_restarts=RETRIES, max_task_retries=RETRIES, **options)(_RayWorker)
    return Actor, max(1, min(n_units, room))


def missing_module(text: str) -> str | None:
    """The error for a worker node that cannot import a module the run needs (from the text of
    Ray's error), naming the distribution that provides it on the driver; None for other errors."""
    import re
    from importlib import metadata

    found = re.search(r"No module named '([\w.]+)'", text)
    if not found:
        return None
    module = found.group(1)
    dists = metadata.packages_distributions().get(module.split(".")[0], [])
    what = f"distribution {', '.join(sorted(set(dists)))!s}" if dists else f"the package that provides module {module!r}"
    return f"--executor ray: a Ray worker node cannot import {module!r}: install {what} on every node (the same version as here), then rerun the same command to resume"


def _nbytes(state: WorkerState) -> int:
    """Bytes of the tensors a state ships (the model's and the fitted networks' weights)."""
    seen = {id(t): t for n in state.networks() for t in list(n.parameters()) + list(n.buffers())}
    return sum(t.numel() * t.element_size() for t in seen.values())


class _RayWorker:
    """A Ray actor: one BatchWorker per model x replicate, built on first use from the state
    the driver shipped, on the device Ray assigned (``cuda``: the GPU in its ``CUDA_VISIBLE_DEVICES``)."""

    def __init__(self, plan, data, states: dict, device: str):
        torch.set_num_threads(max(1, int(plan.config.run.ray_cpus_per_worker)))
        self.plan, self.data, self.states, self.workers = plan, data, states, {}
        self.device = _actor_device(device)
        if self.device.type == "cuda":  # full float32 unless [run] tf32, as the local CUDA path
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = plan.config.run.tf32

    def process(self, unit: Unit, done: set):
        import ray

        from xaibench.engine.capture import PassCounter

        if unit.worker_key not in self.workers:
            state = _to_device(ray.get(self.states[unit.worker_key]), self.device)
            self.workers = {unit.worker_key: BatchWorker(self.plan, unit.model_index, self.data[unit.replicate], self.device, state=state)}
        worker = self.workers[unit.worker_key]
        before = dict(vars(worker.counter))
        cells = {c.key: c for c in self.plan.models[unit.model_index].cells}
        result = worker.process([self.data[unit.replicate].samples[i] for i in unit.sample_indices], [cells[k] for k in unit.cell_keys], done)
        result.maps = None  # maps stay on the worker; only rows travel
        passes = {k: v - before.get(k, 0) for k, v in vars(worker.counter).items()}
        assert isinstance(worker.counter, PassCounter)
        return result, passes, ray.get_runtime_context().get_node_id(), [str(g) for g in ray.get_gpu_ids()]


def _actor_device(wanted: str) -> torch.device:
    """The device of an actor placed for ``wanted``. ``XAIBENCH_RAY_ACTOR_DEVICE`` overrides it
    (tests place GPU actors on a CPU machine that declares GPUs)."""
    import ray

    override = os.environ.get("XAIBENCH_RAY_ACTOR_DEVICE")
    if override or wanted != "cuda":
        return torch.device(override or "cpu")
    if not torch.cuda.is_available():
        node = ray.get_runtime_context().get_node_id()[:8]
        raise UserError(f"--device cuda: Ray gave a worker on node {node} GPU {ray.get_gpu_ids()}, but torch there sees no CUDA device (a CPU-only torch build?)")
    return torch.device("cuda", 0)  # Ray's CUDA_VISIBLE_DEVICES holds the GPU it assigned


def _to_device(state: WorkerState, device: torch.device) -> WorkerState:
    """The shipped state with the model and every network the explainers hold on ``device``."""
    if device.type == "cpu":
        return state
    for net in state.networks():
        net.to(device)
    if state.mean is not None:
        state.mean = state.mean.to(device)
    return state
