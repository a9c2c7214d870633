"""Error hierarchy of astrogen.

Every error says where the problem is (a YAML key path with its line number when known, a
catalog column, or a file), what was received and what was expected, in one line:

    ConfigError: stages[1].stamp_size (line 12): must be a positive even integer. Received: stamp_size=-3

The classes also inherit the matching built-in exception (``ValueError``, ``KeyError``,
``TypeError``, ``OSError``) so callers that already catch those keep working. The command
line turns any :class:`AstrogenError` into that one line and exit status 2.
"""
from __future__ import annotations

import difflib
from typing import Any, Iterable

__all__ = [
    "AstrogenError",
    "ConfigError",
    "UnknownKeyError",
    "UnknownTypeError",
    "PipelineGraphError",
    "CatalogError",
    "OutputError",
    "ResumeError",
    "ModelError",
    "StageError",
    "EnvironmentFailure",
    "suggest",
    "wrap_exception",
    "one_line",
]


def suggest(word: str, choices: Iterable[str]) -> str:
    """Return ``" Did you mean 'x'?"`` for the closest of ``choices``, or ``""``."""
    close = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.6)
    return f" Did you mean '{close[0]}'?" if close else ""


def one_line(text: str, limit: int = 2000) -> str:
    """``text`` on one line (newlines escaped), cut to ``limit`` characters."""
    text = str(text).replace("\r", "\\r").replace("\n", "\\n")
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _short(value: Any, limit: int = 200) -> str:
    if type(value).__module__ == "numpy" and getattr(value, "ndim", 1) == 0:
        value = value.item()  # np.str_('a') -> 'a'
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - a value whose repr fails is still reported
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _where(key: str | None, line: int | None) -> str:
    if key is None:
        return ""
    return f"{key} (line {line}): " if line else f"{key}: "


class AstrogenError(Exception):
    """Base class of every error astrogen raises on purpose.

    Parameters
    ----------
    message : str
        What was expected.
    key : str, optional
        Where: a YAML key path (``stages[2].psf.fwhm``), a catalog column or a file name.
    line : int, optional
        Line number in the YAML file, if known.
    received : dict, optional
        The offending values, shown as ``Received: key=value``.
    stage : str, optional
        The pipeline stage that raised it (``stages[2] (stage 'render', galsim.parametric)``),
        set by the runner; shown before ``key``.
    """

    #: exit status of the command line for this error (2: bad input)
    exit_status: int = 2

    def __init__(self, message: str, key: str | None = None, line: int | None = None,
                 received: dict[str, Any] | None = None, stage: str | None = None):
        self.message = message
        self.key = key
        self.line = line
        self.stage = stage
        self.received = dict(received or {})
        if "\n" in message or len(message) > 600:  # e.g. a library's multi-line message
            message = " ".join(message.split())
            message = message if len(message) <= 600 else message[:597] + "..."
        where = " ".join(x for x in (stage, key) if x) or None
        text = _where(where, line) + message
        if self.received:
            text += " Received: " + ", ".join(f"{k}={_short(v)}" for k, v in
                                              self.received.items())
        self.text = one_line(text)
        super().__init__(text)

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return self.text

    def at(self, prefix: str, line: int | None = None) -> "AstrogenError":
        """The same error located under ``prefix`` (e.g. ``stages[2]``) and at ``line``."""
        key = f"{prefix}.{self.key}" if self.key else prefix
        return type(self)(self.message, key=key, line=line or self.line, received=self.received,
                          stage=self.stage)

    def in_stage(self, stage: str, line: int | None = None) -> "AstrogenError":
        """The same error (same ``key``) said to come from pipeline stage ``stage``."""
        return type(self)(self.message, key=self.key, line=self.line or line,
                          received=self.received, stage=stage)


class ConfigError(AstrogenError, ValueError):
    """A pipeline or training YAML has a bad value."""


class UnknownKeyError(AstrogenError, KeyError):
    """A YAML key that the stage constructor (or the pipeline schema) does not take."""


class UnknownTypeError(AstrogenError, KeyError):
    """A ``type:`` that no registry knows."""


class PipelineGraphError(AstrogenError, ValueError):
    """Stage inputs that are missing, cyclic or of the wrong kind."""


class CatalogError(AstrogenError, ValueError):
    """A catalog column that is missing, has the wrong unit, or holds invalid values."""


class OutputError(AstrogenError, OSError):
    """The output folder cannot be created or written."""


class ResumeError(AstrogenError, ValueError):
    """``--resume`` on an output folder that does not belong to the same pipeline."""


class ModelError(AstrogenError, ValueError):
    """A model file that is missing, of the wrong version, or inconsistent with its config."""


class StageError(AstrogenError, RuntimeError):
    """An exception that is not an :class:`AstrogenError` escaped a stage (or the runner);
    the message names the stage and the original exception."""


class EnvironmentFailure(AstrogenError, OSError):
    """The machine, not the input, failed: disk full, permission denied, read-only file
    system, out of memory. Exit status 3; the run's partial files are removed."""

    exit_status = 3


#: errno values that mean the environment failed rather than the input
_ENV_ERRNOS = {"ENOSPC", "EDQUOT", "EACCES", "EPERM", "EROFS", "EIO", "EMFILE", "ENFILE",
               "ENOMEM", "EFBIG"}


def _environment_cause(exc: BaseException) -> BaseException | None:
    """The first exception in ``exc``'s chain (itself, its cause, its context) that is a
    failure of the environment, or ``None``."""
    import errno

    codes = {getattr(errno, n) for n in _ENV_ERRNOS if hasattr(errno, n)}
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, MemoryError):
            return exc
        if isinstance(exc, OSError) and exc.errno in codes:
            return exc
        if isinstance(exc, OSError) and "No space left on device" in str(exc):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def wrap_exception(exc: BaseException, stage: str | None = None, key: str | None = None,
                   line: int | None = None) -> AstrogenError:
    """The :class:`AstrogenError` to report for ``exc`` raised while running ``stage``.

    An :class:`AstrogenError` is returned as it is (located under ``stage`` if it names no
    stage yet); a failure of the environment anywhere in the exception's chain (disk full,
    permission denied, out of memory) becomes an :class:`EnvironmentFailure` (exit status 3);
    anything else a :class:`StageError` (exit status 2) naming the stage and the original
    exception type and message.
    """
    where = key or (f"stage '{stage}'" if stage else None)
    env = _environment_cause(exc)
    if env is not None:
        what = (f"out of memory ({type(env).__name__})" if isinstance(env, MemoryError)
                else f"{getattr(env, 'strerror', None) or env}")
        fname = getattr(env, "filename", None)
        return EnvironmentFailure(f"the environment failed: {what}"
                                  f"{f' ({fname})' if fname else ''}.", key=where, line=line)
    if isinstance(exc, AstrogenError):
        return exc
    if isinstance(exc, RecursionError):
        detail = "maximum recursion depth exceeded"
    else:
        detail = str(exc) or "(no message)"
    return StageError(f"failed with {type(exc).__name__}: {detail}", key=where, line=line)
