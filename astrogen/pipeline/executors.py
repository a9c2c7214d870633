"""Executors: where the map stages of a pipeline run, one catalog chunk (or box) per task.

The runner drives every executor the same way (:meth:`Executor.chunks`): the driver reads
each chunk from the source stages, the executor applies the chain of map stages to it and
hands back, **in chunk order**, the outputs the sinks need; the sinks then consume them in the
driver exactly as in a local run and commit them chunk by chunk (ledger, ``--resume``).

``local`` (default)
    Everything in the calling process, one chunk after the other.
``dask``
    Each chunk's chain of map stages is one Dask task. Either a ``LocalCluster`` started for
    the run (``n_workers`` processes of ``threads_per_worker`` threads, loopback only, no
    dashboard) or an existing scheduler (``address``), so dask-jobqueue, SLURM or Kubernetes
    clusters work unchanged. The map stages are pickled once (before :meth:`Stage.setup`, so
    no model weights travel) and set up once per worker process, cached by a hash of that
    pickle; at most ``max_in_flight`` chunks are submitted ahead of the one the sinks wait
    for, and Dask's debugging logs of recent messages are switched off for the connections
    the run opens, so the driver's memory does not grow with the catalog. (A scheduler started
    elsewhere keeps its own configuration: set ``distributed.admin.low-level-log-length: 0``
    in its Dask config, or it holds up to 1000 recent task messages, chunk data included.)

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
import importlib
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
           "ChunkPlan", "parse_executor", "executor_with", "make_executor", "EXECUTOR_KEYS"]

log = logging.getLogger("astrogen")

#: key -> (accepted types, meaning); ``type`` is required when a mapping is given.
EXECUTOR_KEYS: dict[str, tuple[tuple, str]] = {
    "type": ((str,), "'local' (in process, default) or 'dask'"),
    "address": ((str,), "address of a running Dask scheduler, e.g. tcp://host:8786"),
    "n_workers": ((int,), "worker processes of the LocalCluster started for the run"),
    "threads_per_worker": ((int,), "threads per worker process of that LocalCluster"),
    "retries": ((int,), "times a task is rerun after a worker death or unexpected error"),
    "max_in_flight": ((int,), "chunks submitted ahead of the one being written"),
}
_TYPES = ("local", "dask")
#: LocalCluster options: no dashboard, and the scheduler's small HTTP server (health and
#: metrics routes, always started) on a free loopback port instead of 8787
LOOPBACK_NO_DASHBOARD = {"dashboard_address": None,
                         "scheduler_kwargs": {"dashboard_address": "127.0.0.1:0"}}
_DASK_ONLY = ("address", "n_workers", "threads_per_worker", "retries", "max_in_flight")


class ExecutorError(AstrogenError, RuntimeError):
    """The execution back-end failed (cluster unreachable, a chunk lost too many workers).

    Unlike bad-input errors, the work committed so far is kept: ``--resume`` continues.
    """

    #: tells the runner not to delete the partial run
    resumable = True


@dataclass(frozen=True)
class ExecutorSpec:
    """Validated ``executor:`` settings of a pipeline.

    Attributes
    ----------
    type : {"local", "dask"}
        Where the map stages run.
    address : str or None
        Scheduler address of an existing Dask cluster; ``None`` starts a ``LocalCluster``.
    n_workers : int or None
        Worker processes of the ``LocalCluster`` (default: the number of CPU cores).
    threads_per_worker : int
        Threads per worker process of the ``LocalCluster``.
    retries : int
        Reruns of a task after a worker death or an unexpected (non-astrogen) exception.
    max_in_flight : int or None
        Chunks submitted ahead of the one the sinks wait for (default: twice the number of
        worker threads, at least 4).
    """

    type: str = "local"
    address: str | None = None
    n_workers: int | None = None
    threads_per_worker: int = 1
    retries: int = 3
    max_in_flight: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of the settings that apply to this type (for provenance)."""
        if self.type == "local":
            return {"type": "local"}
        d = asdict(self)
        if self.address:
            d.pop("n_workers"), d.pop("threads_per_worker")
        else:
            d.pop("address")
        return d


def _check_value(key: str, value, where: str, line: int | None):
    types, what = EXECUTOR_KEYS[key]
    if value is None and key != "type":
        return None
    if isinstance(value, bool) or not isinstance(value, types):
        raise ConfigError(f"must be {'an integer' if types == (int,) else 'a string'} "
                          f"({what}).", key=where, line=line, received={key: value})
    if key == "type" and value not in _TYPES:
        raise ConfigError(f"must be one of {list(_TYPES)}.{suggest(value, _TYPES)}", key=where,
                          line=line, received={key: value})
    minimum = {"n_workers": 1, "threads_per_worker": 1, "retries": 0, "max_in_flight": 1}
    if key in minimum and value < minimum[key]:
        raise ConfigError(f"must be an integer >= {minimum[key]}.", key=where, line=line,
                          received={key: value})
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
        A value of the wrong type or range, or a dask-only key with ``type: local``.
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
        raise ConfigError("the executor needs a 'type' ('local' or 'dask').", key=prefix,
                          line=line_of((prefix,)), received={"keys": list(value)})
    checked = {k: _check_value(k, v, f"{prefix}.{k}", line_of((prefix, k)))
               for k, v in value.items()}
    checked = {k: v for k, v in checked.items() if v is not None}
    if checked["type"] == "local":
        extra = [k for k in checked if k in _DASK_ONLY]
        if extra:
            raise ConfigError("is used only by the dask executor (set type: dask).",
                              key=f"{prefix}.{extra[0]}", line=line_of((prefix, extra[0])),
                              received={extra[0]: checked[extra[0]]})
    if "address" in checked:
        clash = [k for k in ("n_workers", "threads_per_worker") if k in checked]
        if clash:
            raise ConfigError("applies to the LocalCluster started by astrogen, not to an "
                              "existing scheduler (address).", key=f"{prefix}.{clash[0]}",
                              line=line_of((prefix, clash[0])),
                              received={clash[0]: checked[clash[0]], "address": checked["address"]})
    return ExecutorSpec(**checked)


def executor_with(spec: ExecutorSpec, type: str | None = None, n_workers: int | None = None,
                  threads_per_worker: int | None = None,
                  address: str | None = None) -> ExecutorSpec:
    """``spec`` with command-line options applied (``--executor``, ``--workers``, ...).

    ``--workers``, ``--threads-per-worker`` or ``--scheduler`` without ``--executor`` imply
    ``dask``. The result is checked like the YAML value, errors naming the option.
    """
    opts = {"n_workers": n_workers, "threads_per_worker": threads_per_worker,
            "address": address}
    opts = {k: v for k, v in opts.items() if v is not None}
    if type is None and not opts:
        return spec
    if (type or ("dask" if opts else spec.type)) == "local":
        merged = {"type": "local", **opts}
    else:
        merged = {"type": "dask", "retries": spec.retries, "max_in_flight": spec.max_in_flight}
        if spec.type == "dask" and not opts:
            merged.update(address=spec.address, n_workers=spec.n_workers,
                          threads_per_worker=None if spec.address else spec.threads_per_worker)
        elif spec.type == "dask" and "address" not in opts and not spec.address:
            merged.update(n_workers=spec.n_workers, threads_per_worker=spec.threads_per_worker)
        merged.update(opts)
    try:
        return parse_executor(merged)
    except AstrogenError as exc:  # name the command-line option that set the bad value
        key = (exc.key or "").split(".")[-1]
        option = {"type": "--executor", "n_workers": "--workers", "address": "--scheduler",
                  "threads_per_worker": "--threads-per-worker"}.get(key)
        if option and (key in opts or (key == "type" and type is not None)):
            raise exc.__class__(exc.message, key=option, received=exc.received) from None
        raise


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
                   tensorflow=any(type(n.stage).uses_tensorflow for n in maps),
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
        if self.spec.address:
            try:
                self.client = Client(self.spec.address, timeout="20s",
                                     set_as_default=False)
            except (OSError, TimeoutError) as exc:
                raise ExecutorError(f"cannot reach the Dask scheduler ({exc}).",
                                    key="executor.address",
                                    received={"address": self.spec.address}) from None
        else:
            n = self.spec.n_workers or os.cpu_count() or 1
            with dask.config.set({"distributed.scheduler.allowed-failures": self.spec.retries}):
                self.cluster = LocalCluster(
                    n_workers=n, threads_per_worker=self.spec.threads_per_worker,
                    processes=True, host="127.0.0.1", silence_logs=silence,
                    **LOOPBACK_NO_DASHBOARD)
            self.client = Client(self.cluster, set_as_default=False)
        self._nthreads = sum(self.client.nthreads().values())
        log.info("dask executor: %s, %d worker thread(s)",
                 self.spec.address or "LocalCluster", self._nthreads)

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
    return DaskExecutor(spec) if spec.type == "dask" else LocalExecutor(spec)
