"""Command line: ``astrogen [-v N] {run,validate,train,stages} ...``.

``main(argv)`` is testable in-process and returns the exit status: 0 on success, 2 for bad
input, 3 when the environment failed (disk full, permission denied, out of memory), 130 when
interrupted (rerun with ``--resume``). ``main`` is the one boundary: any exception, not only
an :class:`~astrogen.errors.AstrogenError`, is printed as one line (never a traceback; ``-v
2`` logs the traceback too) and the run's partial files are removed. Python warnings raised
during a command are shown (one line each) only when it succeeds, or with ``-v 2``.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

from astrogen.version import __version__

__all__ = ["main"]


def _silence_tensorflow(verbosity: int) -> None:
    """TensorFlow's start-up noise is shown only with ``-v 3``.

    The C++ log level hides the oneDNN notice; the oneDNN kernels themselves stay on
    (turning them off to hide the notice made every CLI run and training up to 2.6x slower
    than the same code from Python).
    """
    if verbosity < 3:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        logging.getLogger("tensorflow").setLevel(logging.ERROR)


def _global_options(p: argparse.ArgumentParser, suppress: bool) -> None:
    """The options accepted before and after the subcommand (``astrogen -v 2 run x.yaml`` and
    ``astrogen run x.yaml -v 2``): after it, defaults are suppressed so that a value given
    before the subcommand is not reset."""
    default = (lambda v: argparse.SUPPRESS) if suppress else (lambda v: v)
    p.add_argument("-v", "--verbosity", type=int, default=default(1), choices=range(4),
                   metavar="N", help="0: errors only, 1: progress (default), 2: debug, 3: "
                                     "debug + TensorFlow logs")
    p.add_argument("--log-file", default=default(None), metavar="FILE",
                   help="also write the log (with times, at least -v 1 detail) to FILE")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="astrogen",
        description="Deep generative models as stages of astronomical image-simulation "
                    "pipelines.")
    p.add_argument("--version", action="version", version=f"astrogen {__version__}")
    _global_options(p, suppress=False)
    common = argparse.ArgumentParser(add_help=False)
    _global_options(common, suppress=True)
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run a pipeline YAML", parents=[common])
    r.add_argument("file", help="pipeline YAML file")
    r.add_argument("overrides", nargs="*", metavar="key.sub=value",
                   help="override config values, e.g. seed=3 stages.render.stamp_size=96")
    r.add_argument("--resume", action="store_true",
                   help="continue an interrupted run in the same output folder")
    r.add_argument("--no-progress", action="store_true",
                   help="no progress bar on a terminal, no progress lines in a log")
    clobber = r.add_mutually_exclusive_group()
    clobber.add_argument("--overwrite", action="store_true",
                         help="replace a finished run in the output folder (refused by default)")
    clobber.add_argument("--skip-existing", action="store_true",
                         help="do nothing if the output folder holds a finished run")
    r.add_argument("--allow-eval", action="store_true",
                   help="let GalSim evaluate '$' expressions, '@' references and type: Eval "
                        "in the pipeline: they run Python code from the file (off by default)")
    r.add_argument("--executor", choices=("local", "dask", "slurm", "pbs"), default=None,
                   help="where map stages run (default: the pipeline's 'executor:' key, "
                        "else local)")
    r.add_argument("--workers", type=int, default=None, metavar="N",
                   help="dask: worker processes of a LocalCluster (implies --executor dask)")
    r.add_argument("--threads-per-worker", type=int, default=None, metavar="N",
                   help="dask: threads per worker process (implies --executor dask)")
    r.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="dask: address of a running scheduler, e.g. tcp://host:8786 "
                        "(dask-jobqueue, SLURM, Kubernetes; implies --executor dask)")
    r.add_argument("--scheduler-file", default=None, metavar="FILE", help="dask: JSON file of a running scheduler (dask scheduler --scheduler-file, dask-mpi; implies --executor dask)")  # noqa: E501
    v = sub.add_parser("validate", help="check a pipeline without running it", parents=[common])
    v.add_argument("file")
    v.add_argument("--allow-eval", action="store_true",
                   help="accept GalSim '$' / '@' evaluation (runs code from the file)")
    v.add_argument("overrides", nargs="*", metavar="key.sub=value")
    t = sub.add_parser("train", help="train a model from a training YAML (configs/*.yaml)",
                       parents=[common])
    t.add_argument("file", help="training YAML file")
    t.add_argument("overrides", nargs="*", metavar="key.sub=value",
                   help="override config values, e.g. training.vae_steps=100")
    t.add_argument("--resume", action="store_true",
                   help="continue from the last checkpoint in the run folder (the step "
                        "counts may grow: a finished run is trained longer)")
    s = sub.add_parser("stages", help="list the registered stage types, or describe some",
                       parents=[common])
    s.add_argument("types", nargs="*", metavar="TYPE",
                   help="stage types to describe in full (parameters, units, defaults, "
                        "allowed values), e.g. 'astrogen stages observe'")
    s.add_argument("--modules", nargs="*", default=[], help="plug-in modules to import first")
    return p


def _load(file, overrides, allow_eval: bool = False):
    from astrogen.pipeline.build import build_pipeline
    from astrogen.pipeline.config import apply_overrides, load_config

    cfg = load_config(file)
    if overrides:
        cfg = apply_overrides(cfg, overrides)
    return build_pipeline(cfg, allow_eval=allow_eval)


def _cmd_run(args) -> int:
    from astrogen.pipeline.executors import executor_with
    from astrogen.pipeline.runner import run_pipeline

    p = _load(args.file, args.overrides, allow_eval=args.allow_eval)
    p.executor = executor_with(p.executor, type=args.executor, n_workers=args.workers,
                               threads_per_worker=args.threads_per_worker,
                               address=args.scheduler, scheduler_file=args.scheduler_file)
    existing = "overwrite" if args.overwrite else ("skip" if args.skip_existing else "error")
    log = logging.getLogger("astrogen")
    log.info("%s: %d stage(s), %s item(s) in %d chunk(s) -> %s", p.name, len(p.nodes),
             p.n_rows(), p.n_chunks(), p.output)
    if args.verbosity < 3 and any(n.stage.uses_tensorflow for n in p.nodes):
        from astrogen.pipeline.runner import finished_run

        if args.resume or existing != "skip" or finished_run(p.output) is None:
            log.info("loading TensorFlow (takes a few seconds)")
            from astrogen.tf_quiet import import_tensorflow_quietly

            import_tensorflow_quietly()
    progress = False if args.no_progress or args.verbosity == 0 else None
    args.started = True  # from here on a failure may leave half-written library objects
    res = run_pipeline(p, resume=args.resume, progress=progress, existing=existing)
    if args.verbosity >= 1:
        if res.extra.get("skipped"):
            return 0  # the runner logged it
        print(f"astrogen: {p.name}: {res.n_rows} item(s) (rows or boxes) in {res.n_chunks} chunk(s), "
              f"{res.wall_time:.1f} s -> {res.output}")
        for f in res.files:
            print(f"  {f}")
    return 0


def _cmd_train(args) -> int:
    from astrogen.training import run_training

    if args.verbosity < 3:
        logging.getLogger("astrogen").info("loading TensorFlow (takes a few seconds)")
        from astrogen.tf_quiet import import_tensorflow_quietly

        import_tensorflow_quietly()
    res = run_training(args.file, resume=args.resume, overrides=args.overrides)
    if args.verbosity >= 1:
        print(f"astrogen: trained {res.get('output')} (steps {res.get('steps_done')}, "
              f"run folder {res.get('run_dir')})")
        last = res.get("last") or {}
        numbers = {k: v for k, v in last.items() if isinstance(v, (int, float))}
        if numbers:
            print("  last step: " + ", ".join(f"{k} {v:.5g}" for k, v in numbers.items()))
    return 0


def _cmd_validate(args) -> int:
    p = _load(args.file, args.overrides, allow_eval=args.allow_eval)
    print(f"astrogen: {args.file}: pipeline '{p.name}' is valid: {len(p.nodes)} stages, "
          f"{p.n_rows()} item(s) in {p.n_chunks()} chunk(s), output '{p.output}'.")
    for n in p.nodes:
        ins = f" <- {', '.join(n.inputs)}" if n.inputs else ""
        print(f"  {n.name} ({n.type}, {n.stage.kind}){ins}")
    return 0


def _cmd_stages(args) -> int:
    import importlib
    import inspect
    import textwrap

    import astrogen.stages  # noqa: F401
    from astrogen.registry import STAGES

    for m in args.modules:
        try:
            importlib.import_module(m)
        except Exception as exc:  # noqa: BLE001 - reported as one line by main
            from astrogen.errors import ConfigError

            raise ConfigError(f"cannot import plug-in module ({type(exc).__name__}: {exc}).",
                              key="--modules", received={"module": m}) from None
    names = list(dict(STAGES.items()))
    for t in args.types:
        if t not in names:
            from astrogen.errors import UnknownKeyError, suggest

            raise UnknownKeyError(f"is not a registered stage type.{suggest(t, names)} "
                                  "'astrogen stages' lists them all.", key="TYPE",
                                  received={"TYPE": t})
    for name in args.types or names:
        cls = STAGES.get(name)
        ins = ", ".join(" | ".join(t.__name__ for t in (a if isinstance(a, tuple) else (a,)))
                        for a in cls.input_types)
        out = cls.output_type.__name__ if cls.output_type else "files"
        print(f"{name}  [{cls.kind}]  ({ins or '-'}) -> {out}")
        print(f"    {cls.summary()}")
        docs = cls.parameter_docs() if args.types else {}
        for k, prm in cls.parameters().items():
            default = "required" if prm.default is inspect.Parameter.empty else f"= {prm.default!r}"
            unit = f"  [{cls.units[k]}]" if k in cls.units else ""
            kind, text = docs.get(k, ("", ""))
            print(f"    {k} {default}{unit}" + (f"  ({kind})" if kind else ""))
            if text:
                for line in textwrap.wrap(text, 84):
                    print(f"        {line}")
        if args.types:
            doc = inspect.getdoc(cls) or ""
            body = doc.split("\nParameters\n", 1)[0].splitlines()[1:]
            if any(x.strip() for x in body):
                print("    " + "\n    ".join(x for x in body).strip())
            print()
    return 0


def _quiet_dask_logs() -> None:
    """Silence Dask, Tornado and asyncio loggers now and when ``distributed`` is imported later.

    Importing ``distributed`` sets its loggers to INFO from Dask's config, which would undo a
    level set before the import; setting the config too keeps them quiet either way.
    """
    try:
        import dask.config
    except ImportError:  # pragma: no cover - dask is a dependency
        pass
    else:
        dask.config.set({"distributed.logging": {"distributed": "critical",
                                                 "distributed.client": "critical",
                                                 "distributed.gc": "critical"}})
    prefixes = ("distributed", "tornado", "asyncio")
    names = [n for n in logging.root.manager.loggerDict if n.split(".")[0] in prefixes]
    for name in {*prefixes, *names}:
        logging.getLogger(name).setLevel(logging.CRITICAL)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``astrogen`` console script; returns the exit status."""
    from astrogen.errors import AstrogenError

    parser = _parser()
    # overrides may come after options (``train file --resume key=value``), which argparse
    # does not gather into one positional list by itself
    args, extra = parser.parse_known_args(argv)
    bad = [a for a in extra if a.startswith("-") or "=" not in a]
    if bad or (extra and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(bad or extra)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    _silence_tensorflow(args.verbosity)
    level = {0: logging.ERROR, 1: logging.WARNING, 2: logging.DEBUG, 3: logging.DEBUG}
    logging.basicConfig(level=level[args.verbosity], format="astrogen: %(message)s",
                        stream=sys.stderr, force=True)
    if args.verbosity < 2:
        # Dask's client threads log connection tear-down errors (CommClosedError tracebacks)
        # after a run stopped on bad input; below -v 2 the user gets the one-line error only.
        _quiet_dask_logs()
    # Always set: an earlier in-process call (tests, notebooks) may have lowered it.
    logging.getLogger("astrogen").setLevel({0: logging.ERROR, 1: logging.INFO}.get(
        args.verbosity, logging.DEBUG))
    if args.log_file:
        args.log_handler = _add_log_file(parser, args.log_file, level[args.verbosity], argv)
    import warnings

    hook = sys.unraisablehook
    # "Exception ignored in ... __del__" of objects a failed write left behind (a library's
    # half-written file) would print tracebacks after the one-line error: logged at -v 2
    sys.unraisablehook = _quiet_unraisable
    try:
        status = _main(args)
        if status and getattr(args, "started", False):
            import gc

            gc.collect()  # a failed run: let such objects go now, while the hook is quiet
        return status
    finally:
        sys.unraisablehook = hook


def _add_log_file(parser, path: str, level: int, argv) -> logging.Handler:
    """Also log to ``path`` (appended; times in UTC; at least ``-v 1`` detail); returns the
    handler."""
    import time

    try:
        handler = logging.FileHandler(path, mode="a", encoding="utf-8")
    except OSError as exc:
        parser.error(f"--log-file: cannot open {path!r} ({exc.strerror or exc})")
    fmt = logging.Formatter("%(asctime)sZ %(levelname)s %(name)s: %(message)s",
                            "%Y-%m-%dT%H:%M:%S")
    fmt.converter = time.gmtime
    handler.setFormatter(fmt)
    handler.setLevel(min(level, logging.INFO))
    root = logging.getLogger()
    for h in root.handlers:  # the terminal keeps the -v level of astrogen's messages
        h.setLevel(logging.ERROR if level >= logging.ERROR else min(level, logging.INFO))
    root.addHandler(handler)
    root.setLevel(min(root.level, logging.INFO))
    ours = logging.getLogger("astrogen")
    ours.setLevel(min(ours.level, logging.INFO))
    ours.info("astrogen %s: %s", __version__, " ".join(sys.argv[1:] if argv is None else argv))
    return handler


def _quiet_unraisable(unraisable) -> None:
    logging.getLogger("astrogen").debug("ignored in %r: %s: %s", unraisable.object,
                                        type(unraisable.exc_value).__name__,
                                        unraisable.exc_value)


def _main(args) -> int:
    import warnings

    from astrogen.errors import AstrogenError

    with warnings.catch_warnings(record=True) as caught:  # the filters stay Python's
        try:
            status = {"run": _cmd_run, "validate": _cmd_validate, "train": _cmd_train,
                      "stages": _cmd_stages}[args.command](args)
        except KeyboardInterrupt:
            print("astrogen: interrupted; rerun with --resume to continue", file=sys.stderr)
            return 130
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - the one boundary
            from astrogen.errors import wrap_exception

            if isinstance(exc, SystemExit) and exc.code in (0, None):
                return 0
            if not isinstance(exc, AstrogenError):
                args.started = True
            err = exc if isinstance(exc, AstrogenError) else wrap_exception(exc)
            if args.verbosity >= 2:
                _show_warnings(caught)
                logging.getLogger("astrogen").debug("traceback", exc_info=exc)
            print(f"astrogen: error: {type(err).__name__}: {err}", file=sys.stderr)
            handler = getattr(args, "log_handler", None)
            if handler is not None:  # the log file gets the error too (the terminal has it)
                handler.handle(logging.LogRecord("astrogen", logging.ERROR, __file__, 0,
                                                 f"error: {type(err).__name__}: {err}",
                                                 None, None))
            return getattr(err, "exit_status", 2)
    if args.verbosity >= 1:
        _show_warnings(caught)
    return status


def _show_warnings(caught) -> None:
    """Print each distinct warning once, on one line."""
    from astrogen.errors import one_line

    seen = set()
    for w in caught:
        text = one_line(f"{w.category.__name__}: {w.message}", limit=300)
        if text not in seen:
            seen.add(text)
            print(f"astrogen: warning: {text}", file=sys.stderr)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
