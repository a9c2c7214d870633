"""Sphinx extension of the astrogen docs: generated stage pages, executed tutorials and the
benchmarks page.

At ``builder-inited`` it writes, under ``docs/_generated/`` (not committed):

* ``stages/<type>.rst``, one page per registered stage type, from the stage registry
  (:meth:`astrogen.stages.base.Stage.parameters`,
  :meth:`~astrogen.stages.base.Stage.parameter_docs`,
  ``units``, ``input_types``, ``output_type``), and ``stages/index.rst`` listing them;
* ``tutorials/<name>.rst`` for each ``docs/tutorials/<name>.py``: the script is run in its
  own folder ``_generated/tutorials/<name>/`` (a failing script fails the build), and the
  page shows its docstring, its code, what it printed and every PNG it wrote. The scripts
  run in the background, ``ASTROGEN_DOCS_JOBS`` (default: the number of CPUs) at a time,
  while Sphinx writes and reads the other pages; a tutorial's page is filled in when Sphinx
  reads it (``source-read``), waiting for its run;
* ``benchmarks.md``: for each folder of ``benchmarks/results/``, the scripts writing it
  with their commands, its files, the Markdown and text tables the scripts wrote there
  (read at build time) and the guide pages (``docs/guide/*.md``) discussing it.
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


def start_tutorial(script: Path) -> subprocess.Popen:
    """Start one tutorial script in its own, emptied folder; return the process."""
    work = GEN / "tutorials" / script.stem
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    env = dict(os.environ, MPLBACKEND="Agg", TF_CPP_MIN_LOG_LEVEL="2")
    # output to files, not pipes: a script is never blocked by a full pipe nobody reads
    with open(work / "stdout.txt", "w") as out, open(work / "stderr.txt", "w") as err:
        return subprocess.Popen([sys.executable, str(script)], cwd=work, env=env,
                                stdout=out, stderr=err)


def tutorial_page(script: Path, proc: subprocess.Popen, seconds: float,
                  cpu: float | None = None) -> str:
    """Wait for a tutorial's process, keep what it printed, and return its page
    (``seconds``: its wall time; ``cpu``: CPU seconds of its process tree, if known)."""
    name = script.stem
    work = GEN / "tutorials" / name
    proc.wait()
    stdout = (work / "stdout.txt").read_text()
    stderr = (work / "stderr.txt").read_text()
    if proc.returncode:
        raise RuntimeError(f"tutorial {script.name} failed (exit {proc.returncode}):\n"
                           f"{stdout[-3000:]}\n{stderr[-3000:]}")
    doc = (inspect.cleandoc(_module_docstring(script)) or name).splitlines()
    lines = doc + ["", f".. literalinclude:: ../../tutorials/{script.name}",
                   "   :language: python", "   :lines: " + _code_start(script), "",
                   f"Output (run during the docs build, {seconds:.1f} s"
                   + (f", {cpu:.1f} s CPU" if cpu is not None else "") + "):", "",
                   f".. literalinclude:: {name}/stdout.txt", "   :language: text", ""]
    for png in sorted(work.glob("*.png")):
        lines += [f".. image:: {name}/{png.name}", f"   :alt: {png.stem}", ""]
    return "\n".join(lines) + "\n"


def run_tutorial(script: Path) -> str:
    """Run one tutorial script in its own folder and return its page."""
    t0 = time.perf_counter()
    proc = start_tutorial(script)
    proc.wait()
    return tutorial_page(script, proc, time.perf_counter() - t0)


class TutorialRunner:
    """Runs the tutorials in the background, ``jobs`` at a time, while Sphinx reads the
    other pages; :meth:`page` waits for one tutorial and returns its page.

    ``jobs``: the environment variable ``ASTROGEN_DOCS_JOBS``, else the number of CPUs.
    """

    def __init__(self, scripts: list[Path], jobs: int | None = None):
        import threading

        self.scripts = {s.stem: s for s in scripts}
        env_jobs = os.environ.get("ASTROGEN_DOCS_JOBS", "")
        self.jobs = max(1, jobs or (int(env_jobs) if env_jobs.isdigit() else 0)
                        or (os.cpu_count() or 1))
        self.done: dict[str, tuple[subprocess.Popen, float, float]] = {}
        self.pages: dict[str, str] = {}
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        pending = list(self.scripts.values())
        running: dict[str, tuple[subprocess.Popen, float]] = {}
        while pending or running:
            while pending and len(running) < self.jobs:
                script = pending.pop(0)
                running[script.stem] = (start_tutorial(script), time.perf_counter())
            for name, (proc, t0) in list(running.items()):
                # wait4: the exit status and the CPU time of the script and its children
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid == 0:
                    continue
                proc.returncode = os.waitstatus_to_exitcode(status)
                with self._cond:
                    self.done[name] = (proc, time.perf_counter() - t0,
                                       usage.ru_utime + usage.ru_stime)
                    self._cond.notify_all()
                del running[name]
            time.sleep(0.05)

    def page(self, name: str) -> str:
        """The page of tutorial ``name`` (waits for its run; raises if it failed)."""
        if name not in self.pages:
            with self._cond:
                self._cond.wait_for(lambda: name in self.done)
            proc, seconds, cpu = self.done[name]
            self.pages[name] = tutorial_page(self.scripts[name], proc, seconds, cpu)
        return self.pages[name]

    def finish(self) -> None:
        """Wait for every tutorial (so none outlives the build) and check they passed."""
        for name in self.scripts:
            self.page(name)


def _module_docstring(script: Path) -> str:
    import ast

    return ast.get_docstring(ast.parse(script.read_text())) or ""


def _code_start(script: Path) -> str:
    import ast

    tree = ast.parse(script.read_text())
    first = tree.body[1] if tree.body and isinstance(tree.body[0], ast.Expr) else tree.body[0]
    return f"{first.lineno}-"


#: the tutorials running in the background during a build (see :func:`start_tutorials`)
RUNNER: TutorialRunner | None = None


def tutorial_scripts() -> list[Path]:
    """The tutorial scripts, ``docs/tutorials/*.py``, sorted by name."""
    return sorted((DOCS / "tutorials").glob("*.py"))


def write_tutorials_index(names: list[str]) -> None:
    """Write ``tutorials/index.rst`` and a placeholder page per tutorial (replaced by the
    page of its run when Sphinx reads it, :func:`_fill_tutorial`)."""
    folder = GEN / "tutorials"
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / f"{name}.rst").write_text(f"{name}\n{'=' * len(name)}\n\n(running)\n")
    index = ["Tutorials", "=========", "",
             "Each tutorial is a script in ``docs/tutorials/``, executed when the docs are "
             "built; its printed output and figures below come from that run.", "",
             ".. toctree::", "   :maxdepth: 1", ""] + [f"   {n}" for n in names]
    (folder / "index.rst").write_text("\n".join(index) + "\n")


def write_tutorials() -> list[str]:
    """Run every ``docs/tutorials/*.py`` and write its page; return the names (one after
    the other; the build itself runs them in the background, :class:`TutorialRunner`)."""
    scripts = tutorial_scripts()
    names = [s.stem for s in scripts]
    write_tutorials_index(names)
    for script in scripts:
        (GEN / "tutorials" / f"{script.stem}.rst").write_text(run_tutorial(script))
    return names


def start_tutorials() -> TutorialRunner:
    """Write the tutorial index and start running the tutorials in the background."""
    scripts = tutorial_scripts()
    write_tutorials_index([s.stem for s in scripts])
    return TutorialRunner(scripts)


def _fill_tutorial(app, docname: str, source: list[str]) -> None:
    """``source-read``: a tutorial page gets the page of its run (waiting for it)."""
    prefix = "_generated/tutorials/"
    if RUNNER is not None and docname.startswith(prefix) and docname != prefix + "index":
        name = docname[len(prefix):]
        if name in RUNNER.scripts:
            page = RUNNER.page(name)
            source[0] = page
            (GEN / "tutorials" / f"{name}.rst").write_text(page)


def _finish_tutorials(app, exception) -> None:
    """``build-finished``: every tutorial has ended (and passed, if the build did)."""
    if RUNNER is not None and exception is None:
        RUNNER.finish()


# ---------------------------------------------------------------------------- benchmarks
BENCH = DOCS.parent / "benchmarks"
#: a results folder named in the text of a guide page
_TOPIC_RE = r"benchmarks/results/([A-Za-z0-9_]+)"


def _script_topics(script: Path) -> set[str]:
    """The results folders a benchmark script writes (``results/<topic>`` in its text)."""
    import re

    text = script.read_text()
    found = set(re.findall(r"results[\"']?\s*/\s*[\"']?([A-Za-z0-9_]+)", text))
    return {t for t in found if (BENCH / "results" / t).is_dir()}


def _script_commands(script: Path) -> list[str]:
    """The example command lines of a benchmark script's docstring (``python benchmarks/...``)."""
    import ast
    import re

    if script.suffix == ".py":
        doc = ast.get_docstring(ast.parse(script.read_text())) or ""
    else:
        doc = script.read_text()
    cmds = []
    lines = doc.splitlines()
    for i, line in enumerate(lines):
        m = re.search(r"((?:python|bash) benchmarks/\S+.*?)(?:\s{2,}#.*)?$", line.strip())
        if not m:
            continue
        cmd = m.group(1).rstrip("`").strip()
        while cmd.endswith("\\") and i + 1 < len(lines):  # continued on the next line
            i += 1
            cmd = cmd[:-1].rstrip() + " " + lines[i].strip().rstrip("`")
        cmd = " ".join(cmd.split())
        if cmd not in cmds:
            cmds.append(cmd)
    return cmds or [f"python benchmarks/{script.name}" if script.suffix == ".py"
                    else f"bash benchmarks/{script.name}"]


def _markdown_as_text(md: str) -> list[str]:
    """A results Markdown file as lines of this page: headings become bold lines."""
    out = []
    fence = False
    for line in md.splitlines():
        if line.startswith("```"):
            fence = not fence
        if not fence and line.startswith("#"):
            line = "**" + line.lstrip("#").strip() + "**"
        out.append(line)
    return out


def write_benchmarks_page() -> list[str]:
    """Write ``benchmarks.md``: per results folder, the scripts and commands that write it,
    its files, the tables the scripts wrote (``*.md``, ``*.txt``, read at build time) and
    the guide pages that discuss it. Returns the topics."""
    import re

    results = BENCH / "results"
    scripts = sorted(list(BENCH.glob("*.py")) + list(BENCH.glob("*.sh")))
    by_topic: dict[str, list[Path]] = {}
    for script in scripts:
        for topic in _script_topics(script):
            by_topic.setdefault(topic, []).append(script)
    guides: dict[str, list[str]] = {}
    pages = sorted((DOCS / "guide").glob("*.md")) + sorted(DOCS.glob("*.md"))
    for page in pages:
        doc = page.relative_to(DOCS).with_suffix("").as_posix()
        for topic in sorted(set(re.findall(_TOPIC_RE, page.read_text()))):
            guides.setdefault(topic, []).append(doc)
    topics = sorted(p.name for p in results.iterdir() if p.is_dir())
    lines = ["# Benchmarks", "",
             "Every figure of these pages and of the README comes from a committed script in "
             "`benchmarks/` that writes its results to `benchmarks/results/<topic>/`. This page "
             "is generated when the docs are built: for each results folder, the command(s) "
             "that reproduce it (from the script's docstring), its files, and the tables the "
             "scripts wrote there, read from the files at build time (never retyped). The "
             "discussion of each benchmark (what was measured, against which peer, the "
             "targets met and missed) is on the guide page linked from its section.", ""]
    orphans = [s.name for s in scripts if not any(s in v for v in by_topic.values())]
    for topic in topics:
        folder = results / topic
        lines += [f"## `{topic}`", ""]
        for script in by_topic.get(topic, []):
            lines += [f"`benchmarks/{script.name}`:", "", "```bash"]
            lines += _script_commands(script) + ["```", ""]
        if not by_topic.get(topic):
            lines += ["Written by: see the guide page below (no script names this folder).", ""]
        if guides.get(topic):
            lines += ["Discussed in: " + ", ".join(f"{{doc}}`/{g}`" for g in guides[topic]),
                      ""]
        files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                       if p.is_file())
        shown = ", ".join(f"`{f}`" for f in files[:40])
        more = f" and {len(files) - 40} more" if len(files) > 40 else ""
        lines += [f"Files in `benchmarks/results/{topic}/`: {shown}{more}.", ""]
        for rel in files:
            path = folder / rel
            if path.suffix == ".md" and path.stat().st_size < 60_000:
                lines += [f"**`{rel}`** (as written by the script):", ""]
                lines += _markdown_as_text(path.read_text()) + [""]
            elif path.suffix == ".txt" and path.stat().st_size < 20_000:
                lines += [f"**`{rel}`**:", "", "```text"] + path.read_text().splitlines() + [
                    "```", ""]
    if orphans:
        lines += ["## Scripts without a results folder of their own", ""] + [
            f"* `benchmarks/{n}`: `{_script_commands(BENCH / n)[0]}`" for n in orphans] + [""]
    (GEN / "benchmarks.md").write_text("\n".join(lines) + "\n")
    return topics


def _generate(app) -> None:
    global RUNNER
    RUNNER = start_tutorials()  # in the background while the other pages are written and read
    write_stage_pages()
    write_benchmarks_page()


def setup(app):
    """Register the generators with Sphinx."""
    app.connect("builder-inited", _generate)
    app.connect("source-read", _fill_tutorial)
    app.connect("build-finished", _finish_tutorials)
    return {"version": "1", "parallel_read_safe": True}
