"""Benchmark of the parametric pipeline (issue: foundation).

1. Stamps per second of ``pipelines/parametric_mock.yaml`` end to end (2,000 galaxies), and,
   in the same run, of a peer: GalSim drawing the same galaxies directly through the survey
   PSF into 32x32 LSST stamps (no intermediate high-resolution stamp, no I/O).
2. Peak resident memory of ``astrogen run`` for 1,000 vs 100,000 catalog rows (same pipeline,
   ``n_objects`` overridden), each in its own process.

Usage:  python benchmarks/parametric_throughput.py [--rows-large 100000] [--out DIR]
Writes ``DIR/parametric_throughput.json`` and prints a Markdown table for the README.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PIPE = ROOT / "pipelines" / "parametric_mock.yaml"


def run_cli(n_rows: int, out: Path) -> tuple[float, float]:
    """Wall time (s) and peak RSS (MiB) of one ``astrogen run`` in a child process."""
    code = ("import resource, sys; from astrogen.cli import main; "
            "rc = main(sys.argv[1:]); "
            "print('MAXRSS', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr); "
            "sys.exit(rc)")
    cmd = [sys.executable, "-c", code, "-v", "0", "run", str(PIPE), f"output={out}",
           f"stages.catalog.n_objects={n_rows}", "stages.catalog.chunk_size=250", "--no-progress"]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode:
        raise SystemExit(r.stderr)
    rss_kib = int([l for l in r.stderr.splitlines() if l.startswith("MAXRSS")][-1].split()[1])
    return wall, rss_kib / 1024.0


def galsim_peer(n_rows: int) -> float:
    """Seconds for GalSim to draw the same catalog directly as noisy 32x32 LSST stamps."""
    import galsim

    from astrogen.catalog.cosmos import CosmosSampler
    from astrogen.physics.psf import build_psf
    from astrogen.physics.render import galaxy_profile
    from astrogen.physics.surveys import SURVEYS

    s = SURVEYS["lsst_i"]
    psf = build_psf(s.psf)
    rows = CosmosSampler().sample(1, np.arange(n_rows))
    flux = s.electrons(rows["mag"])
    t0 = time.perf_counter()
    for i, row in enumerate(rows):
        img = galsim.ImageF(32, 32, scale=s.pixel_scale)
        galsim.Convolve(galaxy_profile(row, float(flux[i])), psf).drawImage(img)
        img.addNoise(galsim.CCDNoise(galsim.BaseDeviate(i + 1), sky_level=s.sky_level))
    return time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=2000, help="rows of the throughput run")
    ap.add_argument("--rows-small", type=int, default=1000)
    ap.add_argument("--rows-large", type=int, default=100_000)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "parametric"))
    args = ap.parse_args(argv)
    res = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version()}}
    with tempfile.TemporaryDirectory() as tmp:
        wall, rss = run_cli(args.rows, Path(tmp) / "a")
        peer = galsim_peer(args.rows)
        res["throughput"] = {"rows": args.rows, "pipeline_wall_s": wall,
                             "pipeline_stamps_per_s": args.rows / wall,
                             "galsim_direct_s": peer,
                             "galsim_direct_stamps_per_s": args.rows / peer,
                             "pipeline_over_galsim_speed": peer / wall}
        print(f"throughput: {args.rows / wall:.1f} stamps/s end to end "
              f"(GalSim direct: {args.rows / peer:.1f} stamps/s; ratio {peer / wall:.2f})",
              flush=True)
        mem = {}
        for n in (args.rows_small, args.rows_large):
            wall_n, rss_n = run_cli(n, Path(tmp) / f"m{n}")
            mem[str(n)] = {"wall_s": wall_n, "peak_rss_mib": rss_n}
            print(f"{n} rows: peak RSS {rss_n:.0f} MiB, {wall_n:.0f} s", flush=True)
        res["memory"] = mem
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "parametric_throughput.json").write_text(json.dumps(res, indent=2) + "\n")
    small, large = mem[str(args.rows_small)], mem[str(args.rows_large)]
    print("\n| measure | value |\n| --- | --- |")
    print(f"| end-to-end stamps/s ({args.rows} galaxies, all outputs) | {args.rows / wall:.1f} |")
    print(f"| GalSim direct drawing, same galaxies, same run (stamps/s) | {args.rows / peer:.1f} |")
    print(f"| pipeline speed / GalSim direct | {peer / wall:.2f} |")
    print(f"| peak RSS, {args.rows_small} rows | {small['peak_rss_mib']:.0f} MiB |")
    print(f"| peak RSS, {args.rows_large} rows | {large['peak_rss_mib']:.0f} MiB |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
