"""The parts every training YAML shares: value checks, the top-level keys, the loop keys of
the ``training`` section, the ``dataset`` section, the ``.keras`` output, and the keys a
``--resume`` may change.

A trainer (:mod:`astrogen.training.registry`) declares only its own sections::

    SCHEMA = {
        "": top_level("mymodel"),                   # model, seed, output, run_dir, ...
        "mymodel": {"channels": ([16, 32], check_int_list)},
        "training": {"steps": (REQUIRED, check_int(0)), **loop_keys(checkpoint_every=100)},
    }

Each entry is ``key -> (default, check)``; ``check(value)`` returns the value (possibly
converted) or raises :class:`~astrogen.errors.ConfigError`; :func:`check_mapping` adds the
key path and line to the message. ``REQUIRED`` marks a key without default.
"""
from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any, Callable

from astrogen.errors import AstrogenError, ConfigError, UnknownKeyError, suggest

__all__ = ["REQUIRED", "RESUME_GROWABLE_KEYS", "check_int", "check_float", "check_choice", "check_bool", "check_str",
           "check_optional_str", "check_int_list", "check_any", "check_devices",
           "top_level", "loop_keys", "RESUME_MUTABLE_KEYS", "TrainingConfig", "without_keys",
           "check_mapping", "check_dataset", "check_output", "check_sections"]

#: marks a key without default (it must be given)
REQUIRED = object()


# ---------------------------------------------------------------------- value checks
def check_int(lo=None, optional=False) -> Callable:
    """An integer ``>= lo`` (``None`` allowed if ``optional``)."""
    def check(v):
        if v is None and optional:
            return None
        if isinstance(v, bool) or not isinstance(v, int):
            raise ConfigError("must be an integer.", received={"value": v})
        if lo is not None and v < lo:
            raise ConfigError(f"must be >= {lo}.", received={"value": v})
        return v
    return check


def check_float(lo=None, strict=False, optional=False, below=None) -> Callable:
    """A number ``>= lo`` (``> lo`` if ``strict``) and, if ``below`` is given, ``< below``."""
    def check(v):
        if v is None and optional:
            return None
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ConfigError("must be a number.", received={"value": v})
        v = float(v)
        if lo is not None and (v <= lo if strict else v < lo):
            raise ConfigError(f"must be {'>' if strict else '>='} {lo}.", received={"value": v})
        if below is not None and not v < below:
            raise ConfigError(f"must be < {below:g}.", received={"value": v})
        return v
    return check


def check_choice(*choices) -> Callable:
    """One of ``choices`` (the message suggests the closest)."""
    def check(v):
        if v not in choices:
            raise ConfigError(f"must be one of {list(choices)}.{suggest(str(v), choices)}",
                              received={"value": v})
        return v
    return check


def check_bool(v):
    """``v`` when it is a boolean, else a :class:`ConfigError`."""
    if not isinstance(v, bool):
        raise ConfigError("must be true or false.", received={"value": v})
    return v


def check_str(v):
    """``v`` when it is a non-empty string, else a :class:`ConfigError`."""
    if not isinstance(v, str) or not v:
        raise ConfigError("must be a non-empty string.", received={"value": v})
    return v


def check_optional_str(v):
    """``None`` or a non-empty string (:func:`check_str`)."""
    return v if v is None else check_str(v)


def check_int_list(v):
    """A non-empty list of positive integers (a single integer is a list of one)."""
    if isinstance(v, int) and not isinstance(v, bool):
        v = [v]
    if not isinstance(v, (list, tuple)) or not v or not all(
            isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in v):
        raise ConfigError("must be a list of positive integers.", received={"value": v})
    return list(v)


def check_any(v):
    """Any value, unchecked."""
    return v


_DEVICE = re.compile(r"^(/job:[^/]+/replica:\d+/task:\d+)?/(device:)?(cpu|gpu):\d+$",
                     re.IGNORECASE)


def check_devices(v):
    """``None`` or a non-empty list of distinct device names (``/gpu:0``, ``/cpu:1``,
    ``/job:localhost/replica:0/task:0/device:GPU:0``)."""
    if v is None:
        return None
    if isinstance(v, str):
        v = [v]
    if (not isinstance(v, (list, tuple)) or not v
            or not all(isinstance(d, str) and _DEVICE.match(d) for d in v)):
        raise ConfigError("must be a list of device names like ['/gpu:0', '/gpu:1'] or "
                          "['/cpu:0', '/cpu:1'].", received={"value": v})
    if len({d.lower() for d in v}) != len(v):
        raise ConfigError("must not repeat a device.", received={"value": v})
    return list(v)


# ---------------------------------------------------------------------- shared sections
def top_level(*models: str, sections: tuple[str, ...] = (), **extra) -> dict:
    """The top-level keys of a training file of ``models``: ``model``, ``seed``, ``output``,
    ``run_dir``, ``description``, ``dataset``, ``training`` and the model ``sections``
    (checked separately), plus ``extra`` entries."""
    out = {
        "model": (REQUIRED, check_choice(*models)),
        "seed": (0, check_int(0)),
        "output": (REQUIRED, check_str),
        "run_dir": (None, check_optional_str),
        "description": ("", lambda v: "" if v is None else str(v)),
        "dataset": ({}, check_any),
    }
    out.update({s: ({}, check_any) for s in sections})
    out["training"] = ({}, check_any)
    out.update(extra)
    return out


def loop_keys(checkpoint_every: int, log_every: int = 10, progress: bool = True,
              keep_checkpoints: int = 2) -> dict:
    """The keys of the ``training`` section read by :class:`astrogen.training.loop.Run`,
    with a trainer's defaults."""
    return {
        "checkpoint_every": (checkpoint_every, check_int(1)),
        "keep_checkpoints": (keep_checkpoints, check_int(1)),
        "log_every": (log_every, check_int(1)),
        "max_steps_this_run": (None, check_int(1, optional=True)),
        "progress": (progress, check_bool),
    }


#: Keys that may differ between a run and its ``--resume`` in every trainer (they do not
#: change the result); a trainer adds its own (:attr:`TrainingConfig.resume_mutable`).
RESUME_MUTABLE_KEYS = frozenset({
    "description", "training.checkpoint_every", "training.keep_checkpoints",
    "training.log_every", "training.max_steps_this_run", "training.progress",
    "dataset.shard_size",
})


#: Step counts a ``--resume`` may increase (a finished run trained longer); a trainer whose
#: phases make a count unsafe to grow leaves it out.
RESUME_GROWABLE_KEYS = frozenset({"training.steps", "training.flow_steps"})


class TrainingConfig(dict):
    """The checked configuration, defaults filled in (a plain nested ``dict``).

    ``source`` is the file (or ``"<string>"``); ``resume_mutable`` the dotted keys a
    ``--resume`` may change."""

    source: str = "<string>"
    resume_mutable: frozenset = RESUME_MUTABLE_KEYS
    resume_growable: frozenset = RESUME_GROWABLE_KEYS

    @property
    def run_dir(self) -> Path:
        """The run folder (checkpoints, losses): ``run_dir`` when set, else ``<output stem>_run``
        next to the output file.
        """
        if self["run_dir"]:
            return Path(self["run_dir"])
        out = Path(self["output"])
        return out.with_name(out.stem + "_run")

    def for_comparison(self) -> dict:
        """The configuration without the keys a resume may change."""
        return without_keys(self, self.resume_mutable)


def without_keys(cfg: dict, keys) -> dict:
    """A deep copy of ``cfg`` without the dotted ``keys`` (``"training.progress"``): what a
    resumed run must share with the run it continues."""
    d = copy.deepcopy(dict(cfg))
    for key in keys:
        parts = key.split(".")
        node = d
        for p in parts[:-1]:
            node = node.get(p, {})
        node.pop(parts[-1], None)
    return d


# ---------------------------------------------------------------------- checking
def check_mapping(data: Any, schema: dict, cfg, path: tuple) -> dict:
    """Check one mapping of a training YAML against ``schema`` (``key -> (default, check)``):
    unknown keys (with a suggestion), required keys, values; errors name the key path and
    line (``cfg``: the :class:`astrogen.pipeline.config.Config` read from the file)."""
    from astrogen.pipeline.config import key_path

    if not isinstance(data, dict):
        raise ConfigError("must be a mapping.", key=key_path(path) or "<top level>",
                          line=cfg.line(path), received={"type": type(data).__name__})
    out = {}
    for key in data:
        if key not in schema:
            where = key_path(path + (key,))
            raise UnknownKeyError(f"unknown key.{suggest(str(key), schema)}", key=where,
                                  line=cfg.line(path + (key,)),
                                  received={"allowed": sorted(schema)})
    for key, (default, check) in schema.items():
        if key not in data:
            if default is REQUIRED:
                raise ConfigError("is required.", key=key_path(path + (key,)),
                                  line=cfg.line(path))
            out[key] = copy.deepcopy(default)
            continue
        try:
            out[key] = check(data[key])
        except AstrogenError as exc:
            raise type(exc)(exc.message, key=key_path(path + (key,)),
                            line=cfg.line(path + (key,)), received=exc.received) from None
    return out


def check_dataset(data: Any, cfg, config_class, what: str) -> dict:
    """The ``dataset`` section: ``path`` (the folder, built if missing) and the fields of
    the data set's configuration class (``field_names``, ``from_dict``, ``to_dict``).

    Returns ``{"path": ..., **config_class.from_dict(rest).to_dict()}``; errors name
    ``dataset.<key>``."""
    if not isinstance(data, dict):
        raise ConfigError(f"must be a mapping with 'path' (folder of the {what}; built if "
                          "missing) and the data set's settings.", key="dataset",
                          line=cfg.line(("dataset",)))
    allowed = ["path"] + config_class.field_names()
    for key in data:
        if key not in allowed:
            raise UnknownKeyError(f"unknown key.{suggest(str(key), allowed)}",
                                  key=f"dataset.{key}", line=cfg.line(("dataset", key)),
                                  received={"allowed": allowed})
    if "path" not in data:
        raise ConfigError(f"is required (folder of the {what}; built if missing).",
                          key="dataset.path", line=cfg.line(("dataset",)))
    body = {k: v for k, v in data.items() if k != "path"}
    try:
        ds = config_class.from_dict(body)
    except AstrogenError as exc:
        k = exc.key or ""
        k = k[len("dataset."):] if k.startswith("dataset.") else k
        raise type(exc)(exc.message, key=f"dataset.{k}" if k else "dataset",
                        line=cfg.line(("dataset", k)), received=exc.received) from None
    try:
        path = check_str(data["path"])
    except ConfigError as exc:
        raise ConfigError(exc.message, key="dataset.path", line=cfg.line(("dataset", "path")),
                          received=exc.received) from None
    return {"path": path, **ds.to_dict()}


def check_output(out: dict, cfg) -> None:
    """``output`` must name a ``.keras`` file."""
    if not str(out["output"]).endswith(".keras"):
        raise ConfigError("must be a file name ending in '.keras'.", key="output",
                          line=cfg.line(("output",)), received={"output": out["output"]})


def check_sections(cfg, schema: dict, sections, dataset_class, what: str,
                   resume_mutable=()) -> TrainingConfig:
    """Check a whole training file: the top level (``schema[""]``), each of ``sections``
    and ``training`` against ``schema``, the ``dataset`` section against
    ``dataset_class`` and the ``.keras`` output. A section given as ``None`` in the file is
    an empty one. ``resume_mutable``: the trainer's keys added to
    :data:`RESUME_MUTABLE_KEYS`."""
    top = check_mapping(cfg.data, schema[""], cfg, ())
    out = TrainingConfig(top)
    out.source = cfg.source
    out.resume_mutable = RESUME_MUTABLE_KEYS | frozenset(resume_mutable)
    for section in (*sections, "training"):
        out[section] = check_mapping(top.get(section) or {}, schema[section], cfg, (section,))
    out["dataset"] = check_dataset(top["dataset"], cfg, dataset_class, what)
    check_output(out, cfg)
    return out
