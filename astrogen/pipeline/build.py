"""Build a pipeline from its YAML: check every key, construct every stage, order the graph.

Nothing is written and nothing runs here; ``astrogen validate`` is exactly this step. Besides
the keys and the graph it checks what can be checked without running: names (stage names
become file names: ``[A-Za-z0-9_.-]``, no ``..``), GalSim evaluation strings (``$...``,
``@...``, ``type: Eval``: refused unless ``allow_eval``), every stage's parameter types and
bounds (:func:`astrogen.stages.base.check_parameters`), the files the stages read (model
files opened and checked, catalogs read), the catalog columns each stage needs through the
whole graph, that no two sinks write the same file, the memory a chunk of stamps or a scene
needs, the scene field every stage that needs one receives (declared once upstream; two
inputs placed in different fields are an error), and every FITS header value the run will
write.
"""
from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from astrogen.errors import (AstrogenError, CatalogError, ConfigError, OutputError,
                             PipelineGraphError, StageError, UnknownKeyError, suggest,
                             wrap_exception)
from astrogen.pipeline.config import Config, key_path
from astrogen.pipeline.executors import ExecutorSpec, parse_executor
from astrogen.registry import STAGES
from astrogen.stages.base import Stage, check_parameters

__all__ = ["Pipeline", "StageNode", "build_pipeline", "TOP_LEVEL_KEYS", "STAGE_NAME_RE",
           "MEMORY_FRACTION", "HASH_EXCLUDED"]

#: a stage name is used as a folder name under the work folder and in FITS headers
STAGE_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
_MODULE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
#: a chunk of stamps or a scene may ask for at most this fraction of the physical memory
MEMORY_FRACTION = 0.5
#: top-level keys left out of the configuration hash (``AG_CHASH``) and of the HISTORY
#: cards: where a run writes does not change what it writes
HASH_EXCLUDED = ("output",)
#: files the runner itself writes in the output folder
_RESERVED_FILES = ("provenance.json",)

#: key -> (required, accepted types, meaning)
TOP_LEVEL_KEYS: dict[str, tuple[bool, tuple, str]] = {
    "name": (True, (str,), "pipeline name"),
    "description": (False, (str,), "free text"),
    "seed": (True, (int,), "global seed of every random draw"),
    "output": (True, (str,), "output folder"),
    "modules": (False, (list,), "plug-in modules to import (they register stage types)"),
    "stages": (True, (list,), "ordered list of stages"),
    "field": (False, (dict,), "the scene field, declared once: {survey, size, ra, dec} for "
                              "every catalog.positions / catalog.stars stage"),
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
    def hashed_config(self) -> dict[str, Any]:
        """The resolved configuration without the run location (:data:`HASH_EXCLUDED`)."""
        return {k: v for k, v in self.resolved.items() if k not in HASH_EXCLUDED}

    @property
    def config_hash(self) -> str:
        """sha256 of :attr:`hashed_config`: the same for the same pipeline written to any
        output folder."""
        text = json.dumps(self.hashed_config, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()

    def node(self, name: str) -> StageNode:
        """The node of the stage named ``name``."""
        return next(n for n in self.nodes if n.name == name)

    @property
    def sources(self) -> list[StageNode]:
        """The source-stage nodes."""
        return [n for n in self.nodes if n.stage.kind == "source"]

    def n_chunks(self) -> int:
        """Number of chunks of the pipeline (those of its first source stage)."""
        return self.sources[0].stage.n_chunks()

    def n_rows(self) -> int | None:
        """Number of catalog rows of the first source stage (``None`` when not known)."""
        return self.sources[0].stage.n_rows()


_ARTICLE = {"int": "an integer", "str": "a string", "list": "a list", "dict": "a mapping"}


def _check_type(cfg: Config, path: tuple, value, types, what: str):
    if isinstance(value, bool) and bool not in types or not isinstance(value, types):
        name = path[-1] if isinstance(path[-1], str) else key_path(path)
        raise ConfigError(f"must be {what}.", key=key_path(path), line=cfg.line(path),
                          received={name: value})


def _import_modules(cfg: Config, modules: list) -> None:
    """Import the plug-in modules (running their code: see the docs, User guide, Pipelines,
    on ``modules:``)."""
    for i, mod in enumerate(modules):
        path = ("modules", i)
        _check_type(cfg, path, mod, (str,), "a module name (string)")
        if not _MODULE_RE.match(mod):
            raise ConfigError("must be a dotted Python module name (letters, digits, '_', "
                              "'.').", key=key_path(path), line=cfg.line(path),
                              received={"module": mod})
        try:
            importlib.import_module(mod)
        except ImportError as exc:
            raise ConfigError(f"cannot import plug-in module ({exc}).", key=key_path(path),
                              line=cfg.line(path), received={"module": mod}) from None
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - the plug-in's own failure
            raise ConfigError(f"the plug-in module failed on import ({type(exc).__name__}: "
                              f"{exc}).", key=key_path(path),
                              line=cfg.line(path), received={"module": mod}) from None


def _check_no_eval(cfg: Config, data: dict) -> None:
    from astrogen.security import eval_message, find_eval, is_eval_allowed

    if is_eval_allowed():
        return
    hit = find_eval(data.get("stages"), ("stages",))
    if hit:
        path, value = hit
        raise ConfigError(eval_message(), key=key_path(path), line=cfg.line(path),
                          received={path[-1]: value})


def _check_header_text(cfg: Config, path: tuple, value: str, what: str,
                       pattern: re.Pattern | None = None, limit: int = 68) -> None:
    ok = isinstance(value, str) and 0 < len(value) <= limit and value.isascii() \
        and value.isprintable()
    if ok and pattern is not None:
        ok = bool(pattern.match(value)) and ".." not in value
    if not ok:
        rule = ("letters, digits, '_', '.', '-' (no '..', no '/'), at most 64 characters, "
                "not starting with '.' or '-'") if pattern is not None else \
            f"printable ASCII, 1 to {limit} characters"
        raise ConfigError(f"{what} must be {rule} (it is written in FITS headers"
                          f"{' and used as a folder name' if pattern is not None else ''}).",
                          key=key_path(path), line=cfg.line(path), received={path[-1]: value})


def _locate_value(params: dict, message: str) -> str | None:
    """The parameter whose value (or an item of it) is quoted in an exception message."""
    def items(v):
        if isinstance(v, dict):
            for x in v.values():
                yield from items(x)
        elif isinstance(v, (list, tuple)):
            for x in v:
                yield from items(x)
        else:
            yield v

    hits = [k for k, v in params.items()
            if any(repr(x) in message or (isinstance(x, str) and len(x) > 1 and x in message)
                   for x in items(v))]
    return hits[0] if len(hits) == 1 else None


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
        check_parameters(cls, params)
        return cls(**params)
    except AstrogenError as exc:
        sub = tuple(exc.key.split(".")) if exc.key else ()
        raise exc.at(f"stages[{i}]", cfg.line(("stages", i) + sub)) from None
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - the one boundary: name the key
        err = wrap_exception(exc)
        if not isinstance(err, StageError):  # the environment failed (memory, disk)
            raise err.at(f"stages[{i}]", cfg.line(("stages", i))) from None
        k = _locate_value(params, str(exc))
        path = ("stages", i, k) if k else ("stages", i)
        where = "" if k else f" (one of its keys: {', '.join(params) or 'none given'})"
        raise ConfigError(f"stage type '{cls.type_name}' rejected this value{where}: "
                          f"{type(exc).__name__}: {exc}", key=key_path(path),
                          line=cfg.line(path),
                          received={k: params[k]} if k else None) from None


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
            out = prod.stage.output_type  # an instance may narrow it (observe with bands)
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


def build_pipeline(cfg: Config, allow_eval: bool = False) -> Pipeline:
    """Validate ``cfg`` and construct its stages (nothing is written).

    Parameters
    ----------
    cfg : Config
        From :func:`astrogen.pipeline.config.load_config`.
    allow_eval : bool
        Let GalSim evaluate ``$`` expressions, ``@`` references and ``type: Eval`` in the
        pipeline (they run Python code from the file); off by default.

    Raises
    ------
    ConfigError, UnknownKeyError, UnknownTypeError, PipelineGraphError, OutputError,
    CatalogError, ModelError
        With the YAML key path and line.
    """
    from astrogen.security import eval_allowed

    with eval_allowed(allow_eval):
        try:
            return _build(cfg)
        except AstrogenError:
            raise
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - the one boundary
            raise wrap_exception(exc, key="pipeline") from None


def _build(cfg: Config) -> Pipeline:
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
        _check_type(cfg, (k,), data[k], types,
                    f"{_ARTICLE.get(types[0].__name__, types[0].__name__)} ({what})")
    if data["seed"] < 0 or data["seed"] >= 2 ** 63:
        raise ConfigError("must be in [0, 2**63).", key="seed", line=cfg.line(("seed",)),
                          received={"seed": data["seed"]})
    _check_header_text(cfg, ("name",), data["name"], "the pipeline name")
    if not data["output"].strip() or "\0" in data["output"]:
        raise ConfigError("must be a folder path.", key="output", line=cfg.line(("output",)),
                          received={"output": data["output"]})
    executor = parse_executor(data.get("executor"), cfg.line)
    _check_no_eval(cfg, data)
    modules = list(data.get("modules") or [])
    _import_modules(cfg, modules)
    field_spec = _check_field_key(cfg, data.get("field"))
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
        _check_header_text(cfg, path + ("name",), name, "a stage name", STAGE_NAME_RE)
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
        if field_spec is not None and cls.field_keys:
            own = [k for k in cls.field_keys if k in params]
            if own:
                raise ConfigError(
                    f"the scene field is declared once, by the pipeline's 'field:' key (line "
                    f"{cfg.line(('field',))}); remove '{own[0]}' from this stage, or the "
                    "'field:' key.", key=key_path(path + (own[0],)),
                    line=cfg.line(path + (own[0],)), received={own[0]: params[own[0]]})
            params = {**params, **field_spec}
        stage = _construct(cfg, i, cls, params)
        node = StageNode(i, name, entry["type"], inputs, params, stage, cfg.line(path))
        nodes.append(node)
        # the files it reads (model files...) are opened and checked now, in stage order
        _stage_call(cfg, node, stage.check_resources, _full_params(stage, params))

    ordered = _toposort(cfg, nodes)
    _check_types(cfg, ordered)
    sources = [n for n in ordered if n.stage.kind == "source"]
    if not sources:
        raise PipelineGraphError("the pipeline has no source stage (catalog or field).",
                                 key="stages", line=cfg.line(("stages",)))
    for n in sources:
        rows = _stage_call(cfg, n, n.stage.n_rows)
        if rows is not None and rows <= 0:
            raise CatalogError("the source has no rows (an empty catalog?); nothing to "
                               "simulate.", key=f"stages[{n.index}]", line=n.line,
                               received={"stage": n.name, "rows": rows})
    counts = {n.name: _stage_call(cfg, n, n.stage.n_chunks) for n in sources}
    if len(set(counts.values())) > 1:
        raise PipelineGraphError("all source stages must give the same number of chunks.",
                                 key="stages", line=cfg.line(("stages",)), received=counts)

    resolved = {k: data[k] for k in ("name", "description", "seed", "output", "modules", "field")
                if k in data}
    resolved["stages"] = []
    full_params = {}
    for n in nodes:
        full = _full_params(n.stage, n.params)
        full_params[n.name] = full
        resolved["stages"].append({"name": n.name, "type": n.type, "inputs": n.inputs, **full})
    _check_columns(cfg, ordered)  # (an inherited survey is one band: columns unchanged)
    _check_flux_decided_once(cfg, ordered)
    _bind_fields(cfg, ordered)
    _check_output_files(cfg, ordered, full_params)
    _check_memory(cfg, ordered, full_params)
    output = _check_output(cfg, data["output"])
    p = Pipeline(name=data["name"], seed=data["seed"], output=output, nodes=ordered,
                 resolved=resolved, source=cfg.source, modules=modules, executor=executor)
    _check_headers(cfg, p)
    return p


#: keys of the pipeline's ``field:`` (those of ``catalog.positions``' field)
FIELD_KEYS = ("survey", "size", "ra", "dec")


def _check_field_key(cfg: Config, spec) -> dict | None:
    """The pipeline's ``field:`` (``{survey, size, ra, dec}``), checked as
    ``catalog.positions`` checks them, errors named ``field.<key>``; ``None`` if absent."""
    if spec is None:
        return None
    for k in spec:
        if k not in FIELD_KEYS:
            raise UnknownKeyError(f"is not a key of the scene field.{suggest(str(k), FIELD_KEYS)} "
                                  f"Valid keys: {', '.join(FIELD_KEYS)}.", key=f"field.{k}",
                                  line=cfg.line(("field", k)), received={k: spec[k]})
    cls = STAGES.get("catalog.positions")
    try:
        check_parameters(cls, dict(spec))
        cls(**spec)
    except AstrogenError as exc:
        sub = tuple(exc.key.split(".")) if exc.key else ()
        raise exc.at("field", cfg.line(("field",) + sub)) from None
    return dict(spec)


def _full_params(stage: Stage, params: dict) -> dict[str, Any]:
    """A stage's parameters with the constructor's defaults filled in."""
    full = {k: p.default for k, p in type(stage).parameters().items()
            if p.default is not inspect.Parameter.empty}
    full.update(params)
    return full


def _stage_call(cfg: Config, n: StageNode, fn, *args):
    """``fn(*args)`` for stage ``n`` at build time, any failure named by the stage's key."""
    try:
        return fn(*args)
    except AstrogenError as exc:
        sub = tuple(exc.key.split(".")) if exc.key else ()
        raise exc.at(f"stages[{n.index}]", cfg.line(("stages", n.index) + sub)) from None
    except (Exception, SystemExit) as exc:  # noqa: BLE001
        raise wrap_exception(exc, key=f"stages[{n.index}] (stage '{n.name}')",
                             line=n.line) from None


def _input_chain(by_name: dict, n: StageNode) -> list[StageNode]:
    chain = []
    while n.inputs:
        n = by_name[n.inputs[0]]
        chain.append(n)
    return chain


def _providers(column: str) -> str:
    """Where a catalog column can come from, for error messages."""
    from astrogen.catalog.columns import CANONICAL

    types = sorted(name for name, c in STAGES.items()
                   if c.provides_columns is not None and column in c.provides_columns)
    parts = []
    if column in CANONICAL:
        parts.append("a catalog source (catalog.cosmos draws the COSMOS columns; catalog.read "
                     f"maps a file column with columns: {{{column}: <file column>}} or sets "
                     f"defaults: {{{column}: <value>}})")
    if types:
        parts.append("stage type(s) " + ", ".join(types))
    return " or ".join(parts) or "no built-in stage type"


def _check_columns(cfg: Config, ordered: list[StageNode]) -> None:
    """Every stage finds the catalog columns it needs in the rows its first input carries,
    following the graph from the sources (stages that cannot say what they provide switch
    the check off downstream)."""
    by_name = {n.name: n for n in ordered}
    cols: dict[str, set | None] = {}
    for n in ordered:
        provided = _stage_call(cfg, n, n.stage.provided_columns)
        if n.stage.kind == "source":
            cols[n.name] = None if provided is None else {"row_id", *provided}
            continue
        upstream = cols.get(n.inputs[0]) if n.inputs else None
        required = _stage_call(cfg, n, n.stage.required_columns)
        if upstream is not None:
            for c in required:
                if c not in upstream:
                    chain = _input_chain(by_name, n)
                    path = ("stages", n.index)
                    raise PipelineGraphError(
                        f"stage '{n.name}' ({n.type}) needs the catalog column '{c}', which "
                        f"is missing: its input chain "
                        f"({' <- '.join(f'{m.name} ({m.type})' for m in chain)}) provides "
                        f"{', '.join(sorted(upstream))}. '{c}' comes from {_providers(c)}.",
                        key=key_path(path), line=cfg.line(path), received={"column": c})
        cols[n.name] = None if upstream is None or provided is None else upstream | set(provided)


def _check_flux_decided_once(cfg: Config, ordered: list[StageNode]) -> None:
    """The flux of a stamp is decided once along a chain: a generator's ``flux`` key
    (:attr:`~astrogen.stages.base.Stage.flux_key` ``"flux"``) given explicitly is refused when
    a stage downstream observes its stamps (``flux_key`` ``"flux_from"``), whose
    ``flux_from`` (given or default) then decides; the error names both keys."""
    by_name = {n.name: n for n in ordered}
    for n in ordered:
        if n.stage.flux_key != "flux_from":
            continue
        todo, seen = list(n.inputs), set()
        while todo:
            m = by_name[todo.pop()]
            if m.name in seen:
                continue
            seen.add(m.name)
            todo.extend(m.inputs)
            if m.stage.flux_key != "flux" or "flux" not in m.params:
                continue
            decides = getattr(n.stage, "flux_from", None)
            given = "given" if "flux_from" in n.params else "its default"
            same = {"catalog": "catalog", "stamp": "model"}.get(decides, decides)
            path = ("stages", m.index, "flux")
            raise ConfigError(
                f"the flux of these stamps is decided once, by the stage that observes them: "
                f"stage '{n.name}' ({n.type}, line {n.line}) draws them with flux_from: "
                f"{decides} ({given}), which is this key's '{same}'. Remove 'flux' from stage "
                f"'{m.name}' and set 'flux_from' on '{n.name}' (catalog: the catalog "
                "magnitude; stamp: the model's flux).", key=key_path(path),
                line=cfg.line(path), received={"flux": m.params["flux"],
                                               f"{n.name}.flux_from": decides})


def _bind_fields(cfg: Config, ordered: list[StageNode]) -> None:
    """The scene field, declared once (``catalog.positions``, ``catalog.stars``), follows the
    graph: every stage downstream receives it in ``input_field``; a stage that needs one
    (``needs_field``: ``scene``, ``lensing.field``) without one upstream, or a stage whose
    inputs were placed in different fields, is an error naming the stages."""
    fields: dict[str, Any] = {}
    for n in ordered:
        path = ("stages", n.index)
        known = [(m, fields[m]) for m in n.inputs if fields.get(m) is not None]
        for m, f in known[1:]:
            m0, f0 = known[0]
            if f != f0:
                raise PipelineGraphError(
                    f"stage '{n.name}' ({n.type}) joins rows placed in two different scene "
                    f"fields: input '{m0}' has {f0.describe()}, input '{m}' has "
                    f"{f.describe()}; give both the same size, survey, ra and dec.",
                    key=key_path(path + ("inputs",)), line=cfg.line(path + ("inputs",)),
                    received={m0: f0.describe(), m: f.describe()})
        upstream = known[0][1] if known else None
        if upstream is not None:  # observe/scene: an omitted survey becomes the field's
            _stage_call(cfg, n, n.stage.bind_field, upstream)
        elif n.stage.needs_field:
            chain = _input_chain({x.name: x for x in ordered}, n)
            raise PipelineGraphError(
                f"stage '{n.name}' ({n.type}) needs the scene field (pixel grid and WCS of "
                f"the rows' x, y), and no stage of its input chain "
                f"({' <- '.join(f'{m.name} ({m.type})' for m in chain) or 'none'}) declares "
                "one: add a catalog.positions stage upstream.",
                key=key_path(path), line=cfg.line(path), received={"inputs": n.inputs})
        own = _stage_call(cfg, n, n.stage.output_field)
        fields[n.name] = own if own is not None else upstream


def _check_output_files(cfg: Config, ordered: list[StageNode], full: dict) -> None:
    """No two sinks write the same file, and none writes a file of the runner's."""
    owner: dict[str, StageNode] = {}
    for n in ordered:
        if n.stage.kind != "sink":
            continue
        files = _stage_call(cfg, n, n.stage.output_files, dict(full[n.name]))
        for f in files or []:
            norm = os.path.normcase(os.path.normpath(str(f)))
            key = next((k for k, v in full[n.name].items() if v == f), None)
            path = ("stages", n.index) + ((key,) if key else ())
            if norm in _RESERVED_FILES:
                raise ConfigError(f"'{f}' is written by the runner itself; choose another "
                                  "file name.", key=key_path(path), line=cfg.line(path),
                                  received={key or "file": f})
            if norm in owner and owner[norm] is not n:
                o = owner[norm]
                raise ConfigError(f"stage '{n.name}' would write '{f}', which stage "
                                  f"'{o.name}' (stages[{o.index}], line {o.line}) writes too; "
                                  "give one of them another file name.",
                                  key=key_path(path), line=cfg.line(path),
                                  received={key or "file": f})
            owner[norm] = n


def _physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        return None


def _check_memory(cfg: Config, ordered: list[StageNode], full: dict) -> None:
    """A chunk of stamps (chunk_size x stamp_size^2, float64) and a scene (float64, noisy
    and noiseless) must fit in :data:`MEMORY_FRACTION` of the physical memory."""
    total = _physical_memory()
    if not total:
        return
    budget = MEMORY_FRACTION * total
    chunk = max((int(full[n.name].get("chunk_size") or 0) for n in ordered
                 if n.stage.kind == "source"), default=0) or 1
    gib = 2.0 ** 30
    for n in ordered:
        prm = full[n.name]
        size = prm.get("stamp_size")
        if isinstance(size, int) and not isinstance(size, bool):
            need = 8.0 * chunk * size * size
            if need > budget:
                path = ("stages", n.index, "stamp_size")
                raise ConfigError(
                    f"a chunk of {chunk} stamps of {size}x{size} pixels needs "
                    f"{need / gib:.1f} GiB, more than {MEMORY_FRACTION:.0%} of this machine's "
                    f"{total / gib:.1f} GiB; lower stamp_size or the source's chunk_size.",
                    key=key_path(path), line=cfg.line(path), received={"stamp_size": size})
        size = prm.get("size") if n.type == "catalog.positions" else None
        if size is not None:
            nx, ny = (size, size) if not isinstance(size, (list, tuple)) else size
            need = 2 * 8.0 * nx * ny
            if need > budget:
                path = ("stages", n.index, "size")
                raise ConfigError(
                    f"a {nx}x{ny} scene needs {need / gib:.1f} GiB, more than "
                    f"{MEMORY_FRACTION:.0%} of this machine's {total / gib:.1f} GiB.",
                    key=key_path(path), line=cfg.line(path), received={"size": size})


_HEADER_KEYS = ("band", "name", "survey")


def _header_strings(value, path: tuple):
    """The first ``band`` / ``name`` / ``survey`` string inside ``value`` that cannot be a FITS
    card value, as ``(path, value)``."""
    if isinstance(value, dict):
        for k, v in value.items():
            if k in _HEADER_KEYS and isinstance(v, str) and not (
                    v.isascii() and v.isprintable() and len(v) <= 68):
                return path + (k,), v
            hit = _header_strings(v, path + (k,))
            if hit:
                return hit
    elif isinstance(value, list):
        for j, v in enumerate(value):
            hit = _header_strings(v, path + (j,))
            if hit:
                return hit
    return None


def _check_headers(cfg: Config, p: "Pipeline") -> None:
    """Every FITS header value the run will write (provenance cards, HISTORY lines) is
    valid FITS: printable ASCII that fits its card."""
    from astrogen.io.fits_out import check_header_values
    from astrogen.pipeline.runner import config_history, stage_provenance_cards

    history = config_history(p)
    for n in p.nodes:  # survey and band names become FILTER / SURVEY cards
        hit = _header_strings(n.params, ("stages", n.index))
        if hit:
            path, value = hit
            raise ConfigError("is written in FITS headers and must be printable ASCII of at "
                              "most 68 characters.", key=key_path(path), line=cfg.line(path),
                              received={path[-1]: value})
    for n in p.nodes:
        try:
            check_header_values(stage_provenance_cards(p, n), history)
        except AstrogenError as exc:
            path = ("stages", n.index)
            raise ConfigError(f"stage '{n.name}' would write an invalid FITS header: "
                              f"{exc.message}", key=key_path(path), line=cfg.line(path),
                              received=exc.received) from None
