"""Load pipeline YAML keeping the line number of every key, and apply ``key.sub=value``
command-line overrides."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from astrogen.errors import ConfigError, UnknownKeyError, suggest

__all__ = ["Config", "load_config", "apply_overrides", "key_path"]


class Config:
    """A parsed YAML document plus ``lines[path] -> line number`` for every key and item."""

    def __init__(self, data: Any, lines: dict[tuple, int], source: str = "<string>"):
        self.data = data
        self.lines = lines
        self.source = source

    def line(self, path: tuple) -> int | None:
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


def _construct(node, loader, path, lines):
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        out = {}
        for knode, vnode in node.value:
            key = loader.construct_object(knode, deep=True)
            if key in out:
                raise ConfigError("duplicate key.", key=key_path(path + (key,)),
                                  line=knode.start_mark.line + 1)
            lines[path + (key,)] = knode.start_mark.line + 1
            out[key] = _construct(vnode, loader, path + (key,), lines)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_construct(v, loader, path + (i,), lines) for i, v in enumerate(node.value)]
    return loader.construct_object(node, deep=True)


def load_config(source) -> Config:
    """Parse a YAML file (path) or text (str containing a newline) with line numbers."""
    if isinstance(source, Path) or (isinstance(source, str) and "\n" not in source):
        path = Path(source)
        if not path.is_file():
            raise ConfigError("pipeline file not found.", key="file", received={"file": str(path)})
        text, name = path.read_text(), str(path)
    else:
        text, name = source, "<string>"
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise ConfigError("the pipeline file is empty.", key="file", received={"file": name})
        lines: dict[tuple, int] = {}
        data = _construct(node, loader, (), lines)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise ConfigError(f"is not valid YAML: {getattr(exc, 'problem', exc)}.", key=name,
                          line=mark.line + 1 if mark else None) from None
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise ConfigError("a pipeline must be a YAML mapping (name, seed, output, stages).",
                          key=name, received={"top level": type(data).__name__})
    return Config(data, lines, name)


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """Apply ``key.sub=value`` overrides (values parsed as YAML).

    In ``stages.<name>.<param>=value`` the second part is a stage name (or index).
    """
    data = copy.deepcopy(cfg.data)
    for item in overrides:
        if "=" not in item:
            raise ConfigError("an override must look like key.sub=value.", key="override",
                              received={"override": item})
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else None
        except yaml.YAMLError:
            value = raw
        parts = key.strip().split(".")
        node = data
        for depth, part in enumerate(parts[:-1]):
            if isinstance(node, list):
                names = [s.get("name") for s in node if isinstance(s, dict)]
                if part in names:
                    node = node[names.index(part)]
                elif part.isdigit() and int(part) < len(node):
                    node = node[int(part)]
                else:
                    raise UnknownKeyError(f"no stage named '{part}'.{suggest(part, names)}",
                                          key=".".join(parts[:depth + 1]),
                                          received={"override": item})
            elif isinstance(node, dict):
                if part not in node:
                    node[part] = {}
                node = node[part]
            else:
                raise ConfigError("cannot descend into a scalar.",
                                  key=".".join(parts[:depth + 1]), received={"override": item})
        if not isinstance(node, dict):
            raise ConfigError("the override's target is not a mapping.", key=key,
                              received={"override": item})
        node[parts[-1]] = value
    return Config(data, cfg.lines, cfg.source)
