"""Load pipeline YAML keeping the line number of every key, and apply ``key.sub=value``
command-line overrides.

The loader is safe against hostile files: only plain YAML types (``yaml.SafeLoader``), UTF-8
text only, mapping keys must be strings, and aliases may not refer to themselves nor expand
the document beyond :data:`MAX_NODES` nodes (a "billion laughs" file of a few hundred bytes
is refused in milliseconds, with the line of the alias). Nesting deeper than
:data:`MAX_DEPTH` is refused too.
"""
from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import yaml

from astrogen.errors import ConfigError, UnknownKeyError, suggest

__all__ = ["Config", "load_config", "apply_overrides", "override_key", "key_path", "MAX_NODES", "MAX_DEPTH",
           "MAX_BYTES"]

#: most YAML nodes (values, keys and items, aliases counted as often as they are used) a
#: pipeline file may expand to
MAX_NODES = 100_000
#: deepest nesting of mappings and lists
MAX_DEPTH = 64
#: largest pipeline file (bytes)
MAX_BYTES = 4 * 1024 * 1024


class Config:
    """A parsed YAML document plus ``lines[path] -> line number`` for every key and item."""

    def __init__(self, data: Any, lines: dict[tuple, int], source: str = "<string>"):
        self.data = data
        self.lines = lines
        self.source = source

    def line(self, path: tuple) -> int | None:
        """Line number of the key or item at ``path``, else of its closest parent that has one.

        Parameters
        ----------
        path : tuple
            Keys and list indices from the document root.

        Returns
        -------
        int or None
            1-based line number, ``None`` when no prefix of ``path`` is known.
        """
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return None


def key_path(path: tuple) -> str:
    """``("stages", 1, "psf", "fwhm")`` -> ``"stages[1].psf.fwhm"``."""
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


_PLAIN_TAGS = ("tag:yaml.org,2002:map", "tag:yaml.org,2002:seq")


class _Budget:
    def __init__(self):
        self.nodes = 0
        self.stack: list[int] = []


def _short_path(path: tuple) -> str:
    return (key_path(path[:3]) + ("..." if len(path) > 3 else "")) or "file"


def _construct(node, loader, path, lines, budget: _Budget | None = None):
    budget = budget or _Budget()
    line = node.start_mark.line + 1
    budget.nodes += 1
    # where the expansion happens (lines inside an alias are those of its anchor)
    outer = lines.get(path[:1], line)
    if budget.nodes > MAX_NODES:
        raise ConfigError(f"the YAML expands to more than {MAX_NODES:,} values (aliases "
                          "repeating aliases?); refusing to expand it.",
                          key=_short_path(path), line=outer)
    if id(node) in budget.stack:
        raise ConfigError("a YAML alias refers to the collection that contains it "
                          "(recursive alias).", key=_short_path(path), line=line)
    if len(budget.stack) >= MAX_DEPTH:
        raise ConfigError(f"the YAML is nested more than {MAX_DEPTH} levels deep.",
                          key=_short_path(path), line=outer)
    lines.setdefault(path, line)
    if isinstance(node, (yaml.MappingNode, yaml.SequenceNode)) and node.tag not in _PLAIN_TAGS:
        raise ConfigError(f"YAML tag '{node.tag}' is not allowed (plain mappings and lists "
                          "only).", key=_short_path(path), line=line)
    if isinstance(node, yaml.MappingNode):
        budget.stack.append(id(node))
        out = {}
        for knode, vnode in node.value:
            kline = knode.start_mark.line + 1
            if not isinstance(knode, yaml.ScalarNode):
                raise ConfigError("a mapping key must be a plain string, not a list or a "
                                  "mapping.", key=key_path(path) or "file", line=kline,
                                  received={"key": f"<{knode.id}>"})
            key = loader.construct_object(knode, deep=True)
            if not isinstance(key, str):
                raise ConfigError("a mapping key must be a string (quote it).",
                                  key=key_path(path) or "file", line=kline,
                                  received={"key": key})
            if key in out:
                raise ConfigError("duplicate key.", key=key_path(path + (key,)), line=kline)
            lines[path + (key,)] = kline
            out[key] = _construct(vnode, loader, path + (key,), lines, budget)
        budget.stack.pop()
        return out
    if isinstance(node, yaml.SequenceNode):
        budget.stack.append(id(node))
        out = [_construct(v, loader, path + (i,), lines, budget)
               for i, v in enumerate(node.value)]
        budget.stack.pop()
        return out
    return loader.construct_object(node, deep=True)


def _measure(node, path: tuple, memo: dict, stack: set) -> int:
    """Number of nodes ``node`` expands to, aliases counted as often as they are used,
    computed once per distinct node (so a "billion laughs" file is measured, and refused,
    in microseconds). Raises on recursion, on nesting beyond MAX_DEPTH and beyond MAX_NODES."""
    key = id(node)
    if key in memo:
        return memo[key]
    line = node.start_mark.line + 1
    if key in stack:
        raise ConfigError("a YAML alias refers to the collection that contains it "
                          "(recursive alias).", key=_short_path(path), line=line)
    if len(stack) >= MAX_DEPTH:
        raise ConfigError(f"the YAML is nested more than {MAX_DEPTH} levels deep.",
                          key=_short_path(path), line=line)
    size = 1
    if isinstance(node, (yaml.MappingNode, yaml.SequenceNode)):
        stack.add(key)
        if isinstance(node, yaml.MappingNode):
            for knode, vnode in node.value:
                sub = path + (getattr(knode, "value", "?"),) if isinstance(knode, yaml.ScalarNode) \
                    else path
                size += _measure(knode, sub, memo, stack) + _measure(vnode, sub, memo, stack)
                if size > MAX_NODES:
                    break
        else:
            for i, v in enumerate(node.value):
                size += _measure(v, path + (i,), memo, stack)
                if size > MAX_NODES:
                    break
        stack.discard(key)
    if size > MAX_NODES:
        raise ConfigError(f"the YAML expands to more than {MAX_NODES:,} values (aliases "
                          "repeating aliases?); refusing to expand it.",
                          key=_short_path(path), line=line)
    memo[key] = size
    return size


def _decode(data: bytes, name: str) -> str:
    """UTF-8 text of ``data`` or a ConfigError naming the line of the first bad byte."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise ConfigError(f"is not UTF-8 text (byte {data[exc.start]:#04x} at offset "
                          f"{exc.start}); save the file as UTF-8.", key=name,
                          line=line) from None


def parse_yaml(text: str, name: str = "<string>") -> tuple[Any, dict[tuple, int]]:
    """Parse YAML ``text`` with the same limits as :func:`load_config`; return
    ``(data, lines)`` (``data`` is ``None`` for an empty document)."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, {}
        lines: dict[tuple, int] = {}
        _measure(node, (), {}, set())  # before expanding anything
        data = _construct(node, loader, (), lines)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise ConfigError(f"is not valid YAML: {getattr(exc, 'problem', None) or exc}.",
                          key=name, line=mark.line + 1 if mark else None) from None
    except RecursionError:
        raise ConfigError(f"the YAML is nested too deeply (more than {MAX_DEPTH} levels).",
                          key=name) from None
    finally:
        loader.dispose()
    return data, lines


def load_config(source) -> Config:
    """Parse a YAML file (path) or text (str containing a newline) with line numbers.

    Raises
    ------
    ConfigError
        Missing or unreadable file, not UTF-8, not valid YAML, a non-string key, an alias
        that is recursive or expands beyond :data:`MAX_NODES`, nesting beyond
        :data:`MAX_DEPTH`, or a top level that is not a mapping; with the line.
    """
    if isinstance(source, Path) or (isinstance(source, str) and "\n" not in source):
        path = Path(source)
        if not path.is_file():
            raise ConfigError("pipeline file not found.", key="file", received={"file": str(path)})
        try:
            size = path.stat().st_size
            if size > MAX_BYTES:
                raise ConfigError(f"is larger than {MAX_BYTES} bytes; not a pipeline file?",
                                  key=str(path), received={"bytes": size})
            raw = path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot be read ({exc.strerror or exc}).", key=str(path)) from None
        name = str(path)
        text = _decode(raw, name)
    else:
        text, name = source, "<string>"
    data, lines = parse_yaml(text, name)
    if data is None:
        raise ConfigError("the pipeline file is empty.", key="file", received={"file": name})
    if not isinstance(data, dict):
        raise ConfigError("a pipeline must be a YAML mapping (name, seed, output, stages).",
                          key=name, received={"top level": type(data).__name__})
    return Config(data, lines, name)


_KEY_TOKEN = re.compile(r"([^.\[\]]+)|\[([^\[\]]+)\]")


def override_key(key: str) -> list:
    """Parts of an override key: ``stages.render.stamp_size`` -> ``["stages", "render",
    "stamp_size"]``; ``stages[2].psf.fwhm`` (the form errors print, :func:`key_path`) ->
    ``["stages", 2, "psf", "fwhm"]``; ``stages[render]`` names a stage. ``None`` when the key
    is not such a path."""
    parts, pos, text = [], 0, key.strip()
    for m in _KEY_TOKEN.finditer(text):
        sep = text[pos:m.start()]
        if sep not in (("" if not parts or m.group(2) is not None else "."),) \
                or (not parts and m.group(2) is not None):
            return None
        name, index = m.group(1), m.group(2)
        parts.append(name if index is None else (int(index) if index.strip().isdigit()
                                                  else index.strip()))
        pos = m.end()
    return parts if parts and pos == len(text) else None


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """Apply ``key.sub=value`` overrides (values parsed as YAML).

    In ``stages.<name>.<param>=value`` the second part is a stage name (or index); the key
    paths printed by errors, ``stages[2].stamp_size=96``, are accepted too.
    """
    data = copy.deepcopy(cfg.data)
    for item in overrides:
        if "=" not in item:
            raise ConfigError("an override must look like key.sub=value.", key="override",
                              received={"override": item})
        key, raw = item.split("=", 1)
        try:
            value = parse_yaml(raw, "override")[0] if raw != "" else None
        except ConfigError:
            value = raw
        parts = override_key(key)
        if parts is None:
            raise ConfigError("an override key must be dotted names such as "
                              "stages.render.stamp_size or a key path such as "
                              "stages[2].stamp_size.", key="override",
                              received={"override": item})
        node = data
        for depth, part in enumerate(parts[:-1]):
            where = key_path(tuple(parts[:depth + 1]))
            if isinstance(node, list):
                names = [s.get("name") for s in node if isinstance(s, dict)]
                if isinstance(part, int) or (isinstance(part, str) and part.isdigit()
                                             and part not in names):
                    if int(part) >= len(node):
                        raise UnknownKeyError(f"index {int(part)} is out of range: there are "
                                              f"{len(node)} item(s).", key=where,
                                              received={"override": item})
                    node = node[int(part)]
                elif part in names:
                    node = node[names.index(part)]
                else:
                    raise UnknownKeyError(f"no stage named '{part}'.{suggest(part, names)}",
                                          key=where, received={"override": item})
            elif isinstance(node, dict):
                if isinstance(part, int):
                    raise ConfigError("is a mapping, not a list: use .name, not [index].",
                                      key=key_path(tuple(parts[:depth])) or "override",
                                      received={"override": item})
                if part not in node:
                    node[part] = {}
                node = node[part]
            else:
                raise ConfigError("cannot descend into a scalar.", key=where,
                                  received={"override": item})
        if not isinstance(node, dict) or isinstance(parts[-1], int):
            raise ConfigError("the override's target is not a mapping.", key=key,
                              received={"override": item})
        node[parts[-1]] = value
    return Config(data, cfg.lines, cfg.source)
