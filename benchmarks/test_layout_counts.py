"""Collected tests before and after the test-layout move (issue 16 item 5): none lost.

Exports the ``tests/`` and ``astrogen/`` trees of two commits with ``git archive`` (no
checkout), runs ``python -m pytest --collect-only -q`` in each, maps the old test files to
their new paths with git's rename detection, and writes the counts and the test ids that are
missing or new to ``benchmarks/results/test_layout/collect_counts.json``.

    python benchmarks/test_layout_counts.py [--before 7512885] [--after HEAD]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "test_layout" / "collect_counts.json"


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, check=True, capture_output=True,
                          text=True).stdout


def collected(ref: str) -> list[str]:
    """Test ids ``pytest --collect-only`` gives on ``ref``'s tests and package."""
    with tempfile.TemporaryDirectory() as tmp:
        archive = subprocess.run(["git", "archive", ref, "tests", "astrogen", "pyproject.toml",
                                  "configs", "pipelines", "benchmarks"],
                                 cwd=ROOT, check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        env = dict(os.environ, PYTHONPATH=tmp, TF_CPP_MIN_LOG_LEVEL="2")
        out = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q",
                              "-p", "no:cacheprovider"], cwd=tmp, env=env,
                             capture_output=True, text=True)
        return [line for line in out.stdout.splitlines() if "::" in line]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", default="7512885")
    ap.add_argument("--after", default="HEAD")
    args = ap.parse_args()
    renames = {}
    for line in _git("diff", "-M", "--name-status", args.before, args.after, "--",
                     "tests").splitlines():
        parts = line.split("\t")
        if parts[0].startswith("R"):
            renames[parts[1]] = parts[2]
    before, after = collected(args.before), collected(args.after)

    def moved(tid: str) -> str:
        path, rest = tid.split("::", 1)
        return renames.get(path, path) + "::" + rest

    old = {moved(t) for t in before}
    new = set(after)
    result = {"before": args.before, "after": _git("rev-parse", "--short", args.after).strip(),
              "collected_before": len(before), "collected_after": len(after),
              "renamed_test_files": len(renames),
              "missing_after_move": sorted(old - new), "new_tests": sorted(new - old)}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: (len(v) if isinstance(v, list) else v) for k, v in result.items()}))


if __name__ == "__main__":
    main()
