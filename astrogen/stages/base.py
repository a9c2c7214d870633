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
from typing import TYPE_CHECKING, Any, ClassVar

from astrogen.errors import ConfigError

if TYPE_CHECKING:  # the scene geometry (physics.scene loads GalSim: not at import)
    from astrogen.physics.scene import Field

__all__ = ["Stage", "StageContext", "check_positive", "check_choice", "check_int",
           "check_file_name", "check_parameters", "check_model_file", "PARAM_LIMITS",
           "MAX_INT", "OUTPUT_SUFFIXES"]


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
    uses_tensorflow: bool = False  # an instance may set it (a method choice that loads a network)
    #: Catalog columns the stage reads from the rows of its first input (``astrogen
    #: validate`` checks that something upstream provides them); see
    #: :meth:`required_columns`.
    requires_columns: ClassVar[tuple[str, ...]] = ()
    #: Columns the stage adds to the rows it passes on; for a source, every column it
    #: produces (``None``, the default: not known before running, which turns the column
    #: check off downstream; ``()``: passes its input's columns on and adds none).
    provides_columns: ClassVar[tuple[str, ...] | None] = None
    #: Whether the stage reads the scene field (pixel grid and TAN WCS of the rows' ``x``,
    #: ``y``): ``astrogen validate`` then checks that a stage upstream declares one, and the
    #: pipeline builder hands it over in :attr:`input_field`.
    needs_field: ClassVar[bool] = False
    #: Constructor keys that declare the scene field (``catalog.positions``,
    #: ``catalog.stars``): filled from the pipeline's ``field:`` key, which they may not repeat.
    field_keys: ClassVar[tuple[str, ...]] = ()
    #: The constructor key with which the stage decides the flux of its stamps: ``"flux"``
    #: for a generator (keep the model's flux or rescale to the catalog), ``"flux_from"``
    #: for a stage that observes stamps (catalog magnitude or stamp flux). Along one chain
    #: of stages the flux is decided once: ``astrogen validate`` refuses a generator's
    #: ``flux`` when a stage downstream observes its stamps (that stage's ``flux_from``
    #: decides).
    flux_key: ClassVar[str | None] = None

    ctx: StageContext | None = None
    #: The :class:`~astrogen.physics.scene.Field` of the rows this stage receives, set by the
    #: pipeline builder from the stage upstream that declares it (:meth:`output_field`), or
    #: by :meth:`bind_field` in Python; ``None`` when no stage upstream places rows.
    input_field: "Field | None" = None

    def __init_subclass__(cls, **kwargs):
        """Every stage constructor checks its arguments with :func:`check_parameters` (types
        from its annotations, the shared bounds of :data:`PARAM_LIMITS`) before its own
        body runs, whether it is built from YAML or called from Python."""
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is None or getattr(init, "_astrogen_checked", False):
            return
        import functools

        sig = inspect.signature(init)

        @functools.wraps(init)
        def checked_init(self, *args, **kw):
            try:
                bound = sig.bind(self, *args, **kw)
            except TypeError:
                return init(self, *args, **kw)  # let Python report the bad call itself
            given = {k: v for k, v in list(bound.arguments.items())[1:]
                     if sig.parameters[k].kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                                   inspect.Parameter.KEYWORD_ONLY)}
            _check_values(sig, given)
            return init(self, *args, **kw)

        checked_init._astrogen_checked = True
        cls.__init__ = checked_init

    # ---- introspection -------------------------------------------------------------------
    @classmethod
    def parameters(cls) -> dict[str, inspect.Parameter]:
        """The constructor's keyword arguments (the stage's valid YAML keys)."""
        sig = inspect.signature(cls.__init__)
        return {k: p for k, p in sig.parameters.items()
                if k != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}

    @classmethod
    def summary(cls) -> str:
        """The first line of the stage's docstring."""
        doc = inspect.getdoc(cls) or ""
        return doc.splitlines()[0] if doc else ""

    @classmethod
    def parameter_docs(cls) -> dict[str, tuple[str, str]]:
        """``name -> (type, description)`` from the ``Parameters`` section of the stage's
        numpydoc docstring (``"a, b : int"`` documents both; the type line holds the allowed
        values, ``{"x", "y"}``). Parameters without an entry are absent."""
        lines = (inspect.getdoc(cls) or "").splitlines()

        def underlined(k: int) -> bool:
            return (k + 1 < len(lines) and bool(lines[k].strip())
                    and not lines[k].startswith(" ") and bool(lines[k + 1].strip())
                    and set(lines[k + 1].strip()) == {"-"})

        start = next((k + 2 for k in range(len(lines))
                      if underlined(k) and lines[k].strip() == "Parameters"), None)
        if start is None:
            return {}
        end = next((k for k in range(start, len(lines)) if underlined(k)), len(lines))
        out: dict[str, tuple[str, str]] = {}
        entry: list = []  # [names, type, description lines]
        open_list = False
        for line in lines[start:end]:
            if line.strip() and not line.startswith(" "):
                head, _, kind = line.partition(" : ")
                names = [n.strip() for n in head.split(",") if n.strip()]
                if entry and not entry[2] and not entry[1] and open_list:
                    entry[0] += names  # "a, b,\nc" names three parameters
                    entry[1] = kind.strip()
                else:
                    entry = [names, kind.strip(), []]
                open_list = not kind and head.rstrip().endswith(",")
                for n in names:
                    out[n] = entry  # filled in below as the description grows
            elif line.strip() and entry:
                entry[2].append(line.strip())
        return {n: (e[1], " ".join(e[2])) for n, e in out.items()}

    # ---- what validate checks without running ---------------------------------------------
    def required_columns(self) -> tuple[str, ...]:
        """Catalog columns this stage needs in the rows of its first input (default
        :attr:`requires_columns`; override when they depend on a parameter)."""
        return tuple(self.requires_columns)

    def provided_columns(self) -> tuple[str, ...] | None:
        """Columns this stage adds (sources: all the columns it produces), or ``None`` when
        they are not known before running (default :attr:`provides_columns`)."""
        p = self.provides_columns
        return None if p is None else tuple(p)

    def output_field(self) -> "Field | None":
        """The scene field this stage places its rows in (``catalog.positions``,
        ``catalog.stars``), or ``None`` (default): its rows keep their inputs' field."""
        return None

    def bind_field(self, field: "Field") -> "Stage":
        """Give the stage the scene field of its input rows (what the pipeline builder does
        for every stage downstream of the one that declares it); returns the stage."""
        from astrogen.physics.scene import Field

        if not isinstance(field, Field):
            raise ConfigError("must be an astrogen.physics.scene.Field.", key="field",
                              received={"field": type(field).__name__})
        self.input_field = field
        return self

    def require_field(self) -> "Field":
        """:attr:`input_field`, or a :class:`~astrogen.errors.ConfigError` saying where one
        comes from (a stage with :attr:`needs_field` run outside a pipeline, unbound)."""
        if self.input_field is None:
            raise ConfigError(f"{self.type_name or type(self).__name__} needs the scene field "
                              "of its rows: add a 'catalog.positions' stage upstream (or "
                              "call bind_field(field) in Python).", key="inputs")
        return self.input_field

    def output_files(self, params: dict[str, Any]) -> list[str]:
        """Files (relative to the output folder) this sink writes, for the check that no two
        sinks write the same file. ``params`` are its resolved parameters (defaults
        included); default: every string parameter ending in an output suffix."""
        return [v for v in params.values()
                if isinstance(v, str) and v.lower().endswith(OUTPUT_SUFFIXES)]

    def check_resources(self, params: dict[str, Any]) -> None:
        """Open and check every file the stage will read (``astrogen validate`` calls it;
        nothing is written). Default: every parameter named ``model`` (or ``*_model``) that
        is a ``.keras`` / ``.json`` path is checked by :func:`check_model_file`. Raise an
        :class:`~astrogen.errors.AstrogenError` naming the parameter."""
        for k, v in params.items():
            if (k == "model" or k.endswith("_model")) and isinstance(v, str) \
                    and v.lower().endswith((".keras", ".json")):
                check_model_file(k, v)

    # ---- lifecycle -----------------------------------------------------------------------
    def setup(self, ctx: StageContext) -> None:
        """Called once before the first chunk (load models here)."""
        self.ctx = ctx

    # source
    def n_chunks(self) -> int:
        """Number of chunks a source stage yields (source stages override it).

        Returns
        -------
        int
            Chunk count; the runner calls :meth:`read_chunk` for ``0 .. n_chunks() - 1``.

        Raises
        ------
        NotImplementedError
            For a stage that is not a source.
        """
        raise NotImplementedError(f"{type(self).__name__} is not a source stage")

    def n_rows(self) -> int | None:
        """Total number of catalog rows a source stage yields (``None``: not known in advance).

        Returns
        -------
        int or None
            Row count over all chunks, used for progress reporting.
        """
        return None

    def read_chunk(self, index: int):
        """Produce chunk ``index`` of a source stage (source stages override it).

        Parameters
        ----------
        index : int
            Chunk number, ``0 <= index < n_chunks()``; the output depends only on it and the
            stage seed (counter-based seeds), so chunks may be read in any order.

        Returns
        -------
        object
            The chunk (an ``astropy.table.Table``, :class:`~astrogen.batch.StampBatch`, ...), of
            the stage's declared output type.

        Raises
        ------
        NotImplementedError
            For a stage that is not a source.
        """
        raise NotImplementedError(f"{type(self).__name__} is not a source stage")

    # map
    def process(self, *inputs):
        """Transform the chunks of the upstream stages into this map stage's output.

        Parameters
        ----------
        *inputs : object
            One chunk per input stage, in the order of the stage's ``inputs``.

        Returns
        -------
        object
            The output chunk, of the stage's declared output type.

        Raises
        ------
        NotImplementedError
            For a stage that is not a map stage.
        """
        raise NotImplementedError(f"{type(self).__name__} is not a map stage")

    # sink
    def consume(self, index: int, *inputs) -> None:
        """Write (or accumulate) chunk ``index`` in a sink stage; final products in :meth:`finalize`.

        Parameters
        ----------
        index : int
            Chunk number (per-chunk parts are written under the stage's ``work_dir``).
        *inputs : object
            One chunk per input stage, in the order of the stage's ``inputs``.

        Raises
        ------
        NotImplementedError
            For a stage that is not a sink.
        """
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


# ---- checks applied to every stage's parameters before its constructor runs ----------------
#: largest integer any parameter may hold (beyond it a value is a typo or an attack)
MAX_INT = 2 ** 53
#: suffixes of the files sinks write (:meth:`Stage.output_files`)
OUTPUT_SUFFIXES = (".fits", ".fit", ".fz", ".png", ".jpg", ".json", ".csv", ".ecsv", ".h5",
                   ".hdf5", ".npz", ".npy", ".txt", ".md")

#: Parameter name -> (kind, low, high, unit): bounds that hold in every stage type that has a
#: parameter of that name (``kind``: "int", "number", "pair" = [low, high] of numbers,
#: "int_or_pair" = an integer or two). Upper bounds keep a typo from asking for terabytes:
#: a 4096-pixel stamp is 128 MiB in float64, a 65536-pixel scene 32 GiB.
PARAM_LIMITS: dict[str, tuple[str, float, float, str]] = {
    "stamp_size": ("int", 4, 4096, "pix"),
    "n_objects": ("int", 1, 10 ** 8, "rows"),
    "chunk_size": ("int", 1, 10 ** 6, "rows"),
    "size": ("int_or_pair", 1, 65536, "pix"),
    "n_boxes": ("int", 1, 10 ** 6, "boxes"),
    "first_box": ("int", 0, 10 ** 9, ""),
    "batch_size": ("int", 1, 4096, ""),
    "n_max": ("int", 1, 10 ** 4, "stamps"),
    "n_samples": ("int", 1, 1024, ""),
    "num_steps": ("int", 1, 10 ** 4, ""),
    "n_steps": ("int", 1, 10 ** 4, ""),
    "n_figures": ("int", 0, 1000, ""),
    "min_objects": ("int", 1, 64, ""),
    "max_objects": ("int", 1, 64, ""),
    "minarea": ("int", 1, 10 ** 6, "pix"),
    "deblend_nthresh": ("int", 1, 1024, ""),
    "density_grid": ("int", 2, 2048, ""),
    "hdu": ("int", 0, 10 ** 4, ""),
    "pixel_scale": ("number", 1e-6, 3600.0, "arcsec/pixel"),
    "zero_point": ("number", -50.0, 100.0, "mag (AB)"),
    "guidance": ("number", 0.0, 100.0, ""),
    "temperature": ("number", 0.0, 100.0, ""),
    "mag_range": ("pair", -10.0, 40.0, "mag (AB)"),
    "separation": ("pair", 0.0, 1e4, ""),
}

_TYPE_WORDS = {"int": "an integer", "float": "a number", "bool": "true or false",
               "str": "a string", "list": "a list", "dict": "a mapping", "tuple": "a list"}


def _annotation_types(annotation) -> list[str] | None:
    """``"int | None"`` -> ``["int", "None"]``; ``None`` when the annotation is absent or
    not one of the plain YAML types."""
    if annotation is inspect.Parameter.empty:
        return None
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__",
                                                                   str(annotation))
    names = []
    for part in str(text).replace("Optional[", "").replace("]", "").split("|"):
        part = part.strip().split("[")[0]
        if part in ("None", "NoneType"):
            names.append("None")
        elif part in _TYPE_WORDS:
            names.append(part)
        else:
            return None
    return names


def _type_ok(value, names: list[str]) -> bool:
    import math

    for n in names:
        if n == "None" and value is None:
            return True
        if n == "bool" and isinstance(value, bool):
            return True
        if isinstance(value, bool):
            continue
        if n == "int" and isinstance(value, int):
            return True
        if n == "float" and isinstance(value, (int, float)):
            return isinstance(value, int) or math.isfinite(value)
        if n == "str" and isinstance(value, str):
            return True
        if n in ("list", "tuple") and isinstance(value, (list, tuple)):
            return True
        if n == "dict" and isinstance(value, dict):
            return True
    return False


def _number(name: str, value, lo: float, hi: float, unit: str, integer: bool, shown=None):
    import math

    what = "an integer" if integer else "a number"
    u = f" {unit}" if unit else ""
    ok = not isinstance(value, bool) and (isinstance(value, int) if integer
                                          else isinstance(value, (int, float)))
    if ok and not integer:
        ok = math.isfinite(value)
    if not ok or not (lo <= value <= hi):
        raise ConfigError(f"must be {what} in [{lo:g}, {hi:g}]{u}.", key=name,
                          received={name: value if shown is None else shown})


def check_parameters(cls, params: dict[str, Any]) -> None:
    """Check the values given to a stage type before its constructor runs.

    Every value must match the constructor's annotation (``int``, ``float``, ``bool``,
    ``str``, ``list``, ``dict``, optionally ``| None``; floats finite; no integer beyond
    :data:`MAX_INT`), and parameters named in :data:`PARAM_LIMITS` must be within their
    bounds, whatever the stage type.

    Raises
    ------
    ConfigError
        Naming the parameter, the value received and what was expected.
    """
    _check_values(inspect.signature(cls.__init__), params)


def _check_values(sig: inspect.Signature, params: dict[str, Any]) -> None:
    for k, v in params.items():
        prm = sig.parameters.get(k)
        if prm is None or prm.kind not in (prm.POSITIONAL_OR_KEYWORD, prm.KEYWORD_ONLY):
            continue
        names = _annotation_types(prm.annotation)
        if names is not None and not _type_ok(v, names):
            words = " or ".join(dict.fromkeys(_TYPE_WORDS.get(n, "null") for n in names))
            extra = " (finite)" if "float" in names and isinstance(v, float) else ""
            raise ConfigError(f"must be {words}{extra}.", key=k, received={k: v})
        if isinstance(v, int) and not isinstance(v, bool) and abs(v) > MAX_INT:
            raise ConfigError(f"is beyond any sensible value (|value| <= 2**53).", key=k,
                              received={k: v})
        if k in PARAM_LIMITS and v is not None:
            kind, lo, hi, unit = PARAM_LIMITS[k]
            if kind in ("int", "number"):
                _number(k, v, lo, hi, unit, kind == "int")
            elif kind == "int_or_pair":
                items = v if isinstance(v, (list, tuple)) else [v]
                if isinstance(v, (list, tuple)) and len(v) != 2:
                    raise ConfigError(f"must be an integer or a list of two integers in "
                                      f"[{lo:g}, {hi:g}] {unit}.", key=k, received={k: v})
                for x in items:
                    _number(k, x, lo, hi, unit, True, shown=v)
            elif kind == "pair":
                if not isinstance(v, (list, tuple)) or len(v) != 2:
                    raise ConfigError(f"must be a list of two numbers [low, high] in "
                                      f"[{lo:g}, {hi:g}] {unit}.", key=k, received={k: v})
                for x in v:
                    _number(k, x, lo, hi, unit, False, shown=v)
                if not v[0] < v[1]:
                    raise ConfigError("must be [low, high] with low < high.", key=k,
                                      received={k: v})


def check_model_file(key: str, value) -> Path:
    """Open a model file (``.keras``, or its ``.json`` sidecar) and check it without
    TensorFlow: the ``.keras`` zip archive reads back with correct checksums and holds the
    Keras ``config.json`` (valid JSON) and weights; the ``.json`` sidecar, if present, is
    valid JSON.

    Raises
    ------
    ModelError
        Missing, unreadable, truncated or corrupt file, naming ``key``.
    """
    import json
    import zipfile

    from astrogen.errors import ModelError

    path = Path(str(value)).expanduser()
    keras_path = path.with_suffix(".keras") if path.suffix.lower() == ".json" else path
    side = keras_path.with_suffix(".json")
    if not keras_path.is_file():
        raise ModelError("model file not found.", key=key, received={key: str(value)})
    try:
        with zipfile.ZipFile(keras_path) as z:
            bad = z.testzip()
            if bad is not None:
                raise ModelError(f"the model file is corrupt (member '{bad}' fails its "
                                 "checksum).", key=key, received={key: str(value)})
            names = set(z.namelist())
            if "config.json" not in names or not any(n.endswith(".h5") for n in names):
                raise ModelError("is not a Keras model file (no config.json and weights "
                                 "inside).", key=key, received={key: str(value)})
            json.loads(z.read("config.json").decode("utf-8"))
    except ModelError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError,
            UnicodeDecodeError) as exc:
        raise ModelError(f"is not a readable Keras model file (truncated or corrupt: {exc}).",
                         key=key, received={key: str(value)}) from None
    except OSError as exc:
        raise ModelError(f"cannot be read ({exc.strerror or exc}).", key=key,
                         received={key: str(value)}) from None
    if side.is_file():
        try:
            json.loads(side.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError, OSError) as exc:
            raise ModelError(f"the model's sidecar {side.name} is not valid JSON ({exc}).",
                             key=key, received={key: str(value)}) from None
    return keras_path
