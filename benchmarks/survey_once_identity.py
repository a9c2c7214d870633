"""Outputs unchanged when ``parametric_mock`` names its survey once (issue 16, item 4).

``observe`` and ``scene`` now inherit the survey of the bound scene field when ``survey`` is
omitted, and ``pipelines/parametric_mock.yaml`` names ``lsst_i`` once (``catalog.positions``).
This runs that pipeline (``stages.catalog.n_objects=200``, 2 shared cores) with the astrogen
of a given source tree and compares the SHA-256 of every FITS HDU's data (not headers).

    git archive <commit-before> | tar -x -C /tmp/before
    python benchmarks/survey_once_identity.py run --src /tmp/before --out /tmp/so/before
    python benchmarks/survey_once_identity.py run --src . --out /tmp/so/after
    python benchmarks/survey_once_identity.py compare /tmp/so/before /tmp/so/after

Result: ``benchmarks/results/survey_once/compare.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from geometry_identity import _data_hash  # noqa: E402  (same HDU hash as the previous check)

RESULTS = Path(__file__).resolve().parent / "results" / "survey_once"
OVERRIDES = ["stages.catalog.n_objects=200"]


def run(src: Path, out: Path) -> int:
    """``astrogen run pipelines/parametric_mock.yaml`` with the package in ``src``."""
    env = {**os.environ, "PYTHONPATH": str(src), "TF_CPP_MIN_LOG_LEVEL": "3",
           "OMP_NUM_THREADS": "1", "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1"}
    out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "astrogen", "run", "--no-progress",
           "pipelines/parametric_mock.yaml", f"output={out}", *OVERRIDES]
    with open(out.parent / f"{out.name}.log", "w") as log:
        return subprocess.run(cmd, cwd=src, env=env, stdout=log,
                              stderr=subprocess.STDOUT).returncode


def _sums(root: Path) -> dict:
    from astropy.io import fits

    res = {}
    for p in sorted(root.rglob("*.fits")):
        if ".astrogen-work" in p.parts:
            continue
        with fits.open(p) as hl:
            res[p.relative_to(root).as_posix()] = [
                {"hdu": i, "sha256": _data_hash(h), "PIXSCALE": h.header.get("CDELT2"),
                 "SURVEY": h.header.get("SURVEY")} for i, h in enumerate(hl)]
    return res


def compare(a: Path, b: Path) -> dict:
    """HDU data identical file by file (and the scene's survey / pixel scale header)."""
    A, B = _sums(a), _sums(b)
    out = {"overrides": OVERRIDES, "files_before": len(A), "files_after": len(B),
           "missing": sorted(set(A) ^ set(B)), "hdus": 0, "data_identical": 0,
           "data_differs": [], "headers_after": {}}
    for f in sorted(set(A) & set(B)):
        for x, y in zip(A[f], B[f]):
            out["hdus"] += 1
            if x["sha256"] == y["sha256"]:
                out["data_identical"] += 1
            else:
                out["data_differs"].append(f"{f}[{x['hdu']}]")
            if y["SURVEY"] is not None:
                out["headers_after"][f"{f}[{y['hdu']}]"] = {"SURVEY": y["SURVEY"],
                                                            "CDELT2": y["PIXSCALE"]}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "compare.json").write_text(json.dumps(out, indent=1))
    print(json.dumps({k: out[k] for k in ("files_before", "files_after", "missing", "hdus",
                                          "data_identical", "data_differs")}))
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--src", type=Path, required=True)
    r.add_argument("--out", type=Path, required=True)
    c = sub.add_parser("compare")
    c.add_argument("a", type=Path)
    c.add_argument("b", type=Path)
    args = ap.parse_args()
    if args.cmd == "run":
        sys.exit(run(args.src.resolve(), args.out.resolve()))
    compare(args.a, args.b)
