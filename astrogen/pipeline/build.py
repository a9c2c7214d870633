"""Build a pipeline from its YAML: check every key, construct every stage, order the graph.

Nothing is written and nothing runs here; ``astrogen validate`` is exactly this step.
"""
from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from astrogen.errors import (AstrogenError, ConfigError, OutputError, PipelineGraphError,
                             UnknownKeyError, suggest)
from astrogen.pipeline.config import Config, key_path
from astrogen.pipeline.executors import ExecutorSpec, parse_executor
from astrogen.registry import STAGES
from astrogen.stages.base import Stage

__all__ = ["Pipeline", "StageNode", "build_pipeline", "TOP_LEVEL_KEYS"]

#: key -> (required, accepted types, meaning)
TOP_LEVEL_KEYS: dict[str, tuple[bool, tuple, str]] = {
    "name": (True, (str,), "pipeline name"),
    "description": (False, (str,), "free text"),
    "seed": (True, (int,), "global seed of every random draw"),
    "output": (True, (str,), "output folder"),
    "modules": (False, (list,), "plug-in modules to import (they register stage types)"),
    "stages": (True, (list,), "ordered list of stages"),
    "executor": (False, (dict, str), "where map stages run: local (default) or dask; "
                                     "not part of the configuration hash"),
}
_RESERVED = ("name", "type", "inputs")


@dataclass
class StageNode:
    """A constructed stage and its place in the pipeline."""

    index: int
    name: str
    type: str
    inputs: list[str]
    params: dict[str, Any]
    stage: Stage
    line: int | None = None


@dataclass
class Pipeline:
    """A validated pipeline, stages in execution (topological) order."""

    name: str
    seed: int
    output: Path
    nodes: list[StageNode]
    resolved: dict[str, Any]
    source: str = "<string>"
    modules: list[str] = field(default_factory=list)
    #: where the map stages run (``executor:`` key); not part of :attr:`config_hash`, so the
    #: outputs and ``--resume`` do not depend on it
    executor: ExecutorSpec = field(default_factory=ExecutorSpec)

    @property
    def config_hash(self) -> str:
        text = json.dumps(self.resolved, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()

    def node(self, name: str) -> StageNode:
        return next(n for n in self.nodes if n.name == name)

    @property
    def sources(self) -> list[StageNode]:
        return [n for n in self.nodes if n.stage.kind == "source"]

    def n_chunks(self) -> int:
        return self.sources[0].stage.n_chunks()

    def n_rows(self) -> int | None:
        return self.sources[0].stage.n_rows()


def _check_type(cfg: Config, path: tuple, value, types, what: str):
    if isinstance(value, bool) and bool not in types or not isinstance(value, types):
        raise ConfigError(f"must be {what}.", key=key_path(path), line=cfg.line(path),
                          received={path[-1]: value})


def _import_modules(cfg: Config, modules: list) -> None:
    for i, mod in enumerate(modules):
        path = ("modules", i)
        _check_type(cfg, path, mod, (str,), "a module name (string)")
        try:
            importlib.import_module(mod)
        except ImportError as exc:
            raise ConfigError(f"cannot import plug-in module ({exc}).", key=key_path(path),
                              line=cfg.line(path), received={"module": mod}) from None


def _construct(cfg: Config, i: int, cls: type[Stage], params: dict) -> Stage:
    valid = cls.parameters()
    for k in params:
        if k not in valid:
            path = ("stages", i, k)
            raise UnknownKeyError(
                f"is not a parameter of stage type '{cls.type_name}'.{suggest(k, valid)} "
                f"Valid keys: {', '.join(list(_RESERVED) + list(valid))}.",
                key=key_path(path), line=cfg.line(path), received={k: params[k]})
    missing = [k for k, p in valid.items() if p.default is inspect.Parameter.empty
               and k not in params]
    if missing:
        path = ("stages", i)
        raise ConfigError(f"stage type '{cls.type_name}' needs the key '{missing[0]}'.",
                          key=key_path(path), line=cfg.line(path), received={"missing": missing})
    try:
        return cls(**params)
    except AstrogenError as exc:
        sub = tuple(exc.key.split(".")) if exc.key else ()
        raise exc.at(f"stages[{i}]", cfg.line(("stages", i) + sub)) from None
    except (TypeError, ValueError, KeyError) as exc:
        raise ConfigError(f"stage type '{cls.type_name}' rejected its parameters: {exc}",
                          key=f"stages[{i}]", line=cfg.line(("stages", i))) from None


def _toposort(cfg: Config, nodes: list[StageNode]) -> list[StageNode]:
    by_name = {n.name: n for n in nodes}
    for n in nodes:
        for j, inp in enumerate(n.inputs):
            if inp not in by_name:
                path = ("stages", n.index, "inputs", j)
                raise PipelineGraphError(
                    f"stage '{n.name}' takes input '{inp}', which no stage produces."
                    f"{suggest(inp, by_name)}", key=key_path(path), line=cfg.line(path),
                    received={"inputs": n.inputs})
    order, state = [], {}

    def visit(n: StageNode, stack: list[str]):
        if state.get(n.name) == 2:
            return
        if state.get(n.name) == 1:
            cycle = stack[stack.index(n.name):] + [n.name]
            path = ("stages", n.index, "inputs")
            raise PipelineGraphError(f"cyclic inputs: {' -> '.join(cycle)}.",
                                     key=key_path(path), line=cfg.line(path),
                                     received={"inputs": n.inputs})
        state[n.name] = 1
        for inp in n.inputs:
            visit(by_name[inp], stack + [n.name])
        state[n.name] = 2
        order.append(n)

    for n in nodes:
        visit(n, [])
    return order


def _check_types(cfg: Config, nodes: list[StageNode]) -> None:
    by_name = {n.name: n for n in nodes}
    for n in nodes:
        cls = type(n.stage)
        path = ("stages", n.index, "inputs")
        if n.stage.kind == "source":
            if n.inputs:
                raise PipelineGraphError(f"stage '{n.name}' ({n.type}) is a source and takes "
                                         "no inputs.", key=key_path(path), line=cfg.line(path),
                                         received={"inputs": n.inputs})
            continue
        if len(n.inputs) != len(cls.input_types):
            raise PipelineGraphError(
                f"stage '{n.name}' ({n.type}) takes {len(cls.input_types)} input(s).",
                key=key_path(path), line=cfg.line(path), received={"inputs": n.inputs})
        for j, (inp, accepted) in enumerate(zip(n.inputs, cls.input_types)):
            prod = by_name[inp]
            accepted = accepted if isinstance(accepted, tuple) else (accepted,)
            out = type(prod.stage).output_type
            if prod.stage.kind == "sink" or out is None or not issubclass(out, accepted):
                what = "nothing (it is an output stage)" if out is None else out.__name__
                raise PipelineGraphError(
                    f"input '{inp}' of stage '{n.name}' produces {what}; {n.type} expects "
                    f"{' or '.join(a.__name__ for a in accepted)}.",
                    key=key_path(path + (j,)), line=cfg.line(path + (j,)),
                    received={"inputs": n.inputs})


def _check_output(cfg: Config, output: str) -> Path:
    out = Path(output).expanduser()
    line = cfg.line(("output",))
    if out.exists() and not out.is_dir():
        raise OutputError("exists and is not a folder.", key="output", line=line,
                          received={"output": output})
    # really try (permission bits lie for root and on special file systems), then undo
    created = []
    probe_dir = out
    while not probe_dir.exists():
        created.append(probe_dir)
        probe_dir = probe_dir.parent
    try:
        for d in reversed(created):
            d.mkdir()
        probe = out / f".astrogen-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise OutputError(f"cannot be written ({exc.strerror or exc}).", key="output",
                          line=line, received={"output": output}) from None
    finally:
        for d in created:
            try:
                d.rmdir()
            except OSError:
                pass
    return out


def build_pipeline(cfg: Config) -> Pipeline:
    """Validate ``cfg`` and construct its stages (nothing is written).

    Raises
    ------
    ConfigError, UnknownKeyError, UnknownTypeError, PipelineGraphError, OutputError
        With the YAML key path and line.
    """
    import astrogen.stages  # noqa: F401  (registers the built-in stage types)

    data = cfg.data
    for k in data:
        if k not in TOP_LEVEL_KEYS:
            raise UnknownKeyError(f"is not a pipeline key.{suggest(k, TOP_LEVEL_KEYS)} "
                                  f"Valid keys: {', '.join(TOP_LEVEL_KEYS)}.", key=str(k),
                                  line=cfg.line((k,)), received={k: data[k]})
    for k, (required, types, what) in TOP_LEVEL_KEYS.items():
        if k not in data:
            if required:
                raise ConfigError(f"the pipeline needs the key '{k}' ({what}).", key=k)
            continue
        _check_type(cfg, (k,), data[k], types, f"a {types[0].__name__} ({what})")
    if data["seed"] < 0:
        raise ConfigError("must be >= 0.", key="seed", line=cfg.line(("seed",)),
                          received={"seed": data["seed"]})
    executor = parse_executor(data.get("executor"), cfg.line)
    modules = list(data.get("modules") or [])
    _import_modules(cfg, modules)
    if not data["stages"]:
        raise ConfigError("the pipeline has no stages.", key="stages", line=cfg.line(("stages",)))

    nodes, seen = [], {}
    for i, entry in enumerate(data["stages"]):
        path = ("stages", i)
        if not isinstance(entry, dict):
            raise ConfigError("a stage must be a mapping with name, type, inputs and its "
                              "parameters.", key=key_path(path), line=cfg.line(path),
                              received={"stage": entry})
        for k in ("name", "type"):
            if k not in entry:
                raise ConfigError(f"a stage needs a '{k}'.", key=key_path(path),
                                  line=cfg.line(path), received={"keys": list(entry)})
            _check_type(cfg, path + (k,), entry[k], (str,), "a string")
        name = entry["name"]
        if name in seen:
            raise ConfigError(f"stage name already used by stages[{seen[name]}].",
                              key=key_path(path + ("name",)), line=cfg.line(path + ("name",)),
                              received={"name": name})
        seen[name] = i
        cls = STAGES.get(entry["type"], key=key_path(path + ("type",)),
                         line=cfg.line(path + ("type",)))
        inputs = entry.get("inputs", [])
        inputs = [inputs] if isinstance(inputs, str) else inputs
        if not isinstance(inputs, list) or not all(isinstance(x, str) for x in inputs):
            raise ConfigError("must be a list of stage names.", key=key_path(path + ("inputs",)),
                              line=cfg.line(path + ("inputs",)), received={"inputs": inputs})
        params = {k: v for k, v in entry.items() if k not in _RESERVED}
        stage = _construct(cfg, i, cls, params)
        nodes.append(StageNode(i, name, entry["type"], inputs, params, stage, cfg.line(path)))

    ordered = _toposort(cfg, nodes)
    _check_types(cfg, ordered)
    sources = [n for n in ordered if n.stage.kind == "source"]
    if not sources:
        raise PipelineGraphError("the pipeline has no source stage (catalog or field).",
                                 key="stages", line=cfg.line(("stages",)))
    counts = {n.name: n.stage.n_chunks() for n in sources}
    if len(set(counts.values())) > 1:
        raise PipelineGraphError("all source stages must give the same number of chunks.",
                                 key="stages", line=cfg.line(("stages",)), received=counts)
    output = _check_output(cfg, data["output"])

    resolved = {k: data[k] for k in ("name", "description", "seed", "output", "modules")
                if k in data}
    resolved["stages"] = []
    for n in nodes:
        full = {k: p.default for k, p in type(n.stage).parameters().items()
                if p.default is not inspect.Parameter.empty}
        full.update(n.params)
        resolved["stages"].append({"name": n.name, "type": n.type, "inputs": n.inputs, **full})
    return Pipeline(name=data["name"], seed=data["seed"], output=output, nodes=ordered,
                    resolved=resolved, source=cfg.source, modules=modules, executor=executor)
