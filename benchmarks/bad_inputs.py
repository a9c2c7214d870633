"""Issue 14 figures: the bad-input corpus and the hostile-YAML refusals.

Measures, in one run:

* the bad-input corpus (``tests/integration/test_bad_inputs.py``): number of cases per family,
  how many pass (exit status, one line, no traceback, key/column named, nothing left on
  disk) and its wall time;
* the 8-level x 10-alias "billion laughs" YAML of the issue (about 500 bytes): the time
  ``load_config`` takes to refuse it, next to ``yaml.safe_load`` reading the same file
  (the peer: it shares the aliased lists instead of expanding them), and the same for a
  recursive alias ``&s [*s]``.

Results: ``benchmarks/results/bad_inputs/results.json``.

    python benchmarks/bad_inputs.py              # about 2 minutes on 2 shared cores
    python benchmarks/bad_inputs.py --no-corpus  # the YAML timings only (seconds)
"""
from __future__ import annotations

import argparse
import collections
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from astrogen.errors import ConfigError  # noqa: E402
from astrogen.pipeline.config import load_config  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "bad_inputs"


def bomb_text(levels: int = 8, width: int = 10) -> str:
    names = "abcdefghijklmnop"[:levels]
    lines = [f"{names[0]}: &{names[0]} [" + ",".join(['"lol"'] * width) + "]"]
    for prev, cur in zip(names, names[1:]):
        lines.append(f"{cur}: &{cur} [" + ",".join([f"*{prev}"] * width) + "]")
    return "\n".join(lines) + "\n"


def time_refusal(path: Path, repeats: int = 5) -> tuple[float, str]:
    best, message = float("inf"), ""
    for _ in range(repeats):
        t0 = time.perf_counter()
        try:
            load_config(path)
            message = "ACCEPTED"
        except ConfigError as exc:
            message = str(exc)
        best = min(best, time.perf_counter() - t0)
    return best, message


def time_safe_load(path: Path, repeats: int = 5) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        yaml.safe_load(path.read_text())
        best = min(best, time.perf_counter() - t0)
    return best


def yaml_figures() -> dict:
    out = {}
    with tempfile.TemporaryDirectory() as d:
        for name, text in (("alias_bomb_8x10", bomb_text()),
                           ("recursive_alias", "a: &s [*s]\nname: x\n")):
            path = Path(d) / f"{name}.yaml"
            path.write_text(text)
            ours, message = time_refusal(path)
            peer = time_safe_load(path)
            out[name] = {"bytes": len(text.encode()), "load_config_refusal_s": ours,
                         "yaml_safe_load_s": peer, "ratio_load_config_to_safe_load": ours / peer,
                         "message": message}
    return out


def corpus_figures() -> dict:
    test = ROOT / "tests" / "integration" / "test_bad_inputs.py"
    sys.path.insert(0, str(test.parent))
    import test_bad_inputs  # noqa: E402  (the case list itself)

    families = collections.Counter(cid.split("_")[0] for cid, _ in test_bad_inputs.CASES)
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        str(test)], capture_output=True, text=True, cwd=ROOT,
                       env={**__import__("os").environ, "PYTHONPATH": str(ROOT),
                            "TF_CPP_MIN_LOG_LEVEL": "2"})
    wall = time.perf_counter() - t0
    tail = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else r.stderr[-500:]
    passed = int(m.group(1)) if (m := re.search(r"(\d+) passed", tail)) else 0
    failed = int(m.group(1)) if (m := re.search(r"(\d+) failed", tail)) else 0
    return {"cases": len(test_bad_inputs.CASES), "families": dict(sorted(families.items())),
            "pytest_passed": passed, "pytest_failed": failed,
            "pytest_items_note": "cases + 1 test of the corpus size", "wall_s": wall,
            "pytest_summary": tail}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-corpus", action="store_true", help="skip running the corpus")
    args = ap.parse_args(argv)
    results = {"yaml": yaml_figures()}
    if not args.no_corpus:
        results["corpus"] = corpus_figures()
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / "results.json"
    old = json.loads(path.read_text()) if path.is_file() else {}
    old.update(results)
    path.write_text(json.dumps(old, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
