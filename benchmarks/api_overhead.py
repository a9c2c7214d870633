"""Cost of the public Python API against its peers, measured in the same run.

* ``import astrogen`` (and touching ``astrogen.sample``), timed inside a fresh interpreter,
  as a ratio to ``import numpy`` timed the same way;
* ``astrogen.sample(model, rows)`` (stage built and set up, GalSim objects made) against the
  low-level path a user had before (``load_flowvae(...).generate(conditions, row_seeds(...))``
  then ``galsim.InterpolatedImage`` by hand, micro-batches of 32 rows as the stage), on the
  same rows, the model already loaded.
  Both give the same pixels (checked).

Usage::

    python benchmarks/api_overhead.py            # 64 rows, best of 3 (about a minute here)
    python benchmarks/api_overhead.py --rows 512 --repeats 5

Writes ``benchmarks/results/api/api_overhead.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "api"


def _fresh_import(module_code: str, repeats: int) -> float:
    """Best time (s) of ``module_code`` timed inside a fresh interpreter (start-up excluded)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    code = ("import time; t0 = time.perf_counter(); " + module_code
            + "; print(time.perf_counter() - t0)")
    return min(float(subprocess.run([sys.executable, "-c", code], check=True, env=env,
                                    capture_output=True, text=True).stdout)
               for _ in range(repeats))


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))

    t_astrogen = _fresh_import("import astrogen; astrogen.sample", args.repeats)
    t_numpy = _fresh_import("import numpy", args.repeats)

    import galsim
    import numpy as np

    import astrogen
    from astrogen.models.flowvae import load_flowvae
    from astrogen.models.pretrained import cached_model
    from astrogen.seeds import derive_seed, row_seeds

    rng = np.random.default_rng(0)
    n = args.rows
    mag, hlr, z = rng.uniform(20.5, 23.5, n), rng.uniform(0.12, 0.28, n), rng.uniform(0.3, 1.2, n)
    model = astrogen.load_model("flowvae_cosmos64")
    net = cached_model(model.path, load_flowvae)  # loaded once for both paths

    def api():
        return astrogen.sample(model, mag=mag, hlr=hlr, z=z, seed=5)

    def low_level():
        seeds = row_seeds(derive_seed(5, "generate"), np.arange(n))
        # micro-batches of 32 rows, as flowvae.generate (and so sample) by default
        images = net.generate(np.stack([mag, hlr, z], axis=1).astype(np.float32), seeds,
                              batch_size=32)
        return [galsim.InterpolatedImage(galsim.Image(im.astype(np.float64), scale=0.03),
                                         x_interpolant="quintic") for im in images]

    api(), low_level()  # warm up (graph tracing)
    t_api, t_low = [], []
    for _ in range(args.repeats):  # interleaved, so both see the same machine load
        t0 = time.perf_counter()
        a = api()
        t_api.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        b = low_level()
        t_low.append(time.perf_counter() - t0)
    same = all(np.array_equal(x.image.array, y.image.array) for x, y in zip(a, b))
    result = {
        "rows": n, "repeats": args.repeats, "machine": platform.machine(),
        "cpu_count": os.cpu_count(), "load_average_1min": os.getloadavg()[0],
        "import_astrogen_s": round(t_astrogen, 4), "import_numpy_s": round(t_numpy, 4),
        "import_ratio_astrogen_to_numpy": round(t_astrogen / t_numpy, 3),
        "sample_api_s": round(min(t_api), 4), "sample_low_level_s": round(min(t_low), 4),
        "sample_ratio_api_to_low_level": round(min(t_api) / min(t_low), 3),
        "same_pixels": bool(same),
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "api_overhead.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
