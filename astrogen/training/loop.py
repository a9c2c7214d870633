"""The one training loop: run folder, resume, checkpoints, loss log, progress bar,
finite-loss guard, timing, result file. Every trainer uses it; a trainer supplies its data,
its model's step and its hooks.

Run folder (``run_dir``): ``config.json`` (the checked configuration), ``checkpoints/``
(atomic ``ckpt_<step>.npz`` + ``latest.json``, :mod:`astrogen.training.checkpoint`),
``losses.jsonl`` (one JSON object per logged step; on resume the lines after the restored
checkpoint are dropped), ``result.json``, ``.lock`` (the process id of the run in progress:
a second process on the same folder is refused).

Typical use (see :mod:`astrogen.training.halo_trainer`, the smallest trainer)::

    run = Run(cfg, resume)                 # resume checks
    ...build the data set and the model...
    run.start()                            # run folder + config.json
    step = run.restore({"model": model.weights, "optimizer": opt.variables})
    summary = run.loop(step, total, step_fn, name="halo_unet")
    run.finish({...trainer's fields..., **summary})
"""
from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

from astrogen.errors import ConfigError, ResumeError
from astrogen.io.atomic import write_json
from astrogen.training.checkpoint import (flatten, restore_run, resume_checkpoint,
                                          save_checkpoint)

__all__ = ["Run", "take_lock", "adam", "learning_rate", "current_lr", "checkpoint_of_run",
           "LOSS_LOG_SECONDS"]

log = logging.getLogger("astrogen")

#: without a progress bar on a terminal (a batch log), a loss line at most this often (s),
#: plus the first and the last logged step
LOSS_LOG_SECONDS = 30.0


def take_lock(run_dir: Path) -> Path:
    """``run_dir/.lock`` holding this process id; refuse if a live process holds it.

    Raises
    ------
    ResumeError
        Naming ``run_dir`` and the process holding it.
    """
    lock = Path(run_dir) / ".lock"
    if lock.is_file():
        try:
            pid = int(lock.read_text().strip())
            os.kill(pid, 0)  # raises if there is no such process
        except (ValueError, ProcessLookupError):
            pass  # stale lock of a killed run
        except PermissionError:  # alive, owned by another user
            raise ResumeError("another training process is using this run folder.",
                              key="run_dir", received={"run_dir": str(run_dir), "pid": pid})
        else:
            if pid != os.getpid():
                raise ResumeError("another training process is using this run folder.",
                                  key="run_dir", received={"run_dir": str(run_dir), "pid": pid})
    lock.write_text(f"{os.getpid()}\n")
    return lock


def checkpoint_of_run(config_path, overrides=None, models=None):
    """``(cfg, newest checkpoint)`` of the run of a training file (to export the model of a
    run stopped before its last step).

    Raises
    ------
    ConfigError
        The file's ``model`` is not one of ``models`` (if given).
    ResumeError
        The run folder holds no checkpoint.
    """
    from astrogen.training.checkpoint import latest_checkpoint
    from astrogen.training.config import load_training_config

    cfg = load_training_config(str(config_path), overrides)
    if models is not None and cfg["model"] not in models:
        raise ConfigError(f"not a configuration of {' / '.join(models)}.", key="model",
                          received={"model": cfg["model"]})
    ckpt = latest_checkpoint(cfg.run_dir / "checkpoints")
    if ckpt is None:
        raise ResumeError("the run folder holds no checkpoint.", key="run_dir",
                          received={"run_dir": str(cfg.run_dir)})
    return cfg, ckpt


def learning_rate(kind: str, lr: float, steps: int, final_fraction: float):
    """A constant learning rate, or Keras's cosine decay from ``lr`` to
    ``final_fraction * lr`` over ``steps`` steps (``kind="cosine"``)."""
    import keras

    if kind == "cosine" and steps > 0:
        return keras.optimizers.schedules.CosineDecay(lr, decay_steps=steps,
                                                      alpha=final_fraction)
    return lr


def adam(lr, name: str, clipnorm: float | None = None, **kwargs):
    """``keras.optimizers.Adam`` with optional global-norm clipping (``clipnorm``)."""
    import keras

    clip = {"global_clipnorm": clipnorm} if clipnorm else {}
    return keras.optimizers.Adam(lr, name=name, **clip, **kwargs)


def current_lr(optimizer) -> float:
    """The optimizer's learning rate now (after its schedule)."""
    return float(np.asarray(optimizer.learning_rate))


class Run:
    """One training run of a checked configuration (``cfg.run_dir``, ``cfg["training"]``).

    Parameters
    ----------
    cfg : astrogen.training.schema.TrainingConfig
        Its ``training`` section has the :func:`~astrogen.training.schema.loop_keys`.
    resume : bool
        ``--resume``: continue from the newest checkpoint (the configuration may differ only
        in ``cfg.resume_mutable``, and the step counts ``cfg.resume_growable`` may grow: a
        finished run is trained longer).

    Raises
    ------
    ResumeError
        Checkpoints present without ``resume``, or ``resume`` with another configuration.
    """

    def __init__(self, cfg, resume: bool = False):
        self.cfg = cfg
        self.t = cfg["training"]
        self.run_dir = cfg.run_dir
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.log_path = self.run_dir / "losses.jsonl"
        self.output = Path(cfg["output"])
        mutable = cfg.resume_mutable
        growable = cfg.resume_growable

        def comparable(old):
            from astrogen.training.schema import without_keys

            return flatten(without_keys(old if old is not None else cfg, mutable))

        self.ckpt = resume_checkpoint(self.run_dir, resume, comparable, growable=growable)
        self.groups: dict = {}
        self.state: dict = {}
        self._lock: Path | None = None
        self._log = None

    # ------------------------------------------------------------------ folder
    def start(self) -> None:
        """Create the run folder, take its lock and write ``config.json``."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._lock = take_lock(self.run_dir)
        write_json(self.run_dir / "config.json", self.cfg)

    def release(self) -> None:
        """Give the run folder's lock back (also done by :meth:`finish`)."""
        if self._lock is not None:
            self._lock.unlink(missing_ok=True)
            self._lock = None

    def restore(self, groups: dict[str, list], **state) -> int:
        """Register the checkpointed variables (``name -> list of variables``, e.g. weights
        and optimizer variables) and restore them from the checkpoint being resumed; the
        loss log is cut back to its step (or deleted for a fresh run). ``state``: JSON-able
        values stored in every checkpoint. Returns the step to continue from."""
        self.groups = groups
        self.state = state
        step = restore_run(self.ckpt, groups, self.log_path)
        if self.ckpt is not None:
            log.info("resuming from step %d (%s)", step, self.ckpt)
        return step

    def checkpoint(self, step: int, **state) -> None:
        """Save every registered variable at ``step`` (atomic; the ``keep_checkpoints``
        newest are kept)."""
        save_checkpoint(self.ckpt_dir, step, self.groups, {**self.state, **state},
                        keep=int(self.t["keep_checkpoints"]))

    def stop_step(self, step: int, total: int) -> int:
        """Where this process stops: ``total``, or ``max_steps_this_run`` steps on."""
        max_run = self.t["max_steps_this_run"]
        return total if max_run is None else min(total, step + int(max_run))

    def write(self, record: dict) -> None:
        """Append one JSON line to the loss log (only inside :meth:`loop`)."""
        self._log.write(json.dumps(record) + "\n")
        self._log.flush()

    # ------------------------------------------------------------------ the loop
    def loop(self, step: int, total: int, step_fn: Callable[[int], dict], *, name: str,
             before: Callable[[int, int], None] | None = None,
             after: Callable[[int, dict, int], None] | None = None,
             log_extra: Callable[[int, int], dict] | None = None,
             log_at: Callable[[int], bool] | None = None,
             checkpoint_at: Callable[[int], bool] | None = None,
             on_checkpoint: Callable[[int], None] | None = None,
             not_finite: str = "the loss is not finite (lower training.learning_rate or set "
                               "clipnorm).") -> dict:
        """Run steps ``step .. stop - 1`` (:meth:`stop_step`).

        Per step: ``out = step_fn(step)`` (a dict of numbers and optionally a ``"phase"``
        string, logged and timed apart), the finite-loss guard, timing, the loss log every
        ``log_every`` steps, at the stop and where ``log_at(step)`` (the line is ``{"step",
        "phase" if given, **out, "time_s", **log_extra(step, stop)}``), the progress bar,
        the hook ``after(step, out, stop)``, and a checkpoint every ``checkpoint_every`` steps, at
        the stop and where ``checkpoint_at(step)`` (then ``on_checkpoint(step)``).
        ``before(step, stop)`` runs once, with the log open. ``step`` counts steps done.

        Returns
        -------
        dict
            ``steps_done``, ``complete`` (``steps_done >= total``), ``last`` (the last
            step's output) and ``steps_per_second`` per phase (the first step of a phase in
            this process includes graph tracing and is not timed; ``None`` if untimed).

        Raises
        ------
        ConfigError
            ``not_finite`` (key ``training``) with the step and the outputs, if a value of
            ``out`` is not finite.
        """
        from tqdm.auto import tqdm

        stop = self.stop_step(step, total)
        every, log_every = int(self.t["checkpoint_every"]), int(self.t["log_every"])
        bar = tqdm(total=total, initial=step, desc=name, unit="step",
                   disable=not self.t["progress"], dynamic_ncols=True)
        # no bar on a terminal (a batch log, or progress off): loss lines in the log instead
        lines = bar.disable or not sys.stderr.isatty()
        t_line = None
        timing: dict[str, list] = {}
        last: dict = {}
        t_start = time.perf_counter()
        try:
            with open(self.log_path, "a") as self._log:
                if before is not None:
                    before(step, stop)
                while step < stop:
                    t0 = time.perf_counter()
                    out = dict(step_fn(step))
                    phase = out.pop("phase", None)
                    tag = {} if phase is None else {"phase": phase}
                    out = {k: float(v) for k, v in out.items()}
                    if not all(math.isfinite(v) for v in out.values()):
                        raise ConfigError(not_finite, key="training",
                                          received={"step": step, **tag, **out})
                    dt = time.perf_counter() - t0
                    key = phase or "train"
                    if key in timing:  # the first step of a phase includes tracing
                        timing[key][0] += 1
                        timing[key][1] += dt
                    else:
                        timing[key] = [0, 0.0]
                    step += 1
                    last = {**tag, **out}
                    if step % log_every == 0 or step == stop or (log_at and log_at(step)):
                        rec = {"step": step, **tag, **out,
                               "time_s": round(time.perf_counter() - t_start, 3)}
                        if log_extra is not None:
                            rec.update(log_extra(step, stop))
                        self.write(rec)
                        if "loss" in out:
                            bar.set_postfix(**tag, loss=f"{out['loss']:.4g}")
                        now = time.perf_counter()
                        if lines and (t_line is None or step == stop
                                      or now - t_line >= LOSS_LOG_SECONDS):
                            t_line = now
                            log.info("%s: step %d / %d%s: %s", name, step, total,
                                     f" ({phase})" if phase else "",
                                     ", ".join(f"{k} {v:.5g}" for k, v in out.items()))
                    bar.update(1)
                    if after is not None:
                        after(step, out, stop)
                    if step % every == 0 or step == stop or (checkpoint_at
                                                             and checkpoint_at(step)):
                        self.checkpoint(step, **tag)
                        if on_checkpoint is not None:
                            on_checkpoint(step)
        finally:
            self._log = None
            bar.close()
        return {"steps_done": step, "complete": step >= total, "last": last,
                "steps_per_second": {k: (v[0] / v[1] if v[1] > 0 else None)
                                     for k, v in timing.items()}}

    def log_lines(self) -> list[dict]:
        """The loss log's records."""
        if not self.log_path.is_file():
            return []
        return [json.loads(x) for x in self.log_path.read_text().splitlines() if x.strip()]

    def finish(self, result: dict) -> dict:
        """Write ``result.json`` (``output`` and ``run_dir`` added first) and release the
        lock; returns the result."""
        result = {"output": str(self.output), "run_dir": str(self.run_dir), **result}
        write_json(self.run_dir / "result.json", result)
        self.release()
        return result
