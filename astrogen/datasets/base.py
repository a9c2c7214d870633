"""What the sharded training sets share (:mod:`~astrogen.datasets.galaxy_stamps`,
:mod:`~astrogen.datasets.blends`, :mod:`~astrogen.datasets.nbody_slices`): a configuration
dataclass checked from a mapping, and a folder holding ``manifest.json`` (configuration,
status, list of shards) next to ``.npz`` shards of consecutive rows.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Callable

import numpy as np

from astrogen.errors import ConfigError, UnknownKeyError, suggest

__all__ = ["DatasetConfig", "MANIFEST", "manifest_path", "load_manifest", "is_complete",
           "select_rows"]

#: file name of a data set's manifest
MANIFEST = "manifest.json"


class DatasetConfig:
    """Mixin of the data set configuration dataclasses.

    Subclasses set ``REQUIRED`` (fields without default in a YAML) and ``SHARD_FIELDS``
    (fields that only change how the rows are split into files, not the rows)."""

    REQUIRED: tuple[str, ...] = ()
    SHARD_FIELDS: tuple[str, ...] = ("shard_size",)

    @classmethod
    def field_names(cls) -> list[str]:
        """Names of the configuration's fields (the keys accepted in its YAML)."""
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, d: dict):
        """Build from a mapping; an unknown key raises :class:`UnknownKeyError` (with the
        closest field), a missing required one :class:`ConfigError`, both naming the key.
        A subclass's ``check()`` is run."""
        names = cls.field_names()
        for key in d:
            if key not in names:
                raise UnknownKeyError(f"unknown dataset key.{suggest(str(key), names)}",
                                      key=key, received={"allowed": names})
        for key in cls.REQUIRED:
            if key not in d:
                raise ConfigError("is required.", key=key)
        cfg = cls(**d)
        if hasattr(cfg, "check"):
            cfg.check()
        return cfg

    def to_dict(self) -> dict:
        """The configuration as a plain ``dict`` (written to the data set manifest)."""
        return dataclasses.asdict(self)

    def identity(self) -> dict:
        """The fields that define the rows (all but ``SHARD_FIELDS``)."""
        d = self.to_dict()
        for key in self.SHARD_FIELDS:
            d.pop(key)
        return d


def manifest_path(path) -> Path:
    """Path of the manifest file of the data set folder ``path``.

    Parameters
    ----------
    path : str or pathlib.Path
        Data set folder.

    Returns
    -------
    pathlib.Path
        ``path / MANIFEST``.
    """
    return Path(path) / MANIFEST


def read_manifest(path) -> dict:
    """The manifest of data set folder ``path`` (``OSError`` / ``ValueError`` if it is missing
    or unreadable; :func:`load_manifest` returns ``None`` instead)."""
    return json.loads(manifest_path(path).read_text())


def boxes_complete(path, shard_of) -> bool:
    """True when folder ``path`` holds a manifest and the shard of every box it lists.

    Parameters
    ----------
    path : str or pathlib.Path
        Data set folder.
    shard_of : callable
        ``shard_of(path, manifest, box_id) -> pathlib.Path``: where a box's shard lives.

    Returns
    -------
    bool
        Whether the data set can be used without rebuilding.
    """
    path = Path(path)
    if not manifest_path(path).is_file():
        return False
    m = read_manifest(path)
    return all(shard_of(path, m, b).is_file() for b in m["box_ids"])


def claim_folder(path, manifest: dict, same=("config",)) -> dict:
    """Start or continue a box data set in folder ``path``: write ``manifest`` if the folder
    has none; if it has one, it must agree on the keys ``same`` (else a ConfigError naming
    ``dataset.path``). Returns the manifest in force (the folder's own when continuing).

    Parameters
    ----------
    path : str or pathlib.Path
        Data set folder (created if missing).
    manifest : dict
        The manifest of the configuration asked for.
    same : sequence of str
        Keys that must be equal for the build to continue in the folder.
    """
    from astrogen.errors import ConfigError
    from astrogen.io.atomic import write_json

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    mf = manifest_path(path)
    if not mf.is_file():
        write_json(mf, manifest)
        return manifest
    old = json.loads(mf.read_text())
    if any(old.get(k) != manifest.get(k) for k in same):
        raise ConfigError("the dataset folder holds another configuration; delete it or "
                          "choose another path.", key="dataset.path",
                          received={"path": str(path)})
    return old


def load_manifest(path) -> dict | None:
    """The manifest of folder ``path``, or ``None`` if it has none (or an unreadable one)."""
    p = manifest_path(path)
    if not p.is_file():
        return None
    try:
        return json.loads(p.read_text())
    except ValueError:
        return None


def is_complete(path) -> bool:
    """The folder holds a data set whose build finished (``status: complete``)."""
    m = load_manifest(path)
    return m is not None and m.get("status") == "complete"


def select_rows(shards: list[dict], n: int, rows: slice | None,
                load: Callable[[dict], dict], fields, empty: Callable[[str], np.ndarray]
                ) -> dict:
    """Rows ``rows`` (a step-1 slice of ``range(n)``, default all) of a data set whose
    ``shards`` are manifest entries with ``"rows": [lo, hi]``; only the shards holding them
    are loaded (``load(entry) -> {field: array}``). ``empty(field)`` is the array of a field
    when no row is selected."""
    lo, hi = 0, n
    if rows is not None:
        lo, hi, step = rows.indices(n)
        if step != 1:
            raise ConfigError("rows must be a slice with step 1.", key="rows",
                              received={"rows": rows})
    parts, first = [], None
    for s in sorted(shards, key=lambda s: s["rows"][0]):
        a, b = s["rows"]
        if b > lo and a < hi:
            first = a if first is None else first
            parts.append(load(s))
    if not parts:
        return {f: empty(f) for f in fields}
    return {f: np.concatenate([p[f] for p in parts])[lo - first:hi - first] for f in fields}
