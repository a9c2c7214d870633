"""Sphinx extension of the astrogen docs: generated stage pages and executed tutorials.

At ``builder-inited`` it writes, under ``docs/_generated/`` (not committed):

* ``stages/<type>.rst``, one page per registered stage type, from the stage registry
  (:meth:`astrogen.stages.base.Stage.parameters`,
  :meth:`~astrogen.stages.base.Stage.parameter_docs`,
  ``units``, ``input_types``, ``output_type``), and ``stages/index.rst`` listing them;
* ``tutorials/<name>.rst`` for each ``docs/tutorials/<name>.py``: the script is run in its
  own folder ``_generated/tutorials/<name>/`` (a failing script fails the build), and the
  page shows its docstring, its code, what it printed and every PNG it wrote.
"""
from __future__ import annotations

import inspect
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1]
GEN = DOCS / "_generated"
#: table cell of an absent unit, type or description (an escaped hyphen: a bare "-" would
#: start an empty bullet list)
NONE = "\\-"


def _type_names(spec) -> str:
    types = spec if isinstance(spec, tuple) else (spec,)
    return " | ".join(f":class:`~{t.__module__}.{t.__qualname__}`" for t in types)


def _rst_text(text: str) -> str:
    return " ".join(text.split()) if text else ""


def stage_page(name: str, cls) -> str:
    """The reStructuredText page of one stage type."""
    title = f"``{name}``"
    lines = [title, "=" * len(title), ""]
    summary = cls.summary()
    if summary:
        lines += [_rst_text(summary), ""]
    ins = ", ".join(_type_names(a) for a in cls.input_types) or "none (a source)"
    out = _type_names(cls.output_type) if cls.output_type else "files (a sink)"
    lines += [f"* kind: ``{cls.kind}``", f"* inputs: {ins}", f"* output: {out}",
              f"* class: :class:`{cls.__module__}.{cls.__qualname__}`", "",
              "Parameters", "----------", ""]
    if not cls.parameters():
        lines += ["None."]
    else:
        lines += _parameter_table(cls)
    doc = inspect.getdoc(cls) or ""
    body = doc.split("\nParameters\n", 1)[0].splitlines()[1:]
    rest = "\n".join(body).strip()
    if rest:
        lines += ["", "Description", "-----------", "", rest]
    return "\n".join(lines) + "\n"


def _parameter_table(cls) -> list[str]:
    """The rows of the parameter table of a stage type."""
    lines = [".. list-table::", "   :header-rows: 1", "   :widths: 15 15 15 15 40", "",
              "   * - key", "     - default", "     - unit", "     - type / allowed values",
              "     - description"]
    docs = cls.parameter_docs()
    for key, prm in cls.parameters().items():
        default = ("required" if prm.default is inspect.Parameter.empty
                   else f"``{prm.default!r}``")
        kind, text = docs.get(key, ("", ""))
        unit = cls.units.get(key, "") if isinstance(cls.units, dict) else ""
        lines += [f"   * - ``{key}``", f"     - {default}",
                  f"     - {_rst_text(unit) or NONE}",
                  f"     - {('``' + _rst_text(kind) + '``') if kind else NONE}",
                  f"     - {_rst_text(text) or NONE}"]
    return lines


def write_stage_pages() -> list[str]:
    """Write one page per registered stage type; return the type names."""
    import astrogen.stages  # noqa: F401 - registers the built-in stage types
    from astrogen.registry import STAGES

    folder = GEN / "stages"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    names = sorted(dict(STAGES.items()))
    for name in names:
        (folder / f"{name}.rst").write_text(stage_page(name, STAGES.get(name)))
    index = ["Stage reference", "===============", "",
             "One page per registered stage type, generated from the stage registry when the "
             "docs are built (what ``astrogen stages TYPE`` prints). The keys of a stage are "
             "the keyword arguments of its constructor.", "",
             ".. toctree::", "   :maxdepth: 1", ""] + [f"   {n}" for n in names]
    (folder / "index.rst").write_text("\n".join(index) + "\n")
    return names


def run_tutorial(script: Path) -> str:
    """Run one tutorial script in its own folder and return its page."""
    name = script.stem
    work = GEN / "tutorials" / name
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    env = dict(os.environ, MPLBACKEND="Agg", TF_CPP_MIN_LOG_LEVEL="2")
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, str(script)], cwd=work, env=env,
                          capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    (work / "stdout.txt").write_text(proc.stdout)
    if proc.returncode:
        raise RuntimeError(f"tutorial {script.name} failed (exit {proc.returncode}):\n"
                           f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    doc = (inspect.cleandoc(_module_docstring(script)) or name).splitlines()
    lines = doc + ["", f".. literalinclude:: ../../tutorials/{script.name}",
                   "   :language: python", "   :lines: " + _code_start(script), "",
                   f"Output (run during the docs build, {seconds:.1f} s):", "",
                   f".. literalinclude:: {name}/stdout.txt", "   :language: text", ""]
    for png in sorted(work.glob("*.png")):
        lines += [f".. image:: {name}/{png.name}", f"   :alt: {png.stem}", ""]
    return "\n".join(lines) + "\n"


def _module_docstring(script: Path) -> str:
    import ast

    return ast.get_docstring(ast.parse(script.read_text())) or ""


def _code_start(script: Path) -> str:
    import ast

    tree = ast.parse(script.read_text())
    first = tree.body[1] if tree.body and isinstance(tree.body[0], ast.Expr) else tree.body[0]
    return f"{first.lineno}-"


def write_tutorials() -> list[str]:
    """Run every ``docs/tutorials/*.py`` and write its page; return the names."""
    folder = GEN / "tutorials"
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for script in sorted((DOCS / "tutorials").glob("*.py")):
        (folder / f"{script.stem}.rst").write_text(run_tutorial(script))
        names.append(script.stem)
    index = ["Tutorials", "=========", "",
             "Each tutorial is a script in ``docs/tutorials/``, executed when the docs are "
             "built; its printed output and figures below come from that run.", "",
             ".. toctree::", "   :maxdepth: 1", ""] + [f"   {n}" for n in names]
    (folder / "index.rst").write_text("\n".join(index) + "\n")
    return names


def _generate(app) -> None:
    write_stage_pages()
    write_tutorials()


def setup(app):
    """Register the generators with Sphinx."""
    app.connect("builder-inited", _generate)
    return {"version": "1", "parallel_read_safe": True}
