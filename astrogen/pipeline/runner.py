"""Run a validated pipeline chunk by chunk, with checkpoints, provenance and ``--resume``.

For every chunk ``i`` the runner reads the sources, applies the map stages (through an
executor: in process, or one Dask task per chunk, see :mod:`astrogen.pipeline.executors`)
and hands the results, in chunk order, to the sinks, which write per-chunk parts
atomically. Then it checkpoints the sinks that accumulate (a scene image) and records ``i``
as done in ``ledger.json``, in that order.
A run stopped at any moment (Ctrl-C, kill -9) is resumed with ``--resume``: finished chunks
are skipped, the sinks' states are restored from the last finished chunk, and since every
random draw depends only on ``(seed, stage, row)``, the outputs are identical to those of an
uninterrupted run.

Final products are written only after the last chunk, each atomically, then
``provenance.json``; the work folder is removed at the end.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from astrogen.errors import AstrogenError, OutputError, ResumeError, wrap_exception
from astrogen.io.atomic import save_npz, write_json
from astrogen.pipeline.build import Pipeline
from astrogen.pipeline.executors import ExecutorSpec, make_executor
from astrogen.seeds import derive_seed
from astrogen.stages.base import StageContext
from astrogen.version import __version__

__all__ = ["run_pipeline", "finished_run", "RunResult", "EXISTING", "WORK_DIR", "stage_provenance_cards", "config_history"]

WORK_DIR = ".astrogen-work"
log = logging.getLogger("astrogen")


@dataclass
class RunResult:
    """What a run wrote and how long each stage took (s)."""

    output: Path
    files: list[Path]
    timings: dict[str, float]
    n_chunks: int
    n_rows: int | None
    resumed_from: int = 0
    wall_time: float = 0.0
    extra: dict = field(default_factory=dict)


def stage_provenance_cards(p: Pipeline, node) -> dict:
    """The provenance cards (key -> (value, comment)) of the FITS files written by ``node``."""
    return {
        "AG_VERS": (__version__, "astrogen version"),
        "AG_PIPE": (p.name[:68], "pipeline name"),
        "AG_SEED": (p.seed, "pipeline seed"),
        "AG_CHASH": (p.config_hash[:16], "sha256 of the resolved config (first 16 hex)"),
        "AG_STAGE": (node.name[:68], "stage that wrote this file"),
        "AG_STYPE": (node.type[:68], "stage type"),
        "AG_SSEED": (derive_seed(p.seed, node.name) % (2 ** 62), "stage seed"),
    }


def config_history(p: Pipeline) -> list[str]:
    """The resolved configuration as HISTORY lines, without the run location (so the same
    pipeline gives byte-identical FITS files in any output folder)."""
    text = yaml.safe_dump(json.loads(json.dumps(p.hashed_config, default=str)),
                          sort_keys=False, allow_unicode=False)
    out = []
    for line in text.splitlines():
        while len(line) > 70:
            out.append(line[:70])
            line = "  " + line[70:]
        out.append(line)
    return out


def _versions() -> dict:
    import astropy
    import galsim

    v = {"astrogen": __version__, "python": platform.python_version(), "numpy": np.__version__,
         "astropy": astropy.__version__, "galsim": galsim.__version__}
    if "tensorflow" in sys.modules:
        v["tensorflow"] = sys.modules["tensorflow"].__version__
    return v


#: in a batch log (stderr not a terminal), a progress line at most this often (s), plus the
#: first and the last chunk
PROGRESS_LOG_SECONDS = 30.0

#: what a run does when its output folder already holds a finished run
EXISTING = ("error", "overwrite", "skip")


def finished_run(out) -> dict | None:
    """The provenance of the finished run in folder ``out`` (its ``provenance.json``), or
    ``None`` when there is none."""
    path = Path(out) / "provenance.json"
    if not path.is_file():
        return None
    try:
        prov = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return prov if isinstance(prov, dict) else {}


def run_pipeline(p: Pipeline, resume: bool = False, progress: bool | None = None,
                 executor: ExecutorSpec | None = None, existing: str = "overwrite"
                 ) -> RunResult:
    """Run ``p`` (see the module docstring).

    Parameters
    ----------
    p : Pipeline
        From :func:`astrogen.pipeline.build_pipeline`.
    resume : bool
        Continue an interrupted run in the same output folder.
    progress : bool or None
        Show a progress bar (``None``: only on a terminal).
    executor : ExecutorSpec, optional
        Where the map stages run; default ``p.executor`` (the ``executor:`` key, local if
        absent). See :mod:`astrogen.pipeline.executors`.
    existing : {"overwrite", "error", "skip"}
        When the output folder holds a finished run (its ``provenance.json``): run again and
        replace it, refuse (GalSim's ``noclobber``; what the CLI does unless told), or return
        that run's result without running.

    Raises
    ------
    OutputError
        ``existing="error"`` and the output folder holds a finished run.
    ResumeError
        ``resume`` on a folder written by a different pipeline configuration.
    AstrogenError
        Bad input found while running; the files this run created are removed.
    ExecutorError
        The Dask cluster failed (unreachable, a chunk lost too many workers); what was
        committed is kept and ``--resume`` continues.
    """
    t_start = time.time()
    if existing not in EXISTING:
        raise ValueError(f"existing must be one of {EXISTING}; got {existing!r}.")
    done = None if resume else finished_run(p.output)
    if done is not None and existing == "error":
        raise OutputError("holds a finished run"
                          + (f" (finished {done['finished_utc']})" if "finished_utc" in done
                             else "")
                          + "; use --overwrite to replace it or --skip-existing to keep it, "
                            "or choose another output.", key="output",
                          received={"output": str(p.output)})
    if done is not None and existing == "skip":
        log.info("%s: %s holds a finished run; skipped", p.name, p.output)
        files = [p.output / f for f in done.get("files", [])] + [p.output / "provenance.json"]
        return RunResult(p.output, files, dict(done.get("timing_s", {})),
                         int(done.get("n_chunks", 0)), done.get("n_rows"),
                         wall_time=time.time() - t_start, extra={"skipped": True})
    try:
        executor = make_executor(executor or p.executor)
        executor.start()  # a cluster that cannot be reached fails the run before any write
    except AstrogenError:
        raise
    except Exception as exc:  # noqa: BLE001 - the one boundary
        raise wrap_exception(exc, key="executor") from None
    try:
        return _run(p, executor, resume, progress, t_start)
    finally:
        with contextlib.suppress(Exception):
            executor.close()


def _read_ledger(path: Path, out: Path) -> dict:
    """The ledger of an interrupted run, or a ResumeError naming it when it is unreadable."""
    try:
        ledger = json.loads(path.read_text())
        done = ledger["done"]
        if not isinstance(ledger, dict) or isinstance(done, bool) or not isinstance(done, int) \
                or done < 0 or not isinstance(ledger.get("config_hash"), str):
            raise ValueError("unexpected content")
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise ResumeError(f"the run ledger is unreadable ({type(exc).__name__}: {exc}); "
                          "rerun without --resume to start over.", key="output",
                          received={"ledger": str(path)}) from None
    return ledger


def _run(p: Pipeline, executor, resume: bool, progress, t_start: float) -> RunResult:
    """The body of :func:`run_pipeline` once the executor is started: the one error
    boundary of a run. Any exception (not only bad input) becomes an
    :class:`~astrogen.errors.AstrogenError` naming the stage that was running, and the
    files this run made are removed; only an executor failure (resumable) and Ctrl-C keep
    what was committed, for ``--resume``."""
    out = p.output
    created_output = not out.exists()
    work = out / WORK_DIR
    written: list[Path] = []
    state = {"stage": None, "step": "preparing the output folder"}
    try:
        return _run_body(p, executor, resume, progress, t_start, out, work, written, state)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001 - the one boundary
        if isinstance(exc, AstrogenError) and getattr(exc, "resumable", False):
            raise  # the executor failed: keep what is committed
        name = getattr(exc, "_astrogen_stage", None) or state["stage"]
        node = next((n for n in p.nodes if n.name == name), None)
        step = None if node else state.get("step")
        if isinstance(exc, AstrogenError):
            err = exc
            if node is not None and getattr(exc, "stage", None) is None \
                    and not str(exc.key or "").startswith("stages["):
                where = f"stages[{node.index}] (stage '{node.name}', {node.type})"
                try:
                    err = exc.in_stage(where, node.line)
                except Exception:  # noqa: BLE001 - a subclass with another signature
                    err = exc
        else:
            err = wrap_exception(exc, key=(f"stages[{node.index}] (stage '{node.name}', "
                                           f"{node.type})" if node else
                                           (f"run ({step})" if step else None)),
                                 line=node.line if node else None)
        # leave nothing behind that this run made
        for path in written:
            with contextlib.suppress(OSError):
                path.unlink()
        shutil.rmtree(work, ignore_errors=True)
        if created_output:
            shutil.rmtree(out, ignore_errors=True)
        if err is exc:
            raise
        raise err from None


def _run_body(p: Pipeline, executor, resume: bool, progress, t_start: float, out: Path,
              work: Path, written: list, state: dict) -> RunResult:
    from tqdm.auto import tqdm

    out.mkdir(parents=True, exist_ok=True)
    ledger_path = work / "ledger.json"
    n_chunks, n_rows = p.n_chunks(), p.n_rows()
    start = 0
    if resume and ledger_path.is_file():
        ledger = _read_ledger(ledger_path, out)
        if ledger.get("config_hash") != p.config_hash:
            raise ResumeError("the output folder holds an interrupted run of a different "
                              "configuration; rerun without --resume to start over.",
                              key="output", received={"output": str(out)})
        start = min(int(ledger["done"]), n_chunks)
        log.info("resuming %s at chunk %d / %d", p.name, start, n_chunks)
    else:
        if resume:
            log.info("nothing to resume in %s: starting from scratch", out)
        if work.exists():
            shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    for stale in out.rglob(".*.tmp-*"):  # temporary files of a killed run (never final)
        with contextlib.suppress(OSError):
            stale.unlink()
    timings = {n.name: 0.0 for n in p.nodes}
    sinks = [n for n in p.nodes if n.stage.kind == "sink"]
    history = config_history(p)
    contexts = {}
    for n in p.nodes:
        state["stage"] = n.name
        cards = stage_provenance_cards(p, n)
        stage_dir = work / n.name
        if stage_dir.resolve().parent != work.resolve():  # names are checked by build
            raise OutputError("a stage name must not leave the work folder.", key="name",
                              received={"name": n.name})
        ctx = StageContext(name=n.name, seed=derive_seed(p.seed, n.name), output_dir=out,
                           work_dir=stage_dir, provenance=cards, log=log,
                           history=history)
        ctx.work_dir.mkdir(parents=True, exist_ok=True)
        contexts[n.name] = ctx
        if n.stage.kind != "map":  # map stages are set up by the executor
            t0 = time.perf_counter()
            n.stage.setup(ctx)
            timings[n.name] += time.perf_counter() - t0
    state["stage"] = None
    executor.open(p, {n.name: contexts[n.name] for n in p.nodes if n.stage.kind == "map"})
    for name, dt in executor.setup_timings.items():
        timings[name] += dt
    if start > 0:
        for n in sinks:
            state["stage"] = n.name
            state_file = n.stage.ctx.work_dir / f"state_{start - 1:06d}.npz"
            if state_file.is_file():
                with np.load(state_file) as z:
                    n.stage.set_state({k: z[k] for k in z.files})
    state["stage"], state["step"] = None, "writing the run ledger"
    write_json(ledger_path, {"config_hash": p.config_hash, "n_chunks": n_chunks,
                             "done": start, "pipeline": p.name})
    state["step"] = "reading the sources"
    bar = tqdm(total=n_chunks, initial=start, unit="chunk", desc=p.name,
               disable=(not sys.stderr.isatty()) if progress is None else not progress)
    # no bar in a batch log (stderr not a terminal): progress lines instead
    lines = progress is None and bar.disable
    t_line = t_loop = time.time()
    # sources and map stages: by the executor (here or on workers), in chunk order
    for i, results, chunk_timings in executor.chunks(range(start, n_chunks)):
        for name, dt in chunk_timings.items():
            timings[name] += dt
        for n in sinks:
            state["stage"] = n.name
            t0 = time.perf_counter()
            n.stage.consume(i, *[results[name] for name in n.inputs])
            timings[n.name] += time.perf_counter() - t0
        for n in sinks:  # checkpoint accumulating sinks, then mark the chunk done
            state["stage"] = n.name
            st = n.stage.get_state()
            if st is not None:
                save_npz(n.stage.ctx.work_dir / f"state_{i:06d}.npz", **st)
        state["stage"], state["step"] = None, "writing the run ledger"
        write_json(ledger_path, {"config_hash": p.config_hash, "n_chunks": n_chunks,
                                 "done": i + 1, "pipeline": p.name})
        state["step"] = "reading the sources"
        # only now is the previous checkpoint no longer the one --resume would load
        for n in sinks:
            with contextlib.suppress(FileNotFoundError):
                (n.stage.ctx.work_dir / f"state_{i - 1:06d}.npz").unlink()
        bar.update(1)
        log.debug("chunk %d / %d done", i + 1, n_chunks)
        now = time.time()
        if lines and (i == start or i + 1 == n_chunks or now - t_line >= PROGRESS_LOG_SECONDS):
            t_line = now
            rate = (i + 1 - start) / max(now - t_loop, 1e-9)
            eta = (n_chunks - i - 1) / rate
            log.info("%s: chunk %d / %d done (%.0f %%), %.1f s elapsed, about %.0f s left",
                     p.name, i + 1, n_chunks, 100.0 * (i + 1) / n_chunks, now - t_start, eta)
    bar.close()
    executor_info = executor.describe()
    executor.close()
    owners: dict[Path, str] = {}
    for n in sinks:
        state["stage"] = n.name
        t0 = time.perf_counter()
        for path in n.stage.finalize():
            path = Path(path)
            key = Path(os.path.normcase(os.path.abspath(path)))
            if key in owners:  # build checks declared names; this catches the others
                raise OutputError(f"stage '{n.name}' wrote '{path.name}', which stage "
                                  f"'{owners[key]}' had written; give one of them another "
                                  "file name.", key=f"stage '{n.name}'",
                                  received={"file": str(path)})
            owners[key] = n.name
            written.append(path)
            log.debug("wrote %s", path)
        timings[n.name] += time.perf_counter() - t0
    state["stage"] = None
    wall = time.time() - t_start
    prov = {
        "pipeline": p.name, "seed": p.seed, "config_hash": p.config_hash,
        "config": json.loads(json.dumps(p.resolved, default=str)), "source": p.source,
        "versions": _versions(), "n_chunks": n_chunks, "n_rows": n_rows,
        "resumed_from_chunk": start, "executor": executor_info,
        "timing_s": {k: round(v, 4) for k, v in timings.items()},
        "wall_time_s": round(wall, 3),
        "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "files": [str(f.relative_to(out)) if f.is_relative_to(out) else str(f) for f in written],
    }
    state["step"] = "writing provenance.json"
    write_json(out / "provenance.json", prov)
    written.append(out / "provenance.json")
    # the ledger goes first: a kill while the parts are being deleted must not leave a ledger
    # that says "all done" next to missing parts (--resume then simply starts over)
    with contextlib.suppress(FileNotFoundError):
        ledger_path.unlink()
    shutil.rmtree(work, ignore_errors=True)
    return RunResult(out, written, timings, n_chunks, n_rows, start, wall)
