"""Atomic training checkpoints: all variable values of a model and its optimizers in one
``.npz``, plus a ``latest.json`` pointer.

Why not ``tf.train.Checkpoint``: it writes several files (index, data shards, a state file)
that are not replaced as a unit, and Keras 3 auto-generated variable paths (``adam_1/...``)
change from one process to the next. Here a checkpoint is a single file written to a
temporary name and renamed (:mod:`astrogen.io.atomic`), the variables are stored in the
order of ``model.weights`` / ``optimizer.variables`` (which only depends on the
configuration) and checked by shape on restore, and the float32 values are restored
bit for bit. The training state that is not a variable (step counter, phase) is a JSON
string inside the same file, so weights and counter can never disagree.

The random state of a run is the step counter: every random quantity of the training loop
(data order, reparameterisation noise) is a counter-based function of ``(seed, step)``.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from astrogen.errors import ResumeError
from astrogen.io.atomic import atomic_path, save_npz, write_json

__all__ = ["save_checkpoint", "load_checkpoint", "latest_checkpoint", "restore_variables",
           "flatten", "resume_checkpoint"]

_NAME = re.compile(r"^ckpt_(\d{9})\.npz$")


def _arrays(groups: dict[str, list]) -> dict[str, np.ndarray]:
    out = {}
    for group, variables in groups.items():
        for i, v in enumerate(variables):
            out[f"{group}/{i:05d}"] = np.asarray(v)
    return out


def save_checkpoint(folder, step: int, groups: dict[str, list], state: dict,
                    keep: int = 2) -> Path:
    """Write ``folder/ckpt_<step>.npz`` atomically, point ``latest.json`` at it, and delete
    all but the ``keep`` newest checkpoints.

    Parameters
    ----------
    groups : dict of lists of variables
        e.g. ``{"model": model.weights, "vae_optimizer": opt.variables}``.
    state : dict
        JSON-able training state (step, phase, ...), stored in the file.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"ckpt_{int(step):09d}.npz"
    arrays = _arrays(groups)
    meta = dict(state, step=int(step), groups={g: len(v) for g, v in groups.items()})
    arrays["__state__"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    save_npz(path, **arrays)
    write_json(folder / "latest.json", {"file": path.name, "step": int(step)})
    old = sorted((p for p in folder.iterdir() if _NAME.match(p.name)), key=lambda p: p.name)
    for p in old[:-int(keep)]:
        if p != path:
            p.unlink(missing_ok=True)
    return path


def latest_checkpoint(folder) -> Path | None:
    """The newest complete checkpoint of ``folder`` (``None`` if there is none)."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    pointer = folder / "latest.json"
    if pointer.is_file():
        try:
            p = folder / json.loads(pointer.read_text())["file"]
            if p.is_file():
                return p
        except (ValueError, KeyError):
            pass
    files = sorted((p for p in folder.iterdir() if _NAME.match(p.name)), key=lambda p: p.name)
    return files[-1] if files else None


def load_checkpoint(path, groups=None) -> tuple[dict, dict[str, list[np.ndarray]]]:
    """``(state, {group: [arrays]})`` of a checkpoint file; only the groups named in
    ``groups`` (those present) are read if it is given."""
    with np.load(path) as z:
        state = json.loads(bytes(z["__state__"]).decode())
        out = {g: [z[f"{g}/{i:05d}"] for i in range(n)] for g, n in state["groups"].items()
               if groups is None or g in groups}
    return state, out


def restore_variables(variables: list, values: list[np.ndarray], group: str, path) -> None:
    """Assign ``values`` to ``variables`` after checking count and shapes."""
    if len(variables) != len(values):
        raise ResumeError("the checkpoint does not match the model (number of variables).",
                          key=f"{path}:{group}",
                          received={"checkpoint": len(values), "model": len(variables)})
    for v, a in zip(variables, values):
        if tuple(v.shape) != tuple(a.shape):
            raise ResumeError("the checkpoint does not match the model (variable shape).",
                              key=f"{path}:{group}:{v.path}",
                              received={"checkpoint": a.shape, "model": tuple(v.shape)})
    for v, a in zip(variables, values):
        v.assign(a)


def flatten(d: dict, prefix: str = "") -> dict:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (configuration comparison)."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict):
            out.update(flatten(v, key))
        else:
            out[key] = v
    return out


def resume_checkpoint(run_dir, resume: bool, comparable, growable=()) -> Path | None:
    """The latest checkpoint of ``run_dir`` if the run may continue from it, else ``None``.

    Parameters
    ----------
    run_dir : pathlib.Path
        Run folder (``checkpoints/`` and the ``config.json`` of the run inside).
    resume : bool
        ``--resume`` was given.
    comparable : callable
        ``comparable(config_dict) -> dict``: the flat view of a configuration (the run's
        stored ``config.json`` and, with ``None``, the current one) in which any difference
        forbids resuming.
    growable : iterable of str
        Dotted keys (step counts) that may differ if the new value is a larger integer:
        resuming a finished run with more steps trains it longer.

    Raises
    ------
    ResumeError
        Checkpoints present without ``resume``, or a configuration that differs from the run's
        (the differing keys are listed).
    """
    run_dir = Path(run_dir)
    ckpt = latest_checkpoint(run_dir / "checkpoints")
    config_file = run_dir / "config.json"
    if ckpt is not None and not resume:
        raise ResumeError("the run folder already holds checkpoints of a run; use --resume to "
                          "continue it, or delete the folder / change run_dir.",
                          key="run_dir", received={"run_dir": str(run_dir)})
    if ckpt is not None and config_file.is_file():
        # through JSON, as config.json was: tuples and lists compare equal
        a = json.loads(json.dumps(comparable(json.loads(config_file.read_text()))))
        b = json.loads(json.dumps(comparable(None)))
        diff = {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}
        grown = {k for k, (old, new) in diff.items() if k in set(growable)
                 and isinstance(old, int) and isinstance(new, int) and new > old}
        diff = {k: v for k, v in diff.items() if k not in grown}
        if diff:
            shrunk = [k for k in diff if k in set(growable)]
            if shrunk:
                raise ResumeError("--resume may only increase the step counts "
                                  f"({', '.join(sorted(set(growable)))}).", key=shrunk[0],
                                  received={"differences (run, now)": diff})
            raise ResumeError("--resume with a configuration that differs from the run's.",
                              key="run_dir", received={"differences (run, now)": diff})
    return ckpt


def rewrite_log(log_path, up_to_step: int) -> None:
    """Keep only the JSON lines of ``log_path`` with ``step <= up_to_step`` (after a resume;
    a line cut by the interruption is dropped). Atomic."""
    log_path = Path(log_path)
    if not log_path.is_file():
        return
    keep = []
    for line in log_path.read_text().splitlines():
        try:
            if int(json.loads(line).get("step", 0)) <= up_to_step:
                keep.append(line)
        except ValueError:
            continue
    with atomic_path(log_path) as tmp:
        tmp.write_text("".join(x + "\n" for x in keep))


def restore_run(ckpt, groups: dict[str, list], log_path) -> int:
    """Start or continue a run: restore ``groups`` (name -> variables) from ``ckpt`` and cut
    the loss log back to its step, or, with no checkpoint, delete the old log. Returns the
    step to continue from (0 for a fresh run)."""
    log_path = Path(log_path)
    if ckpt is None:
        log_path.unlink(missing_ok=True)
        return 0
    state, values = load_checkpoint(ckpt)
    for g, variables in groups.items():
        restore_variables(variables, values[g], g, ckpt)
    step = int(state["step"])
    rewrite_log(log_path, step)
    return step
