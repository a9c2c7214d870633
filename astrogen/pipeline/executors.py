"""Executors: where the map stages of a pipeline run, one catalog chunk (or box) per task.

The runner drives every executor the same way (:meth:`Executor.chunks`): the driver reads
each chunk from the source stages, the executor applies the chain of map stages to it and
hands back, **in chunk order**, the outputs the sinks need; the sinks then consume them in the
driver exactly as in a local run and commit them chunk by chunk (ledger, ``--resume``).

``local`` (default)
    Everything in the calling process, one chunk after the other.
``dask``
    Each chunk's chain of map stages is one Dask task. Either a ``LocalCluster`` started for
    the run (``n_workers`` processes of ``threads_per_worker`` threads, loopback only, its
    dashboard on ``dashboard_address``, 127.0.0.1:8787 by default, address logged), or an
    existing scheduler: ``address``, or ``scheduler_file`` (the JSON file written by
    ``dask scheduler --scheduler-file`` or ``dask-mpi``, the usual way on SLURM), so
    Kubernetes or hand-started clusters work unchanged.
``slurm``, ``pbs``
    A dask-jobqueue cluster (``pip install astrogen[hpc]``): a scheduler in this process,
    ``jobs`` batch jobs of ``cores`` cores and ``memory`` each submitted to the queue (workers
    connect as jobs start; the run waits for them), cancelled at the end. The job script
    comes from ``queue``, ``account``, ``walltime``, ``processes``,
    ``job_extra_directives``, ``job_script_prologue`` (e.g. activating the environment),
    ``interface``, ``local_directory``, ``log_directory``; see :func:`jobqueue_cluster`.

In every Dask form the map stages are pickled once (before :meth:`Stage.setup`, so no model
weights travel) and set up once per worker process, cached by a hash of that pickle; at most
``max_in_flight`` chunks are submitted ahead of the one the sinks wait for, and Dask's
debugging logs of recent messages are switched off for the connections the run opens, so the
driver's memory does not grow with the catalog. (A scheduler started elsewhere keeps its own
configuration: set ``distributed.admin.low-level-log-length: 0`` in its Dask config, or it
holds up to 1000 recent task messages, chunk data included.)

Failures
    A worker that dies (kill -9, out of memory, lost node) makes the scheduler run its tasks
    elsewhere (up to ``retries`` times per task, Dask's ``allowed-failures`` for a cluster
    started here); any other unexpected exception is retried ``retries`` times (``retries=``
    of ``Client.submit``). An :class:`~astrogen.errors.AstrogenError` raised by a stage (bad
    input) is not retried: it is sent back as data and raised again in the driver as the same
    error, so the command line prints the usual one line and exits with status 2. When a
    chunk cannot be finished (too many worker deaths, scheduler lost) the run stops with an
    :class:`ExecutorError`, keeping what was committed, and ``--resume`` continues.

Random numbers depend only on ``(pipeline seed, stage name, row or box id)`` (see
:mod:`astrogen.seeds`), and sinks consume chunks in order, so the outputs are bit-identical
whatever the executor, the number of workers or the order in which tasks finish.
"""
from __future__ import annotations

import contextlib
import hashlib
import re
import importlib
import importlib.util
import json
import logging
import os
import threading
import time
import uuid
from collections import OrderedDict, deque
from dataclasses import asdict, dataclass
from typing import Any, Iterator

from astrogen.errors import AstrogenError, ConfigError, UnknownKeyError, suggest

__all__ = ["ExecutorSpec", "ExecutorError", "Executor", "LocalExecutor", "DaskExecutor",
           "ChunkPlan", "parse_executor", "executor_with", "make_executor", "EXECUTOR_KEYS",
           "JOBQUEUE_TYPES", "jobqueue_cluster", "DEFAULT_DASHBOARD"]

log = logging.getLogger("astrogen")

#: key -> (accepted types, meaning); ``type`` is required when a mapping is given.
EXECUTOR_KEYS: dict[str, tuple[tuple, str]] = {
    "type": ((str,), "'local' (in process, default), 'dask', or a batch-queue cluster "
                     "'slurm' or 'pbs' (dask-jobqueue)"),
    "address": ((str,), "address of a running Dask scheduler, e.g. tcp://host:8786"),
    "scheduler_file": ((str,), "JSON file of a running Dask scheduler (dask scheduler "
                               "--scheduler-file, dask-mpi)"),
    "n_workers": ((int,), "worker processes of the LocalCluster started for the run"),
    "threads_per_worker": ((int,), "threads per worker process of that LocalCluster"),
    "dashboard_address": ((str, bool), "host:port of the dashboard of a cluster started here "
                                       "(default 127.0.0.1:8787; false: none)"),
    "retries": ((int,), "times a task is rerun after a worker death or unexpected error"),
    "max_in_flight": ((int,), "chunks submitted ahead of the one being written"),
    "timeout": ((int, float), "seconds to wait for the scheduler (and its file) at start-up"),
    "cores": ((int,), "cores per batch job (slurm, pbs)"),
    "memory": ((str,), "memory per batch job, e.g. '32GB' (slurm, pbs)"),
    "processes": ((int,), "worker processes per batch job (default: about sqrt(cores))"),
    "jobs": ((int,), "batch jobs submitted (default 1)"),
    "queue": ((str,), "queue or partition of the batch jobs"),
    "account": ((str,), "account charged for the batch jobs"),
    "walltime": ((str,), "wall-clock limit of a batch job, e.g. '01:30:00'"),
    "job_extra_directives": ((list,), "extra scheduler directives, e.g. ['--constraint=cpu']"),
    "job_script_prologue": ((list,), "shell lines run before the worker starts, e.g. "
                                     "['source ~/venv/bin/activate']"),
    "interface": ((str,), "network interface of the scheduler and workers, e.g. 'ib0'"),
    "local_directory": ((str,), "scratch folder of the workers on the compute nodes"),
    "log_directory": ((str,), "folder of the batch jobs' log files"),
}
#: batch-queue executor type -> "module:class" of its dask-jobqueue cluster
JOBQUEUE_TYPES: dict[str, str] = {"slurm": "dask_jobqueue:SLURMCluster",
                                  "pbs": "dask_jobqueue:PBSCluster"}
_TYPES = ("local", "dask", *JOBQUEUE_TYPES)
#: dashboard of a cluster started by astrogen: loopback only (reach it with ssh -L 8787:...)
DEFAULT_DASHBOARD = "127.0.0.1:8787"
#: LocalCluster options: no dashboard, and the scheduler's small HTTP server (health and
#: metrics routes, always started) on a free loopback port instead of 8787
LOOPBACK_NO_DASHBOARD = {"dashboard_address": None,
                         "scheduler_kwargs": {"dashboard_address": "127.0.0.1:0"}}
_SCHEDULER_KEYS = ("address", "scheduler_file")
_LOCALCLUSTER_KEYS = ("n_workers", "threads_per_worker")
_JOBQUEUE_KEYS = ("cores", "memory", "processes", "jobs", "queue", "account", "walltime",
                  "job_extra_directives", "job_script_prologue", "interface",
                  "local_directory", "log_directory")
_DASK_ONLY = (*_SCHEDULER_KEYS, *_LOCALCLUSTER_KEYS, "dashboard_address", "retries",
              "max_in_flight", "timeout", *_JOBQUEUE_KEYS)
#: seconds to wait for a scheduler (or its file) when ``timeout`` is not set
DEFAULT_TIMEOUT = 60.0
_WALLTIME = re.compile(r"^(\d+-)?\d+(:\d{1,2}){0,2}$")


class ExecutorError(AstrogenError, RuntimeError):
    """The execution back-end failed (cluster unreachable, a chunk lost too many workers).

    Unlike bad-input errors, the work committed so far is kept: ``--resume`` continues.
    """

    #: tells the runner not to delete the partial run
    resumable = True


@dataclass(frozen=True)
class ExecutorSpec:
    """Validated ``executor:`` settings of a pipeline (see :data:`EXECUTOR_KEYS`).

    Attributes
    ----------
    type : {"local", "dask", "slurm", "pbs"}
        Where the map stages run.
    address : str or None
        Scheduler address of an existing Dask cluster.
    scheduler_file : str or None
        Scheduler file of an existing Dask cluster (``dask scheduler --scheduler-file``).
    n_workers : int or None
        Worker processes of the ``LocalCluster`` (default: the number of CPU cores).
    threads_per_worker : int
        Threads per worker process of the ``LocalCluster``.
    dashboard_address : str, bool or None
        Dashboard of a cluster started here: ``None`` or ``True`` for
        :data:`DEFAULT_DASHBOARD` (loopback), ``False`` for none, or ``"host:port"``.
    retries : int
        Reruns of a task after a worker death or an unexpected (non-astrogen) exception.
    max_in_flight : int or None
        Chunks submitted ahead of the one the sinks wait for (default: twice the number of
        worker threads, at least 4).
    timeout : float or None
        Seconds to wait for an existing scheduler or its file (default 60 s).
    cores, memory, processes, jobs, queue, account, walltime : optional
        Batch jobs of a ``slurm`` / ``pbs`` cluster: cores and memory (``"32GB"``) per job,
        worker processes per job, number of jobs (default 1), queue (partition), account,
        wall-clock limit (``"HH:MM:SS"``).
    job_extra_directives, job_script_prologue : tuple of str or None
        Extra ``#SBATCH`` / ``#PBS`` directives; shell lines run before the worker starts.
    interface, local_directory, log_directory : str or None
        Network interface (``ib0``), workers' scratch folder, batch jobs' log folder.
    """

    type: str = "local"
    address: str | None = None
    n_workers: int | None = None
    threads_per_worker: int = 1
    retries: int = 3
    max_in_flight: int | None = None
    scheduler_file: str | None = None
    dashboard_address: str | bool | None = None
    timeout: float | None = None
    cores: int | None = None
    memory: str | None = None
    processes: int | None = None
    jobs: int | None = None
    queue: str | None = None
    account: str | None = None
    walltime: str | None = None
    job_extra_directives: tuple | None = None
    job_script_prologue: tuple | None = None
    interface: str | None = None
    local_directory: str | None = None
    log_directory: str | None = None

    @property
    def dashboard(self) -> str | None:
        """``host:port`` of the dashboard of a cluster started here, or ``None`` (off)."""
        if self.dashboard_address is False:
            return None
        if self.dashboard_address in (None, True):
            return DEFAULT_DASHBOARD
        return str(self.dashboard_address)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of the settings that apply to this type (for provenance)."""
        if self.type == "local":
            return {"type": "local"}
        d = asdict(self)
        keep = ["type"]
        if self.type == "dask":
            if self.address or self.scheduler_file:
                keep += ["address" if self.address else "scheduler_file"]
            else:
                keep += ["n_workers", "threads_per_worker"]
        else:
            keep += [k for k in _JOBQUEUE_KEYS if d[k] is not None]
        if self.dashboard_address is not None:
            keep.append("dashboard_address")
        keep += ["retries", "max_in_flight"] + (["timeout"] if self.timeout is not None else [])
        return {k: (list(d[k]) if isinstance(d[k], tuple) else d[k]) for k in keep}


def _check_value(key: str, value, where: str, line: int | None):
    types, what = EXECUTOR_KEYS[key]
    if value is None and key != "type":
        return None
    if key == "dashboard_address" and isinstance(value, bool):
        return value
    if isinstance(value, bool) or not isinstance(value, types):
        kind = {(int,): "an integer", (int, float): "a number", (list,): "a list of strings"}
        raise ConfigError(f"must be {kind.get(types, 'a string')} ({what}).", key=where,
                          line=line, received={key: value})
    if key == "type" and value not in _TYPES:
        raise ConfigError(f"must be one of {list(_TYPES)}.{suggest(value, _TYPES)}", key=where,
                          line=line, received={key: value})
    minimum = {"n_workers": 1, "threads_per_worker": 1, "retries": 0, "max_in_flight": 1,
               "cores": 1, "processes": 1, "jobs": 1}
    if key in minimum and value < minimum[key]:
        raise ConfigError(f"must be an integer >= {minimum[key]}.", key=where, line=line,
                          received={key: value})
    if key == "timeout" and not value > 0:
        raise ConfigError("must be > 0 seconds.", key=where, line=line, received={key: value})
    if isinstance(value, list):
        if not all(isinstance(v, str) for v in value):
            raise ConfigError(f"must be a list of strings ({what}).", key=where, line=line,
                              received={key: value})
        return tuple(value)
    if key == "memory":
        from dask.utils import parse_bytes

        try:
            ok = parse_bytes(value) > 0
        except (ValueError, TypeError):
            ok = False
        if not ok:
            raise ConfigError("must be an amount of memory such as '16GB' or '4000MiB'.",
                              key=where, line=line, received={key: value})
    if key == "walltime" and not _WALLTIME.match(value):
        raise ConfigError("must be a time limit such as '01:30:00' (HH:MM:SS) or "
                          "'1-12:00:00'.", key=where, line=line, received={key: value})
    return value


def parse_executor(value, line_of=lambda path: None, prefix: str = "executor") -> ExecutorSpec:
    """Check an ``executor:`` value and return its :class:`ExecutorSpec`.

    Parameters
    ----------
    value : None, str or dict
        ``None`` (local), a type name (``dask``) or a mapping with the keys of
        :data:`EXECUTOR_KEYS`.
    line_of : callable, optional
        ``path tuple -> YAML line`` (``Config.line``) to locate errors.
    prefix : str
        Key path shown in errors.

    Raises
    ------
    UnknownKeyError
        A key that is not in :data:`EXECUTOR_KEYS`.
    ConfigError
        A value of the wrong type or range, a key that does not apply to the type (a dask
        key with ``type: local``, ``n_workers`` with a scheduler, ``cores`` with ``dask``...),
        two schedulers, or a batch-queue cluster without ``cores`` and ``memory``.
    """
    if value is None:
        return ExecutorSpec()
    if isinstance(value, str):
        value = {"type": value}
    if not isinstance(value, dict):
        raise ConfigError("must be 'local', 'dask' or a mapping such as {type: dask, "
                          "n_workers: 2}.", key=prefix, line=line_of((prefix,)),
                          received={prefix: value})
    for k in value:
        if k not in EXECUTOR_KEYS:
            raise UnknownKeyError(f"is not an executor key.{suggest(str(k), EXECUTOR_KEYS)} "
                                  f"Valid keys: {', '.join(EXECUTOR_KEYS)}.",
                                  key=f"{prefix}.{k}", line=line_of((prefix, k)),
                                  received={k: value[k]})
    if "type" not in value:
        raise ConfigError(f"the executor needs a 'type' ({', '.join(map(repr, _TYPES))}).",
                          key=prefix, line=line_of((prefix,)), received={"keys": list(value)})
    checked = {k: _check_value(k, v, f"{prefix}.{k}", line_of((prefix, k)))
               for k, v in value.items()}
    checked = {k: v for k, v in checked.items() if v is not None}

    def refuse(keys, why: str, **also):
        bad = [k for k in checked if k in keys]
        if bad:
            raise ConfigError(why, key=f"{prefix}.{bad[0]}", line=line_of((prefix, bad[0])),
                              received={bad[0]: checked[bad[0]], **also})

    kind = checked["type"]
    if kind == "local":
        refuse(_DASK_ONLY, "is used only by the dask executor (set type: dask).")
    elif kind == "dask":
        refuse(_JOBQUEUE_KEYS, "is used only by the batch-queue executors (set type: slurm or "
                               "pbs).")
        if "address" in checked and "scheduler_file" in checked:
            raise ConfigError("give either address or scheduler_file, not both.",
                              key=f"{prefix}.scheduler_file",
                              line=line_of((prefix, "scheduler_file")),
                              received={"address": checked["address"],
                                        "scheduler_file": checked["scheduler_file"]})
        scheduler = next((k for k in _SCHEDULER_KEYS if k in checked), None)
        if scheduler:
            refuse((*_LOCALCLUSTER_KEYS, "dashboard_address"),
                   f"applies to the LocalCluster started by astrogen, not to an existing "
                   f"scheduler ({scheduler}).", **{scheduler: checked[scheduler]})
    else:
        refuse((*_SCHEDULER_KEYS, *_LOCALCLUSTER_KEYS),
               f"does not apply to a {kind} cluster (its workers are batch jobs: set cores, "
               "memory, jobs).")
        missing = [k for k in ("cores", "memory") if k not in checked]
        if missing:
            what = EXECUTOR_KEYS[missing[0]][1]
            raise ConfigError(f"a {kind} cluster needs '{missing[0]}' ({what}).",
                              key=prefix, line=line_of((prefix,)),
                              received={"keys": list(value)})
        if checked.get("processes", 1) > checked["cores"]:
            raise ConfigError("must be <= cores (each worker process gets at least one core).",
                              key=f"{prefix}.processes", line=line_of((prefix, "processes")),
                              received={"processes": checked["processes"],
                                        "cores": checked["cores"]})
    return ExecutorSpec(**checked)


_OPTIONS = {"type": "--executor", "n_workers": "--workers", "address": "--scheduler",
            "threads_per_worker": "--threads-per-worker", "scheduler_file": "--scheduler-file"}


def executor_with(spec: ExecutorSpec, type: str | None = None, n_workers: int | None = None,
                  threads_per_worker: int | None = None, address: str | None = None,
                  scheduler_file: str | None = None) -> ExecutorSpec:
    """``spec`` with command-line options applied (``--executor``, ``--workers``, ...).

    ``--workers``, ``--threads-per-worker``, ``--scheduler`` or ``--scheduler-file`` without
    ``--executor`` imply ``dask``; ``--executor slurm`` (or ``pbs``) keeps the batch-job
    settings of the YAML. The result is checked like the YAML value, errors naming the option.
    """
    opts = {"n_workers": n_workers, "threads_per_worker": threads_per_worker,
            "address": address, "scheduler_file": scheduler_file}
    opts = {k: v for k, v in opts.items() if v is not None}
    if type is None and not opts:
        return spec
    new = type or ("dask" if opts else spec.type)
    common = {"retries": spec.retries, "max_in_flight": spec.max_in_flight,
              "timeout": spec.timeout}
    if new == "local":
        merged = {"type": "local", **opts}
    elif new in JOBQUEUE_TYPES:
        merged = {"type": new, **common}
        if spec.type == new:
            merged.update({k: getattr(spec, k) for k in (*_JOBQUEUE_KEYS, "dashboard_address")})
        merged.update(opts)
    else:
        merged = {"type": "dask", **common}
        local_cluster = {"n_workers": spec.n_workers,
                         "threads_per_worker": spec.threads_per_worker,
                         "dashboard_address": spec.dashboard_address}
        spec_scheduler = spec.address or spec.scheduler_file
        if spec.type == "dask" and not opts:
            merged.update(address=spec.address, scheduler_file=spec.scheduler_file)
            if not spec_scheduler:
                merged.update(local_cluster)
        elif (spec.type == "dask" and not spec_scheduler
              and not any(k in opts for k in _SCHEDULER_KEYS)):
            merged.update(local_cluster)
        merged.update(opts)
    merged = {k: (list(v) if isinstance(v, tuple) else v) for k, v in merged.items()}
    try:
        return parse_executor(merged)
    except AstrogenError as exc:  # name the command-line option that set the bad value
        key = (exc.key or "").split(".")[-1]
        option = _OPTIONS.get(key)
        if option and (key in opts or (key == "type" and type is not None)):
            raise exc.__class__(exc.message, key=option, received=exc.received) from None
        raise


def jobqueue_cluster(spec: ExecutorSpec):
    """The dask-jobqueue cluster of a ``slurm`` or ``pbs`` spec, no job submitted yet.

    ``cluster.job_script()`` shows the batch script each job runs; :class:`DaskExecutor`
    then asks for ``spec.jobs`` jobs (``cluster.scale(jobs=...)``).

    Raises
    ------
    ConfigError
        dask-jobqueue is not installed (``pip install astrogen[hpc]``), or it refused a
        setting (named).
    """
    import inspect

    module, cls_name = JOBQUEUE_TYPES[spec.type].split(":")
    try:
        cls = getattr(importlib.import_module(module), cls_name)
    except ImportError:
        raise ConfigError(f"needs dask-jobqueue: pip install 'astrogen[hpc]' (or "
                          f"dask-jobqueue).", key="executor.type",
                          received={"type": spec.type}) from None
    kw: dict[str, Any] = {k: getattr(spec, k) for k in _JOBQUEUE_KEYS if k != "jobs"}
    kw = {k: (list(v) if isinstance(v, tuple) else v) for k, v in kw.items() if v is not None}
    # keys this cluster class does not know (e.g. account of a test stand-in) are refused
    accepted = set()
    for klass in (cls, getattr(cls, "job_cls", None)):
        for base in inspect.getmro(klass) if klass else ():
            if "__init__" in vars(base):
                accepted |= set(inspect.signature(base.__init__).parameters)
    unknown = [k for k in kw if k not in accepted]
    if unknown:
        raise ConfigError(f"is not supported by {cls_name}.", key=f"executor.{unknown[0]}",
                          received={unknown[0]: kw[unknown[0]]})
    dash = spec.dashboard
    kw["scheduler_options"] = {"dashboard_address": dash if dash else "127.0.0.1:0",
                               "dashboard": dash is not None}
    try:
        return cls(silence_logs="critical", **kw)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"dask-jobqueue refused the settings: {exc}", key="executor",
                          received={"type": spec.type}) from None


# ---------------------------------------------------------------------------- chunk plan
def _mark_stage(exc: BaseException, name: str) -> None:
    """Remember on ``exc`` which stage raised it (the runner names it in the error; the
    attribute travels with the exception through pickling)."""
    if getattr(exc, "_astrogen_stage", None) is None:
        try:
            exc._astrogen_stage = name
        except (AttributeError, TypeError):  # pragma: no cover - exceptions with slots
            pass



@dataclass
class _MapNode:
    name: str
    inputs: list[str]
    stage: Any
    ctx: Any


@dataclass
class ChunkPlan:
    """The map stages of a pipeline as one function of a chunk's source outputs.

    Attributes
    ----------
    modules : list of str
        Plug-in modules of the pipeline (imported before the stages are set up; workers
        import them before unpickling the plan).
    nodes : list
        Map stages in execution order with their inputs and :class:`StageContext`.
    needs : list of str
        Source stages whose chunk the map stages read.
    returns : list of str
        Map stages whose output a sink consumes (sent back to the driver).
    tensorflow : bool
        Some stage uses TensorFlow: import it quietly before ``setup``.
    quiet_tensorflow : bool
        Hide TensorFlow's start-up noise (false with ``astrogen -v 3``).
    """

    modules: list[str]
    nodes: list[_MapNode]
    needs: list[str]
    returns: list[str]
    tensorflow: bool = False
    quiet_tensorflow: bool = True
    ready: bool = False

    @classmethod
    def from_pipeline(cls, p, contexts: dict) -> "ChunkPlan":
        """Plan of pipeline ``p``; ``contexts`` maps stage name -> StageContext."""
        maps = [n for n in p.nodes if n.stage.kind == "map"]
        map_names = {n.name for n in maps}
        needs = sorted({i for n in maps for i in n.inputs if i not in map_names})
        returns = [n.name for n in maps
                   if any(n.name in s.inputs for s in p.nodes if s.stage.kind == "sink")]
        tf_log = logging.getLogger("tensorflow").getEffectiveLevel()
        return cls(modules=list(p.modules),
                   nodes=[_MapNode(n.name, list(n.inputs), n.stage, contexts[n.name])
                          for n in maps],
                   needs=needs, returns=returns,
                   tensorflow=any(n.stage.uses_tensorflow for n in maps),
                   quiet_tensorflow=tf_log > logging.DEBUG)

    def setup(self, timings: dict | None = None) -> None:
        """Import plug-ins and TensorFlow if needed, then ``setup(ctx)`` every map stage
        (seconds per stage added to ``timings`` if given)."""
        if self.ready:
            return
        for m in self.modules:
            importlib.import_module(m)
        if self.tensorflow and self.quiet_tensorflow:
            from astrogen.tf_quiet import import_tensorflow_quietly

            import_tensorflow_quietly()
        for n in self.nodes:
            t0 = time.perf_counter()
            try:
                n.stage.setup(n.ctx)
            except BaseException as exc:
                _mark_stage(exc, n.name)
                raise
            if timings is not None:
                timings[n.name] = timings.get(n.name, 0.0) + time.perf_counter() - t0
        self.ready = True

    def run(self, sources: dict) -> tuple[dict, dict]:
        """Apply the map stages to one chunk.

        Returns
        -------
        outputs : dict
            Stage name -> output, for the stages in :attr:`returns`.
        timings : dict
            Stage name -> seconds spent in ``process``.
        """
        results = dict(sources)
        timings = {}
        for n in self.nodes:
            t0 = time.perf_counter()
            try:
                results[n.name] = n.stage.process(*[results[i] for i in n.inputs])
            except BaseException as exc:
                _mark_stage(exc, n.name)
                raise
            timings[n.name] = time.perf_counter() - t0
        return {k: results[k] for k in self.returns}, timings


# ---------------------------------------------------------------------------- executors
class Executor:
    """Base class: runs a pipeline's map stages chunk by chunk (see the module docstring)."""

    spec: ExecutorSpec
    #: stage name -> seconds spent in ``setup`` in this process (map stages set up here)
    setup_timings: dict[str, float]

    def start(self) -> None:
        """Acquire the back-end (connect to or start a cluster); nothing is written yet."""

    def open(self, p, contexts: dict) -> None:
        """Prepare to run pipeline ``p`` (``contexts``: stage name -> StageContext)."""
        self.pipeline = p
        self.plan = ChunkPlan.from_pipeline(p, contexts)
        self.setup_timings = {}

    def close(self) -> None:
        """Release what :meth:`open` acquired."""

    def describe(self) -> dict:
        """Settings and cluster facts for ``provenance.json``."""
        return self.spec.to_dict()

    def _read_sources(self, i: int, timings: dict) -> dict:
        out = {}
        for n in self.pipeline.sources:
            t0 = time.perf_counter()
            try:
                out[n.name] = n.stage.read_chunk(i)
            except BaseException as exc:
                _mark_stage(exc, n.name)
                raise
            timings[n.name] = timings.get(n.name, 0.0) + time.perf_counter() - t0
        return out

    def chunks(self, indices) -> Iterator[tuple[int, dict, dict]]:
        """Yield ``(index, outputs, timings)`` in the order of ``indices``.

        ``outputs`` maps every source and every map stage a sink reads to its output for the
        chunk; ``timings`` maps stage name -> seconds.
        """
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


class LocalExecutor(Executor):
    """Runs everything in the calling process, chunk after chunk (the default)."""

    def __init__(self, spec: ExecutorSpec | None = None):
        self.spec = spec or ExecutorSpec()
        self.setup_timings = {}

    def open(self, p, contexts: dict) -> None:
        super().open(p, contexts)
        self.plan.setup(self.setup_timings)

    def chunks(self, indices):
        for i in indices:
            timings: dict = {}
            sources = self._read_sources(i, timings)
            outputs, t = self.plan.run({k: sources[k] for k in self.plan.needs})
            timings.update(t)
            yield i, {**sources, **outputs}, timings


# --- what runs inside a Dask worker -------------------------------------------------------
_WORKER_PLANS: "OrderedDict[str, ChunkPlan]" = OrderedDict()
_WORKER_LOCK = threading.Lock()
_WORKER_CACHE_SIZE = 2  # plans (with their loaded models) kept per worker process


class _Repr(str):
    """A value that could not be pickled, shown by its repr in the error message."""

    def __repr__(self) -> str:
        return str(self)


@dataclass
class _Failure:
    """An AstrogenError raised in a worker, sent back as data (so Dask does not retry it)."""

    cls: type
    message: str
    key: str | None
    line: int | None
    received: dict
    stage: str | None = None

    @classmethod
    def of(cls, exc: AstrogenError) -> "_Failure":
        import pickle

        received = {}
        for k, v in exc.received.items():
            try:
                pickle.dumps(v)
                received[k] = v
            except Exception:  # noqa: BLE001 - anything unpicklable is shown by its repr
                received[k] = _Repr(repr(v))
        return cls(type(exc), exc.message, exc.key, exc.line, received,
                   getattr(exc, "_astrogen_stage", None))

    def error(self) -> AstrogenError:
        err = self.cls(self.message, key=self.key, line=self.line, received=self.received)
        if self.stage:
            _mark_stage(err, self.stage)
        return err


def worker_plan(key: str, blob: bytes, modules: tuple = ()) -> ChunkPlan:
    """The set-up :class:`ChunkPlan` of ``key`` in this worker process (built on first use,
    after importing the plug-in ``modules``)."""
    import cloudpickle

    with _WORKER_LOCK:
        plan = _WORKER_PLANS.get(key)
        if plan is None:
            for m in modules:
                importlib.import_module(m)
            plan = cloudpickle.loads(blob)
            plan.setup()
            _WORKER_PLANS[key] = plan
            while len(_WORKER_PLANS) > _WORKER_CACHE_SIZE:
                _WORKER_PLANS.popitem(last=False)
        else:
            _WORKER_PLANS.move_to_end(key)
    return plan


def _run_chunk(key: str, blob: bytes, modules: tuple, index: int, sources: dict):
    """Dask task: the map stages of chunk ``index``; bad input comes back as a _Failure."""
    try:
        plan = worker_plan(key, blob, modules)
        return plan.run(sources)
    except AstrogenError as exc:
        return _Failure.of(exc)


class DaskExecutor(Executor):
    """Runs each chunk's chain of map stages as one task on a Dask cluster."""

    def __init__(self, spec: ExecutorSpec):
        self.spec = spec
        self.setup_timings = {}
        self.client = None
        self.cluster = None
        self._nthreads = 0
        self._dask_config = None

    # -- cluster ---------------------------------------------------------------------------
    def start(self) -> None:
        if self.client is None:
            self._connect()

    def _connect(self) -> None:
        import dask
        from distributed import Client, LocalCluster

        # Dask logs every worker start and stop, and reports lost tasks itself: astrogen says
        # what matters in its own errors; Dask's warnings are shown with -v 2
        silence = logging.CRITICAL if not log.isEnabledFor(logging.DEBUG) else logging.WARNING
        names = ["distributed"] + [n for n in logging.root.manager.loggerDict
                                   if n.startswith("distributed.")]
        self._restore_log = {n: logging.getLogger(n).level for n in names}
        for n in names:  # Dask's logging config sets some sub-loggers' levels explicitly
            logging.getLogger(n).setLevel(silence)
        # Each batched stream of Dask (client -> scheduler, scheduler -> worker) keeps its last
        # ``low-level-log-length`` (1000) messages under 1 MB for debugging: with catalog chunks
        # as task arguments that held every chunk sent, and the driver's memory grew with the
        # catalog (125 MiB for 10^6 rows). Streams opened by this run keep none.
        self._dask_config = dask.config.set({"distributed.admin.low-level-log-length": 0})
        spec = self.spec
        timeout = spec.timeout or DEFAULT_TIMEOUT
        if spec.address:
            try:
                self.client = Client(spec.address, timeout=f"{timeout}s",
                                     set_as_default=False)
            except (OSError, TimeoutError) as exc:
                raise ExecutorError(f"cannot reach the Dask scheduler ({exc}).",
                                    key="executor.address",
                                    received={"address": spec.address}) from None
            where = spec.address
        elif spec.scheduler_file:
            self.client = _client_from_file(Client, spec.scheduler_file, timeout)
            where = f"{self.client.scheduler.address} (from {spec.scheduler_file})"
        elif spec.type in JOBQUEUE_TYPES:
            with dask.config.set({"distributed.scheduler.allowed-failures": spec.retries}):
                self.cluster = jobqueue_cluster(spec)
            jobs = spec.jobs or 1
            self.cluster.scale(jobs=jobs)
            self.client = Client(self.cluster, set_as_default=False)
            where = (f"{spec.type} cluster, {jobs} job(s) of {spec.cores} core(s) and "
                     f"{spec.memory} submitted (queue {spec.queue or 'default'}); tasks start "
                     "as the jobs' workers connect")
        else:
            n = spec.n_workers or os.cpu_count() or 1
            dash = spec.dashboard
            options = (LOOPBACK_NO_DASHBOARD if dash is None else {"dashboard_address": dash})
            with dask.config.set({"distributed.scheduler.allowed-failures": spec.retries}):
                self.cluster = LocalCluster(
                    n_workers=n, threads_per_worker=spec.threads_per_worker,
                    processes=True, host="127.0.0.1", silence_logs=silence, **options)
            self.client = Client(self.cluster, set_as_default=False)
            where = "LocalCluster"
        self._nthreads = sum(self.client.nthreads().values())
        log.info("dask executor: %s, %d worker thread(s)", where, self._nthreads)
        if self.cluster is not None:
            log.info("dask dashboard: %s", self.dashboard_link() or "off")

    def dashboard_link(self) -> str | None:
        """URL of the dashboard of the cluster started by this executor (``None``: none).

        Without the ``bokeh`` package Dask serves no dashboard pages: the link then says so.
        """
        if self.cluster is None or self.spec.dashboard is None:
            return None
        scheduler = getattr(self.cluster, "scheduler", None)
        server = getattr(scheduler, "http_server", None)
        try:
            port = server.port if server is not None else None
        except Exception:  # noqa: BLE001 - a server that is not listening has no port
            port = None
        if not port:
            return None
        host = self.spec.dashboard.rsplit(":", 1)[0] or "127.0.0.1"
        url = f"http://{host}:{port}/status"
        if importlib.util.find_spec("bokeh") is None:
            url += " (install bokeh to see it)"
        return url

    def open(self, p, contexts: dict) -> None:
        import cloudpickle

        super().open(p, contexts)
        try:
            self._blob = cloudpickle.dumps(self.plan)
        except Exception as exc:  # noqa: BLE001 - name the stage that cannot travel
            bad = next((n for n in self.plan.nodes if not _picklable(n.stage)), None)
            raise ConfigError(
                f"the map stages cannot be sent to Dask workers ({type(exc).__name__}: "
                f"{exc}); use executor type local.",
                key=f"stages.{bad.name}" if bad else "executor",
                received={"type": type(bad.stage).type_name} if bad else None) from None
        self._key = hashlib.sha256(self._blob).hexdigest()
        self._token = uuid.uuid4().hex[:8]
        self.start()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            if self.client is not None:
                self.client.close(timeout=10)
        with contextlib.suppress(Exception):
            if self.cluster is not None:
                self.cluster.close(timeout=10)
        self.client = self.cluster = None
        if getattr(self, "_dask_config", None) is not None:
            self._dask_config.__exit__(None, None, None)
            self._dask_config = None
        for name, level in (getattr(self, "_restore_log", None) or {}).items():
            logging.getLogger(name).setLevel(level)
        self._restore_log = None

    def describe(self) -> dict:
        return {**self.spec.to_dict(), "worker_threads": self._nthreads}

    @property
    def max_in_flight(self) -> int:
        """Chunks submitted ahead of the one the sinks wait for (default max(4, 2 x threads))."""
        return self.spec.max_in_flight or max(4, 2 * self._nthreads)

    # -- running ---------------------------------------------------------------------------
    def _submit(self, i: int):
        timings: dict = {}
        sources = self._read_sources(i, timings)
        if not self.plan.nodes:
            return i, sources, timings, None
        fut = self.client.submit(_run_chunk, self._key, self._blob, tuple(self.plan.modules),
                                 i, {k: sources[k] for k in self.plan.needs},
                                 key=f"astrogen-chunk-{self._token}-{i:06d}", pure=False,
                                 retries=self.spec.retries)
        keep = {k: v for k, v in sources.items()
                if any(k in s.inputs for s in self.pipeline.nodes if s.stage.kind == "sink")}
        return i, keep, timings, fut

    def _result(self, fut, i: int):
        from distributed import KilledWorker

        try:
            return fut.result()
        except KilledWorker as exc:
            last = getattr(exc.last_worker, "address", str(exc.last_worker))
            raise ExecutorError(
                f"chunk {i} was lost: {self.spec.retries + 1} worker(s) died while running it "
                f"(retries: {self.spec.retries}); rerun with --resume to continue.",
                key="executor", received={"chunk": i, "last worker": last}) from None
        except Exception as exc:
            if fut.status == "error":  # raised by the task itself, after its retries
                raise
            # the scheduler or the connection was lost, or the task was cancelled
            raise ExecutorError(f"lost the Dask cluster while running chunk {i} "
                                f"({type(exc).__name__}: {exc}); rerun with --resume to "
                                "continue.", key="executor", received={"chunk": i}) from None

    def chunks(self, indices):
        pending: deque = deque()
        todo = iter(indices)
        try:
            while True:
                while len(pending) < self.max_in_flight:
                    nxt = next(todo, None)
                    if nxt is None:
                        break
                    pending.append(self._submit(nxt))
                if not pending:
                    return
                i, outputs, timings, fut = pending.popleft()
                if fut is not None:
                    res = self._result(fut, i)
                    fut.release()
                    if isinstance(res, _Failure):
                        raise res.error()
                    out, t = res
                    outputs = {**outputs, **out}
                    timings.update(t)
                yield i, outputs, timings
        finally:
            futures = [f for *_, f in pending if f is not None]
            if futures and self.client is not None:
                with contextlib.suppress(Exception):
                    self.client.cancel(futures)


def _client_from_file(client_cls, path: str, timeout: float):
    """A client of the scheduler described by ``path``, waiting up to ``timeout`` s for the
    file (a scheduler started in the same batch job may not have written it yet)."""
    deadline = time.monotonic() + timeout
    logged = False
    while not os.path.isfile(path):
        if time.monotonic() > deadline:
            raise ExecutorError(f"no scheduler file after {timeout:g} s: start the scheduler "
                                "first (dask scheduler --scheduler-file PATH, or dask-mpi "
                                "--scheduler-file PATH).", key="executor.scheduler_file",
                                received={"scheduler_file": path})
        if not logged:
            log.info("waiting for the scheduler file %s", path)
            logged = True
        time.sleep(0.2)
    try:
        with open(path) as f:
            address = json.load(f)["address"]
    except (OSError, ValueError, KeyError) as exc:
        raise ExecutorError(f"is not a Dask scheduler file ({type(exc).__name__}: {exc}).",
                            key="executor.scheduler_file",
                            received={"scheduler_file": path}) from None
    try:
        return client_cls(address, timeout=f"{timeout}s", set_as_default=False)
    except (OSError, TimeoutError) as exc:
        raise ExecutorError(f"cannot reach the Dask scheduler of the file ({exc}).",
                            key="executor.scheduler_file",
                            received={"scheduler_file": path, "address": address}) from None


def _picklable(obj) -> bool:
    import cloudpickle

    try:
        cloudpickle.dumps(obj)
        return True
    except Exception:  # noqa: BLE001
        return False


def make_executor(spec: ExecutorSpec | None) -> Executor:
    """A fresh executor for ``spec`` (``None``: local)."""
    spec = spec or ExecutorSpec()
    return LocalExecutor(spec) if spec.type == "local" else DaskExecutor(spec)
