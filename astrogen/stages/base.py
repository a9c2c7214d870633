"""Base class of every pipeline stage.

A stage is built from YAML exactly like a direct call: the keys of its YAML block (other than
``name``, ``type`` and ``inputs``) are its constructor's keyword arguments, and the
constructor checks their values (raising :class:`~astrogen.errors.ConfigError` that names the
argument). Heavy imports (TensorFlow, model weights) happen in :meth:`Stage.setup`, never at
module import, so ``astrogen stages`` and ``astrogen validate`` stay fast.

Three kinds of stage, set by the class attribute ``kind``:

``"source"``
    produces chunks: implements :meth:`n_chunks` and :meth:`read_chunk`.
``"map"``
    a pure function of its inputs for one chunk: implements :meth:`process`. Map stages must
    not keep state between chunks, so chunks can run in any order or on other machines.
``"sink"``
    consumes every chunk in order (:meth:`consume`) and writes final products
    (:meth:`finalize`). A sink that accumulates (a scene image) exposes :meth:`get_state` /
    :meth:`set_state` so the runner can checkpoint it after each chunk for ``--resume``.
"""
from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from astrogen.errors import ConfigError

__all__ = ["Stage", "StageContext", "check_positive", "check_choice", "check_int",
           "check_file_name"]


@dataclass
class StageContext:
    """What the runner hands a stage before running it.

    Attributes
    ----------
    name : str
        The stage's name in the pipeline.
    seed : int
        The stage's own seed, derived from the pipeline seed and ``name``.
    output_dir : pathlib.Path
        The pipeline's output folder.
    work_dir : pathlib.Path
        A folder private to this stage for per-chunk parts and state.
    provenance : dict
        Cards (key -> (value, comment)) to put in every FITS header.
    history : list of str
        The resolved pipeline configuration as YAML lines, written as FITS ``HISTORY``.
    """

    name: str
    seed: int
    output_dir: Path
    work_dir: Path
    provenance: dict[str, tuple[Any, str]] = field(default_factory=dict)
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("astrogen"))
    history: list[str] = field(default_factory=list)


class Stage:
    """Base class of pipeline stages (see the module docstring)."""

    #: Name in the stage registry, set by ``register_stage``.
    type_name: ClassVar[str] = ""
    #: "source", "map" or "sink".
    kind: ClassVar[str] = "map"
    #: One entry per input: the accepted class, or a tuple of accepted classes.
    input_types: ClassVar[tuple] = ()
    #: The class of what ``read_chunk`` / ``process`` returns (``None`` for sinks).
    output_type: ClassVar[type | None] = None
    #: Units of the constructor arguments, shown by ``astrogen stages``.
    units: ClassVar[dict[str, str]] = {}
    #: Whether the stage imports TensorFlow (the CLI then imports it quietly beforehand).
    uses_tensorflow: ClassVar[bool] = False

    ctx: StageContext | None = None

    # ---- introspection -------------------------------------------------------------------
    @classmethod
    def parameters(cls) -> dict[str, inspect.Parameter]:
        """The constructor's keyword arguments (the stage's valid YAML keys)."""
        sig = inspect.signature(cls.__init__)
        return {k: p for k, p in sig.parameters.items()
                if k != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}

    @classmethod
    def summary(cls) -> str:
        doc = inspect.getdoc(cls) or ""
        return doc.splitlines()[0] if doc else ""

    # ---- lifecycle -----------------------------------------------------------------------
    def setup(self, ctx: StageContext) -> None:
        """Called once before the first chunk (load models here)."""
        self.ctx = ctx

    # source
    def n_chunks(self) -> int:
        raise NotImplementedError(f"{type(self).__name__} is not a source stage")

    def n_rows(self) -> int | None:
        return None

    def read_chunk(self, index: int):
        raise NotImplementedError(f"{type(self).__name__} is not a source stage")

    # map
    def process(self, *inputs):
        raise NotImplementedError(f"{type(self).__name__} is not a map stage")

    # sink
    def consume(self, index: int, *inputs) -> None:
        raise NotImplementedError(f"{type(self).__name__} is not a sink stage")

    def finalize(self) -> list[Path]:
        """Write final products; return the paths written."""
        return []

    def get_state(self) -> dict[str, Any] | None:
        """Picklable-free state (numpy arrays and plain values) to checkpoint after a chunk."""
        return None

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`get_state` returned."""


# ---- argument checks shared by stage constructors -------------------------------------------
def check_positive(name: str, value, allow_zero: bool = False, unit: str = "") -> float:
    """Return ``float(value)`` if it is a positive finite number, else raise ConfigError."""
    import math

    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"must be a number{' in ' + unit if unit else ''}.", key=name,
                          received={name: value}) from None
    if isinstance(value, bool) or not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        raise ConfigError(f"must be {'>= 0' if allow_zero else '> 0'}"
                          f"{' ' + unit if unit else ''}.", key=name, received={name: value})
    return v


def check_int(name: str, value, minimum: int = 1) -> int:
    """Return ``value`` if it is an integer >= ``minimum``, else raise ConfigError."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"must be an integer >= {minimum}.", key=name, received={name: value})
    return value


def check_choice(name: str, value, choices) -> str:
    """Return ``value`` if it is one of ``choices``, else raise ConfigError with a suggestion."""
    from astrogen.errors import suggest

    if value not in choices:
        raise ConfigError(f"must be one of {sorted(choices)}.{suggest(str(value), choices)}",
                          key=name, received={name: value})
    return value


def check_file_name(name: str, value, suffixes: tuple[str, ...]) -> str:
    """Return ``value`` if it is a relative file name ending in one of ``suffixes`` that stays
    inside the output folder, else raise ConfigError."""
    from pathlib import PurePath

    ok = isinstance(value, str) and value.lower().endswith(tuple(suffixes))
    if ok:
        p = PurePath(value)
        ok = not p.is_absolute() and ".." not in p.parts
    if not ok:
        raise ConfigError(f"must be a relative file name ending in {' or '.join(suffixes)} "
                          "(written inside the output folder).", key=name, received={name: value})
    return value
