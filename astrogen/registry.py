"""Type registries, GalSim-config style.

A registry maps the ``type:`` string of a YAML block to a class. Plug-in modules listed under
``modules:`` in a pipeline register their own types on import, exactly like GalSim's
``RegisterObjectType``. Looking up an unknown type raises :class:`UnknownTypeError` with the
closest registered name.
"""
from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

from astrogen.errors import ConfigError, UnknownTypeError, suggest

__all__ = ["Registry", "STAGES", "register_stage"]

T = TypeVar("T")


class Registry(Generic[T]):
    """A named mapping ``type name -> class``.

    Parameters
    ----------
    kind : str
        What is registered (``"stage"``, ``"model"``...), used in error messages.
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str, obj: T | None = None, *, replace: bool = False):
        """Register ``obj`` under ``name``; usable as a decorator when ``obj`` is omitted."""
        if not isinstance(name, str) or not name:
            raise ConfigError(f"a {self.kind} type name must be a non-empty string.",
                              received={"name": name})

        def _do(o: T) -> T:
            if name in self._items and self._items[name] is not o and not replace:
                raise ConfigError(f"{self.kind} type '{name}' is already registered "
                                  f"to {self._items[name]!r}; pass replace=True to override.")
            self._items[name] = o
            try:
                o.type_name = name  # type: ignore[attr-defined]
            except (AttributeError, TypeError):
                pass
            return o

        return _do if obj is None else _do(obj)

    def get(self, name: str, key: str | None = None, line: int | None = None) -> T:
        """Return the class registered as ``name`` or raise :class:`UnknownTypeError`."""
        try:
            return self._items[name]
        except (KeyError, TypeError):
            raise UnknownTypeError(
                f"unknown {self.kind} type.{suggest(name, self._items)} "
                f"Registered: {', '.join(sorted(self._items))}.",
                key=key, line=line, received={"type": name}) from None

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def items(self):
        """``(name, registered object)`` pairs, sorted by name."""
        return sorted(self._items.items())


STAGES: Registry = Registry("stage")


def register_stage(name: str) -> Callable[[T], T]:
    """Class decorator registering a :class:`astrogen.stages.base.Stage` subclass."""
    return STAGES.register(name)
