"""Bit-for-bit equivalence of the trainers across a refactor of ``astrogen.training``.

Runs every trainer (flowvae, ddpm, nbody_gan, halo_unet, unet, prob_unet) on a tiny
configuration with a fixed seed, in a fresh folder, and records a fingerprint of what it
wrote: the SHA-256 of every array of the training set shards and of the final checkpoint
(weights, optimizer slots, step), the loss log without its wall-clock fields, and the
result file without its timings. Run it once with the old code and once with the new one
(``PYTHONPATH`` selects the tree), then compare::

    PYTHONPATH=/path/to/old python benchmarks/training_equivalence.py --out old.json
    PYTHONPATH=/path/to/new python benchmarks/training_equivalence.py --out new.json
    python benchmarks/training_equivalence.py --compare old.json new.json

A few minutes on 2 CPU cores (the datasets are rendered once per run). ``--models`` selects
some trainers. The comparison prints every differing entry and exits 1 if there is one.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

CONFIGS = {
    "flowvae": (Path(__file__).resolve().parents[1] / "configs" / "flowvae_tiny.yaml", [
        "output=out/flowvae/m.keras", "run_dir=out/flowvae/run",
        "dataset.path=data/stamps32"]),
    "ddpm": (Path(__file__).resolve().parents[1] / "configs" / "ddpm_tiny.yaml", [
        "output=out/ddpm/m.keras", "run_dir=out/ddpm/run", "dataset.path=data/stamps16"]),
    "nbody_gan": (Path(__file__).resolve().parents[1] / "configs" / "nbody_gan_tiny.yaml", [
        "output=out/gan/m.keras", "run_dir=out/gan/run", "dataset.path=data/slices"]),
    "halo_unet": ("""
model: halo_unet
seed: 1
output: out/halo/m.keras
run_dir: out/halo/run
dataset: {path: data/slices, n_boxes: 1, n_grid: 16, box_size: 32.0, slab_thickness: 4,
          n_steps: 3, z_init: 4.0, min_members: 8}
halo_unet: {channels: [4, 8]}
training: {steps: 4, batch_size: 4, checkpoint_every: 2, log_every: 1}
""", []),
}
_SEG = """
model: {model}
seed: 3
output: out/{model}/m.keras
run_dir: out/{model}/run
dataset:
  path: data/blends
  n_scenes: 72
  n_library: 8
  stamp_size: 32
  central_offset: 1.0
  separation: [0.5, 2.0]
  max_separation: 8.0
  margin: 12
  mag_range: [19.0, 23.0]
  shard_size: 36
  library_shard_size: 4
  seed: 2
{model}:
  depth: 2
  base_filters: 4
training:
  batch_size: 8
  steps: 8
  learning_rate: 0.01
  lr_schedule: constant
  validation_scenes: 16
  checkpoint_every: 4
  log_every: 1
  progress: false
"""
CONFIGS["unet"] = (_SEG.format(model="unet"), [])
CONFIGS["prob_unet"] = (_SEG.format(model="prob_unet"), [])

#: wall-clock fields, not part of the result
TIMING = {"time_s", "elapsed_s", "steps_per_second", "dataset", "run_dir", "output"}


def _sha(a) -> str:
    a = np.ascontiguousarray(np.asarray(a))
    return hashlib.sha256(str(a.dtype).encode() + str(a.shape).encode()
                          + a.tobytes()).hexdigest()[:16]


def _npz_fingerprint(path: Path) -> dict:
    with np.load(path) as z:
        return {k: _sha(z[k]) for k in sorted(z.files) if k not in ("__state__", "timing")}


def _strip(d):
    if isinstance(d, dict):
        return {k: _strip(v) for k, v in d.items() if k not in TIMING}
    if isinstance(d, list):
        return [_strip(v) for v in d]
    return d


def fingerprint(model: str) -> dict:
    """Train ``model``'s tiny configuration in the current folder; its fingerprint."""
    from astrogen.training import run_training

    source, overrides = CONFIGS[model]
    t0 = time.perf_counter()
    res = run_training(str(source) if isinstance(source, Path) else source,
                       overrides=list(overrides))
    wall = time.perf_counter() - t0
    run_dir = Path(res["run_dir"])
    ckpts = sorted((run_dir / "checkpoints").glob("ckpt_*.npz"))
    out = {"result": _strip(res), "final_checkpoint": ckpts[-1].name,
           "checkpoint": _npz_fingerprint(ckpts[-1]),
           "losses": [_strip(json.loads(x))
                      for x in (run_dir / "losses.jsonl").read_text().splitlines()]}
    ds = Path(res["dataset"])
    out["dataset"] = {p.name: _npz_fingerprint(p) for p in sorted(ds.rglob("*.npz"))}
    return out, wall


def compare(a: dict, b: dict, path: str = "") -> list[str]:
    """Differences between two fingerprints (dotted paths)."""
    if isinstance(a, dict) and isinstance(b, dict):
        diffs = []
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                diffs.append(f"{path}.{k}: only in {'new' if k not in a else 'old'}")
            else:
                diffs += compare(a[k], b[k], f"{path}.{k}")
        return diffs
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in compare(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", help="write the fingerprints here (JSON)")
    ap.add_argument("--models", nargs="*", default=list(CONFIGS), choices=list(CONFIGS))
    ap.add_argument("--compare", nargs=2, metavar=("OLD", "NEW"))
    args = ap.parse_args(argv)
    if args.compare:
        old, new = (json.loads(Path(p).read_text()) for p in args.compare)
        models = sorted(set(old["models"]) & set(new["models"]))
        report = {}
        for m in models:
            diffs = compare(old["models"][m], new["models"][m], m)
            report[m] = {"identical": not diffs, "differences": diffs[:20],
                         "n_arrays_compared": len(new["models"][m]["checkpoint"])
                         + sum(len(v) for v in new["models"][m]["dataset"].values()),
                         "n_loss_lines": len(new["models"][m]["losses"])}
            print(f"{m:10s} {'identical' if not diffs else 'DIFFERENT'} "
                  f"({report[m]['n_arrays_compared']} arrays, "
                  f"{report[m]['n_loss_lines']} loss lines)")
            for d in diffs[:20]:
                print("   ", d)
        if args.out:
            Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
        return 0 if all(r["identical"] for r in report.values()) else 1
    import astrogen

    res = {"astrogen": str(Path(astrogen.__file__).parent), "models": {}, "wall_s": {}}
    here = Path.cwd()
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        try:
            for m in args.models:
                res["models"][m], res["wall_s"][m] = fingerprint(m)
                print(f"{m}: {res['wall_s'][m]:.1f} s", flush=True)
        finally:
            os.chdir(here)
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
