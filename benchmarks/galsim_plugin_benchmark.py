"""GalSim plug-in throughput: FlowVAE galaxies one per network call vs batched, vs GalSim
RealGalaxy drawing (the realistic-morphology peer) and a GalSim Sersic, same run, same PSF.

Each configuration draws ``--n`` galaxies on a Tiled image (64x64 stamps at 0.1 arcsec, Moffat
PSF, FWHM 0.17 arcsec, no noise) with ``galsim.config.Process`` in this process. Every timed run
follows an untimed warm-up of the same configuration (model load, graph tracing, catalog read
are excluded), and the configurations are timed in alternation ``--repeats`` times; the median
is reported. Speeds are stated only as ratios to the peers measured in the same run.

    python benchmarks/galsim_plugin_benchmark.py            # --n 64 --repeats 3 (~2 minutes)

Results: ``benchmarks/results/galsim_plugin/galsim_plugin_benchmark.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import galsim  # noqa: E402
import numpy as np  # noqa: E402

import astrogen.galsim  # noqa: E402,F401  (registers FlowVAEGalaxy)

HERE = Path(__file__).resolve().parent
OUT = HERE / "results" / "galsim_plugin"
COSMOS = HERE.parent / "astrogen" / "data" / "cosmos"


def config(kind: str, n_side: int, out_dir: Path, batch_size: int = 32) -> dict:
    gal = {"flux": 1000.0}
    base = {
        "psf": {"type": "Moffat", "beta": 3.5, "fwhm": 0.17},
        "image": {"type": "Tiled", "nx_tiles": n_side, "ny_tiles": n_side, "stamp_size": 64,
                  "pixel_scale": 0.1, "random_seed": 1234},
        "output": {"dir": str(out_dir), "file_name": f"{kind}.fits"},
    }
    if kind.startswith("flowvae"):
        base["modules"] = ["astrogen.galsim"]
        base["input"] = {"flowvae": {"model": "flowvae_cosmos64", "batch_size": batch_size}}
        gal.update({"type": "FlowVAEGalaxy", "mag": {"type": "Random", "min": 20.0, "max": 23.5},
                    "hlr": {"type": "Random", "min": 0.2, "max": 0.6},
                    "z": {"type": "Random", "min": 0.3, "max": 1.5}})
    elif kind == "realgalaxy":
        base["input"] = {"real_catalog": {"dir": str(COSMOS),
                                          "file_name": "real_galaxy_catalog_26_extension_example.fits"}}
        gal.update({"type": "RealGalaxy", "index": {"type": "Sequence", "nitems": 100}})
    else:  # parametric Sersic with the FlowVAE's size range
        gal.update({"type": "Sersic", "n": {"type": "Random", "min": 0.8, "max": 4.0},
                    "half_light_radius": {"type": "Random", "min": 0.2, "max": 0.6}})
    base["gal"] = gal
    return base


def run_once(cfg: dict) -> float:
    t0 = time.perf_counter()
    galsim.config.Process(galsim.config.CopyConfig(cfg), logger=None)
    return time.perf_counter() - t0


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=64, help="galaxies per run (a square number)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    n_side = int(round(np.sqrt(args.n)))
    n = n_side * n_side
    kinds = {"flowvae_batch1": 1, "flowvae_batched": args.batch_size,
             "realgalaxy": None, "sersic": None}
    times = {k: [] for k in kinds}
    with tempfile.TemporaryDirectory() as tmp:
        cfgs = {k: config(k, n_side, Path(tmp), bs or 1) for k, bs in kinds.items()}
        for cfg in cfgs.values():
            run_once(cfg)  # warm-up: model load, tracing, catalog read
        for _ in range(args.repeats):
            for k, cfg in cfgs.items():
                times[k].append(run_once(cfg))
        same = (Path(tmp) / "flowvae_batch1.fits").read_bytes() == \
            (Path(tmp) / "flowvae_batched.fits").read_bytes()
    rate = {k: n / float(np.median(v)) for k, v in times.items()}
    # The latent draw: GaussianDeviate.generate (the plug-in's draw before this change) vs the
    # same values drawn one by one (what it does now), per object, 32 values.
    rng_s = {}
    for how in ("generate", "scalar"):
        t0 = time.perf_counter()
        for k in range(50):
            gd = galsim.GaussianDeviate(galsim.BaseDeviate(k + 1))
            if how == "generate":
                gd.generate(np.empty(32))
            else:
                np.array([gd() for _ in range(32)])
        rng_s[how] = (time.perf_counter() - t0) / 50
    res = {
        "command": "python benchmarks/galsim_plugin_benchmark.py " + " ".join(argv or []),
        "n_galaxies": n, "repeats": args.repeats, "batch_size": args.batch_size,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "seconds": times, "stamps_per_s": rate,
        "batched_same_bytes_as_batch1": bool(same),
        "latent_draw_seconds_per_object": rng_s,
        "ratios": {
            "batched / batch1": rate["flowvae_batched"] / rate["flowvae_batch1"],
            "batch1 / realgalaxy": rate["flowvae_batch1"] / rate["realgalaxy"],
            "batched / realgalaxy": rate["flowvae_batched"] / rate["realgalaxy"],
            "batched / sersic": rate["flowvae_batched"] / rate["sersic"],
        },
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "galsim_plugin_benchmark.json").write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps({"stamps_per_s": rate, "ratios": res["ratios"], "same_bytes": same},
                     indent=2))
    return res


if __name__ == "__main__":
    main()
