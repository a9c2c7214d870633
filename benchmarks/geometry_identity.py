"""Outputs unchanged by the geometry-and-calibration refactor (issue 16, item 4).

Runs the shipped pipelines that place, lens, render and observe galaxies (small overrides so
they finish in minutes on 2 shared cores) with the astrogen of a given source tree, then
records the SHA-256 of every FITS HDU's data (not its header) and the header keys, so two
trees can be compared: the data must be bit-identical; headers may gain keys.

    # a tree with the code before the change, and this one
    git -C . archive <commit-before> | tar -x -C /tmp/before
    python benchmarks/geometry_identity.py run --src /tmp/before --out /tmp/runs/before
    python benchmarks/geometry_identity.py run --src . --out /tmp/runs/after
    python benchmarks/geometry_identity.py sums /tmp/runs/before before
    python benchmarks/geometry_identity.py sums /tmp/runs/after after
    python benchmarks/geometry_identity.py compare before after

Results: ``benchmarks/results/geometry/<label>.json`` and ``compare_<a>_<b>.json``.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results" / "geometry"

#: pipeline -> overrides (small enough for 2 shared cores; same for both trees)
PIPELINES = {
    "parametric_mock": ["stages.catalog.n_objects=500"],
    "catsim_mock": [],
    "three_surveys": ["stages.catalog.n_objects=150", "stages.catalog.chunk_size=50"],
    "lsst_euclid_lensing": ["stages.galaxies.n_objects=60", "stages.galaxies.chunk_size=20"],
    "flowvae_mock": ["stages.catalog.n_objects=60", "stages.catalog.chunk_size=20"],
    "ddpm_mock": ["stages.catalog.n_objects=8", "stages.catalog.chunk_size=4",
                  "stages.generate.num_steps=3"],
}


def run(src: Path, out: Path) -> None:
    """``astrogen run`` every pipeline of :data:`PIPELINES` with the package in ``src``."""
    env = {**os.environ, "PYTHONPATH": str(src), "TF_CPP_MIN_LOG_LEVEL": "3",
           "OMP_NUM_THREADS": "1", "TF_NUM_INTRAOP_THREADS": "1",
           "TF_NUM_INTEROP_THREADS": "1"}
    out.mkdir(parents=True, exist_ok=True)
    for name, over in PIPELINES.items():
        t0 = time.perf_counter()
        cmd = [sys.executable, "-m", "astrogen", "run", "--no-progress",
               f"pipelines/{name}.yaml", f"output={out / name}", *over]
        with open(out / f"{name}.log", "w") as log:
            rc = subprocess.run(cmd, cwd=src, env=env, stdout=log,
                                stderr=subprocess.STDOUT).returncode
        print(f"{name}: rc={rc} {time.perf_counter() - t0:.1f} s", flush=True)


def _data_hash(hdu) -> str:
    d = hdu.data
    if d is None:
        return "none"
    h = hashlib.sha256()
    if getattr(d, "dtype", None) is not None and d.dtype.names:
        for n in d.dtype.names:  # column by column (variable-length arrays element-wise)
            col = d[n]
            if col.dtype == object:
                for x in col:
                    h.update(np.ascontiguousarray(x).tobytes())
            else:
                h.update(np.ascontiguousarray(col).tobytes())
    else:
        h.update(np.ascontiguousarray(d).tobytes())
    return h.hexdigest()


def sums(root: Path, label: str) -> dict:
    """``{file: [{hdu, name, sha256, keys}]}`` of every FITS file under ``root``."""
    from astropy.io import fits

    res = {}
    for p in sorted(root.rglob("*.fits")):
        if ".astrogen-work" in p.parts:
            continue
        with fits.open(p) as hl:
            res[p.relative_to(root).as_posix()] = [
                {"hdu": i, "name": h.name, "sha256": _data_hash(h),
                 "keys": sorted({k for k in h.header if k not in ("HISTORY", "COMMENT")})}
                for i, h in enumerate(hl)]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{label}.json").write_text(json.dumps(res, indent=1))
    print(f"{label}: {len(res)} FITS files, {sum(len(v) for v in res.values())} HDUs")
    return res


def compare(a: str, b: str) -> dict:
    """Data identical HDU by HDU; header keys gained / lost."""
    A = json.loads((RESULTS / f"{a}.json").read_text())
    B = json.loads((RESULTS / f"{b}.json").read_text())
    out = {"files_a": len(A), "files_b": len(B), "missing": sorted(set(A) ^ set(B)),
           "hdus": 0, "data_identical": 0, "data_differs": [], "keys_gained": {},
           "keys_lost": {}}
    for f in sorted(set(A) & set(B)):
        for x, y in zip(A[f], B[f]):
            out["hdus"] += 1
            if x["sha256"] == y["sha256"]:
                out["data_identical"] += 1
            else:
                out["data_differs"].append(f"{f}[{x['hdu']}]")
            gained = sorted(set(y["keys"]) - set(x["keys"]))
            lost = sorted(set(x["keys"]) - set(y["keys"]))
            if gained:
                out["keys_gained"][f"{f}[{x['hdu']}]"] = gained
            if lost:
                out["keys_lost"][f"{f}[{x['hdu']}]"] = lost
    (RESULTS / f"compare_{a}_{b}.json").write_text(json.dumps(out, indent=1))
    print(json.dumps({k: out[k] for k in ("files_a", "files_b", "missing", "hdus",
                                          "data_identical", "data_differs")}))
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--src", type=Path, required=True)
    r.add_argument("--out", type=Path, required=True)
    s = sub.add_parser("sums")
    s.add_argument("root", type=Path)
    s.add_argument("label")
    c = sub.add_parser("compare")
    c.add_argument("a")
    c.add_argument("b")
    args = ap.parse_args(argv)
    if args.cmd == "run":
        run(args.src.resolve(), args.out.resolve())
    elif args.cmd == "sums":
        sums(args.root, args.label)
    else:
        compare(args.a, args.b)


if __name__ == "__main__":
    main()
