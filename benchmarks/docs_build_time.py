"""Wall time of the docs build (issue 19: "docs build time").

Runs the build of ``make docs`` (``python -m sphinx -W --keep-going -b html docs <out>``,
which also executes the tutorials of ``docs/tutorials/``) into a fresh temporary folder,
and, in the same run as its peer, ``python -c "import astrogen.stages, astrogen.models"``
(the package import the build needs before any page is written). Writes the two wall
times, their ratio, the tutorial run times, the machine's CPU count and load average and
the command to ``benchmarks/results/docs/build_time.txt``.

Usage::

    python benchmarks/docs_build_time.py
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "docs" / "build_time.txt"
COMMAND = "python benchmarks/docs_build_time.py"


def _timed(cmd: list[str]) -> tuple[float, str]:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return seconds, proc.stdout


def main() -> None:
    """Time the docs build and its import peer; write the report."""
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        build, _ = _timed([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b",
                           "html", "docs", str(Path(tmp) / "html")])
    peer, _ = _timed([sys.executable, "-c", "import astrogen.stages, astrogen.models"])
    tutorials = {}
    for page in sorted((ROOT / "docs" / "_generated" / "tutorials").glob("*.rst")):
        m = re.search(r"run during the docs build, ([0-9.]+) s", page.read_text())
        if m:
            tutorials[page.stem] = float(m.group(1))
    lines = [f"command: {COMMAND}",
             f"machine: {os.cpu_count()} CPUs, load average before {load_before[0]:.2f} "
             f"(1 min), after {os.getloadavg()[0]:.2f}",
             f"docs build (sphinx -W, html, tutorials executed): {build:.1f} s",
             f"peer, same run: python -c 'import astrogen.stages, astrogen.models': {peer:.1f} s",
             f"ratio build / import peer: {build / peer:.1f}",
             f"tutorials (each its own process, inside the build): "
             + ", ".join(f"{k} {v:.1f} s" for k, v in tutorials.items()),
             f"tutorials total: {sum(tutorials.values()):.1f} s"]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
