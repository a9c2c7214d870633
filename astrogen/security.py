"""What a configuration file may make astrogen do: no code runs from it unless the user says so.

GalSim's configuration layer evaluates strings that begin with ``$`` as Python expressions
(``$__import__('os').system(...)``), follows ``@`` references and has a ``type: Eval`` object.
astrogen refuses all three in any configuration it hands to GalSim unless evaluation was
allowed on the command line (``astrogen run --allow-eval``) or in Python
(``build_pipeline(cfg, allow_eval=True)`` or ``with eval_allowed(): ...``).
"""
from __future__ import annotations

import contextlib
import contextvars
from typing import Any, Iterator

from astrogen.errors import ConfigError

__all__ = ["eval_allowed", "is_eval_allowed", "find_eval", "refuse_eval"]

_ALLOWED: contextvars.ContextVar[bool] = contextvars.ContextVar("astrogen_allow_eval",
                                                                default=False)
_EVAL_TYPES = ("Eval",)


@contextlib.contextmanager
def eval_allowed(allow: bool = True) -> Iterator[None]:
    """Within the block, GalSim evaluation strings are (``allow``) or are not accepted."""
    token = _ALLOWED.set(bool(allow))
    try:
        yield
    finally:
        _ALLOWED.reset(token)


def is_eval_allowed() -> bool:
    """Whether GalSim evaluation is allowed here (off by default)."""
    return _ALLOWED.get()


def find_eval(value: Any, path: tuple = ()) -> tuple[tuple, Any] | None:
    """``(path, value)`` of the first GalSim evaluation inside ``value`` (a string starting
    with ``$`` or ``@``, or a mapping with ``type: Eval``), or ``None``."""
    if isinstance(value, str):
        return (path, value) if value.lstrip()[:1] in ("$", "@") else None
    if isinstance(value, dict):
        if value.get("type") in _EVAL_TYPES:
            return path + ("type",), value.get("type")
        for k, v in value.items():
            if isinstance(k, str) and k.lstrip()[:1] in ("$", "@"):
                return path + (k,), k
            hit = find_eval(v, path + (k,))
            if hit:
                return hit
    if isinstance(value, (list, tuple)):
        for j, v in enumerate(value):
            hit = find_eval(v, path + (j,))
            if hit:
                return hit
    return None


def eval_message() -> str:
    return ("is a GalSim evaluation ('$' Python expression, '@' reference or type: Eval), "
            "which would run code from the configuration file; evaluation is off. Pass "
            "--allow-eval (allow_eval=True in Python) for a file you trust.")


def refuse_eval(spec: Any, key: str) -> None:
    """Raise :class:`ConfigError` naming ``key`` if ``spec`` holds a GalSim evaluation and
    evaluation is not allowed."""
    if is_eval_allowed():
        return
    hit = find_eval(spec)
    if hit:
        path, value = hit
        sub = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)
        raise ConfigError(eval_message(), key=f"{key}{sub}", received={key: value})
