"""Wall time of the docs build (issue 19: "docs build time").

Runs the build of ``make docs`` (``python -m sphinx -W --keep-going -b html docs <out>``,
which also executes the tutorials of ``docs/tutorials/``) into a fresh temporary folder,
and, in the same run as its peer, ``python -c "import astrogen.stages, astrogen.models"``
(the package import the build needs before any page is written). Writes the two wall
times, their ratio, the CPU time (user + system) of each process tree, the tutorial run
times (the build runs them ``ASTROGEN_DOCS_JOBS`` at a time, default the CPU count, while
it reads the other pages, so their wall times overlap), the machine's CPU count and load
average and the command to ``benchmarks/results/docs/build_time.txt``.

Usage::

    python benchmarks/docs_build_time.py
"""
from __future__ import annotations

import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "docs" / "build_time.txt"
COMMAND = "python benchmarks/docs_build_time.py"


def _cpu_children() -> float:
    """CPU seconds (user + system) of the finished child processes of this process."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _timed(cmd: list[str]) -> tuple[float, float]:
    """Wall and CPU seconds of a command (its whole process tree: every child is waited)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    cpu0 = _cpu_children()
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return seconds, _cpu_children() - cpu0


def main() -> None:
    """Time the docs build and its import peer; write the report."""
    load_before = os.getloadavg()
    env_jobs = os.environ.get("ASTROGEN_DOCS_JOBS", "")
    jobs = int(env_jobs) if env_jobs.isdigit() else os.cpu_count()
    with tempfile.TemporaryDirectory() as tmp:
        build, build_cpu = _timed([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b",
                           "html", "docs", str(Path(tmp) / "html")])
    peer, peer_cpu = _timed([sys.executable, "-c", "import astrogen.stages, astrogen.models"])
    tutorials, tutorials_cpu = {}, {}
    for page in sorted((ROOT / "docs" / "_generated" / "tutorials").glob("*.rst")):
        m = re.search(r"run during the docs build, ([0-9.]+) s(?:, ([0-9.]+) s CPU)?",
                      page.read_text())
        if m:
            tutorials[page.stem] = float(m.group(1))
            if m.group(2):
                tutorials_cpu[page.stem] = float(m.group(2))
    lines = [f"command: {COMMAND}",
             f"machine: {os.cpu_count()} CPUs, load average before {load_before[0]:.2f} "
             f"(1 min), after {os.getloadavg()[0]:.2f}",
             f"docs build (sphinx -W, html, tutorials executed): {build:.1f} s wall, "
             f"{build_cpu:.1f} s CPU",
             f"peer, same run: python -c 'import astrogen.stages, astrogen.models': "
             f"{peer:.1f} s wall, {peer_cpu:.1f} s CPU",
             f"ratio build / import peer: {build / peer:.1f} (wall), "
             f"{build_cpu / peer_cpu:.1f} (CPU)",
             f"tutorials run {jobs} at a time (ASTROGEN_DOCS_JOBS, default the CPU count), "
             f"overlapping the reading of the other pages; wall time of each: "
             + ", ".join(f"{k} {v:.1f} s" for k, v in tutorials.items()),
             f"tutorials, sum of their wall times: {sum(tutorials.values()):.1f} s",
             f"CPU time of each tutorial (its process tree): "
             + ", ".join(f"{k} {v:.1f} s" for k, v in tutorials_cpu.items()),
             f"tutorials, CPU total: {sum(tutorials_cpu.values()):.1f} s of the build's "
             f"{build_cpu:.1f} s"]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
