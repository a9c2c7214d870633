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
    "suggest",
]


def suggest(word: str, choices: Iterable[str]) -> str:
    """Return ``" Did you mean 'x'?"`` for the closest of ``choices``, or ``""``."""
    close = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.6)
    return f" Did you mean '{close[0]}'?" if close else ""


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
    """

    def __init__(self, message: str, key: str | None = None, line: int | None = None,
                 received: dict[str, Any] | None = None):
        self.message = message
        self.key = key
        self.line = line
        self.received = dict(received or {})
        text = _where(key, line) + message
        if self.received:
            text += " Received: " + ", ".join(f"{k}={v!r}" for k, v in self.received.items())
        self.text = text
        super().__init__(text)

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return self.text

    def at(self, prefix: str, line: int | None = None) -> "AstrogenError":
        """The same error located under ``prefix`` (e.g. ``stages[2]``) and at ``line``."""
        key = f"{prefix}.{self.key}" if self.key else prefix
        return type(self)(self.message, key=key, line=line or self.line, received=self.received)


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
