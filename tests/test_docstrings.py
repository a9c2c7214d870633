"""Docstring coverage of the package's public objects (issue 19: target 100 %).

Every module of ``astrogen`` is imported (``pkgutil.walk_packages``) and every public object
must have a docstring (``inspect.getdoc`` non-empty):

* the module itself;
* its public functions and classes: the names of ``__all__`` where the module has one, else
  the names not starting with ``_`` whose object is defined in that module;
* the public methods, properties, class- and static methods defined in those classes' bodies.

``inspect.getdoc`` inherits a method's docstring from the base class that documents it, so a
Keras ``call``/``get_config`` or a ``Stage.process`` override is covered by its documented
base. A class needs a docstring of its own (not one inherited from its base, nor the
signature a ``dataclass`` or ``NamedTuple`` writes in place of a missing one).

Modules that need an optional extra (``OPTIONAL_EXTRAS``) are skipped only when importing
them raises ``ImportError`` for that extra, and the skip names it. The failure message lists
every object that lacks a docstring and the coverage fraction;
``benchmarks/docstring_coverage.py`` writes the same figures to
``benchmarks/results/docs/docstring_coverage.txt``.
"""
from __future__ import annotations

import functools
import importlib
import inspect
import pkgutil
import re
from dataclasses import dataclass, field

import pytest

#: top-level import name of an optional dependency -> the pyproject extra that installs it
OPTIONAL_EXTRAS = {"btk": "btk", "scarlet2": "scarlet2", "jax": "scarlet2", "jaxlib": "scarlet2",
                   "baryonforge": "baryonforge", "BaryonForge": "baryonforge",
                   "dask_jobqueue": "hpc", "bokeh": "hpc"}


@dataclass
class Coverage:
    """Result of a docstring scan of the package.

    Attributes
    ----------
    documented : list of str
        Dotted names of the public objects that have a docstring.
    missing : list of str
        Dotted names of the public objects without one (``kind: name``).
    skipped : list of str
        Modules not imported, each with the missing optional extra that explains it.
    """

    documented: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        """Number of public objects checked."""
        return len(self.documented) + len(self.missing)

    @property
    def fraction(self) -> float:
        """Fraction of the public objects that have a docstring, in [0, 1]."""
        return len(self.documented) / self.total if self.total else 1.0

    def report(self) -> str:
        """Human-readable summary: coverage, then every missing object, then the skips."""
        lines = [f"docstring coverage: {len(self.documented)}/{self.total} public objects "
                 f"= {100 * self.fraction:.1f} %",
                 f"missing ({len(self.missing)}):"]
        lines += [f"  {m}" for m in self.missing]
        lines += [f"skipped module: {s}" for s in self.skipped]
        return "\n".join(lines)


_AUTO_CLASS_DOC = re.compile(r"^\w+\(.*\)$", re.S)


def _class_has_own_doc(cls) -> bool:
    """A docstring written for ``cls`` (not inherited, not an auto-generated signature)."""
    doc = cls.__dict__.get("__doc__")
    if not isinstance(doc, str) or not doc.strip():
        return False
    auto = (hasattr(cls, "__dataclass_fields__") or hasattr(cls, "_fields"))
    return not (auto and _AUTO_CLASS_DOC.match(doc.strip()) and doc.startswith(cls.__name__ + "("))


def _is_checked_object(obj) -> bool:
    """Functions, classes and wrapped callables (``tf.function``, ``functools.wraps``)."""
    if inspect.ismodule(obj):
        return False
    return inspect.isclass(obj) or inspect.isroutine(obj) or hasattr(obj, "__wrapped__")


def _public_names(mod) -> list[str]:
    """Names of the module's public functions and classes."""
    if hasattr(mod, "__all__"):
        return list(mod.__all__)
    return [n for n, v in vars(mod).items()
            if not n.startswith("_") and getattr(v, "__module__", None) == mod.__name__]


def _class_members(cls):
    """``(name, object)`` of the public methods and properties defined in the class body."""
    for name, raw in vars(cls).items():
        if name.startswith("_"):
            continue
        if isinstance(raw, (staticmethod, classmethod)):
            yield name, getattr(cls, name)
        elif isinstance(raw, (property, functools.cached_property)) or inspect.isfunction(raw):
            yield name, raw if not inspect.isfunction(raw) else getattr(cls, name)


def _missing_extra(err: ImportError) -> str | None:
    """The optional extra whose absence raised ``err`` (``None``: not an extra)."""
    names = [getattr(err, "name", None) or ""]
    cause = err.__cause__ or err.__context__
    if isinstance(cause, ImportError):
        names.append(getattr(cause, "name", None) or "")
    for n in names:
        top = n.split(".")[0]
        if top in OPTIONAL_EXTRAS:
            return OPTIONAL_EXTRAS[top]
    return None


def scan(package: str = "astrogen") -> Coverage:
    """Import every module of ``package`` and check the docstrings of its public objects.

    Parameters
    ----------
    package : str
        Name of the package to scan.

    Returns
    -------
    Coverage
        Documented and missing objects (dotted names) and the modules skipped.

    Raises
    ------
    ImportError
        When a module fails to import for another reason than a missing optional extra.
    """
    cov = Coverage()
    seen: set[str] = set()

    def check(kind: str, name: str, ok: bool):
        if name in seen:
            return
        seen.add(name)
        (cov.documented if ok else cov.missing).append(name if ok else f"{kind}: {name}")

    root = importlib.import_module(package)
    names = [package] + [m.name for m in pkgutil.walk_packages(root.__path__, package + ".")]
    for modname in names:
        if modname.endswith(".__main__"):
            continue  # running it starts the command line
        try:
            mod = importlib.import_module(modname)
        except ImportError as err:
            extra = _missing_extra(err)
            if extra is None:
                raise
            cov.skipped.append(f"{modname} (needs the '{extra}' extra: {err})")
            continue
        check("module", modname, bool(inspect.getdoc(mod)))
        for name in _public_names(mod):
            obj = getattr(mod, name, None)
            if not _is_checked_object(obj):
                continue
            qual = f"{getattr(obj, '__module__', modname)}.{getattr(obj, '__qualname__', name)}"
            if inspect.isclass(obj):
                check("class", qual, _class_has_own_doc(obj))
                if getattr(obj, "__module__", None) != modname and hasattr(mod, "__all__"):
                    continue  # a re-export: its members are checked in its own module
                for mname, member in _class_members(obj):
                    kind = "property" if isinstance(member, (property, functools.cached_property)) \
                        else "method"
                    check(kind, f"{qual}.{mname}", bool(inspect.getdoc(member)))
            else:
                check("function", qual, bool(inspect.getdoc(obj)))
    return cov


@pytest.fixture(scope="module")
def coverage() -> Coverage:
    """One scan of the package, shared by the tests of this file."""
    return scan()


def test_every_public_object_has_a_docstring(coverage):
    assert coverage.total > 500, coverage.report()  # the scan reaches the whole package
    assert not coverage.missing, coverage.report()


def test_the_scan_catches_an_undocumented_object(tmp_path, monkeypatch):
    """A planted package with one documented and three undocumented objects is caught."""
    pkg = tmp_path / "plantedpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text('"""Planted."""\n')
    (pkg / "mod.py").write_text(
        '"""A module."""\n'
        "from dataclasses import dataclass\n\n"
        "def documented():\n    '''Yes.'''\n\n"
        "def bare():\n    pass\n\n"
        "@dataclass\nclass Rec:\n    x: int = 0\n\n"
        "class Base:\n    '''Base.'''\n    def run(self):\n        '''Run it.'''\n\n"
        "class Child(Base):\n    '''Child.'''\n    def run(self):\n        pass\n"
        "    @property\n    def size(self):\n        return 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    cov = scan("plantedpkg")
    assert sorted(cov.missing) == ["class: plantedpkg.mod.Rec", "function: plantedpkg.mod.bare",
                                   "property: plantedpkg.mod.Child.size"], cov.report()
    # Child.run inherits Base.run's docstring (inspect.getdoc)
    assert "plantedpkg.mod.Child.run" in cov.documented
    assert cov.total == 10 and cov.fraction == pytest.approx(7 / 10)
