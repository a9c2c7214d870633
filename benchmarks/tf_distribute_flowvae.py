"""Steps per second of the FlowVAE VAE phase: ``strategy: default`` vs ``mirrored`` over 2
logical CPU devices, in the same process, same global batch (issue: multi-worker training
with tf.distribute).

The model and batches are those of ``configs/flowvae_tiny.yaml`` (32x32 stamps, channels
8-8-16-16, latent 8), global batch ``--batch`` (default 16, i.e. 8 stamps per replica). Each
strategy gets a fresh model (same initial weights) and optimizer made in its scope; after
``--warmup`` steps (tracing) ``--steps`` steps of :func:`astrogen.models.flowvae.train_vae_step`
are timed, the strategies alternating over ``--repeats`` rounds (median reported).

Two logical devices on one CPU share the same cores, so mirrored is *not* expected to be
faster here (it adds the all-reduce and per-replica overhead); the figure documents the
overhead, not a speed-up. The load average (``os.getloadavg()``) and any other
``astrogen train`` process are recorded at the start and at the end: the numbers are only
comparable between the two strategies of one run.

Usage::

    python benchmarks/tf_distribute_flowvae.py            # writes the JSON below
    python benchmarks/tf_distribute_flowvae.py --quick    # 3 timed steps, to check it runs

Writes ``benchmarks/results/tf_distribute/tf_distribute.json``
(``tf_distribute_quick.json`` with ``--quick``).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "results" / "tf_distribute"


def _machine_state() -> dict:
    r = subprocess.run(["pgrep", "-af", "astrogen train"], capture_output=True, text=True)
    others = [x for x in r.stdout.splitlines() if str(os.getpid()) != x.split()[0]]
    heavy = subprocess.run(["ps", "-eo", "pid,pcpu,comm", "--sort=-pcpu"],
                           capture_output=True, text=True).stdout.splitlines()[1:6]
    return {"loadavg_1_5_15min": [round(x, 2) for x in os.getloadavg()],
            "astrogen_train_processes": others,
            "top_cpu_processes": [" ".join(x.split()) for x in heavy]}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=16, help="global batch size")
    ap.add_argument("--steps", type=int, default=20, help="timed steps per round")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.steps, args.repeats = 3, 1
    start_state = _machine_state()

    from astrogen.pipeline.tf_distribute import logical_cpu_devices, make_strategy

    devices = logical_cpu_devices(2)  # before any TensorFlow op
    import keras
    import numpy as np

    from astrogen.datasets.galaxy_stamps import CONDITION_NAMES, read_stamps
    from astrogen.models.flowvae import FlowVAE, train_vae_step
    from astrogen.training.config import load_training_config
    from astrogen.datasets.galaxy_stamps import prepare_stamp_dataset
    from astrogen.training.flowvae_trainer import auto_flux_scale

    cfg = load_training_config(str(REPO / "configs" / "flowvae_tiny.yaml"),
                               [f"dataset.path={REPO / 'output/datasets/cosmos_stamps_tiny_32'}",
                                "training.progress=false"])
    path, manifest = prepare_stamp_dataset(cfg["dataset"])
    n_gal = int(manifest["n_galaxies"])
    data = read_stamps(path, fields=("observed", "psf", "noise_power", "conditions"))
    arch = {k: v for k, v in cfg["flowvae"].items() if k != "flux_scale"}
    flux_scale = auto_flux_scale(path)
    rng = np.random.default_rng(0)
    batches = [rng.choice(n_gal, args.batch, replace=False) for _ in range(8)]

    def setup(strategy):
        with strategy.scope():
            keras.utils.set_random_seed(1)
            model = FlowVAE(stamp_size=int(manifest["stamp_size"]), flux_scale=flux_scale,
                            condition_names=list(CONDITION_NAMES), **arch)
            model.adapt_conditions(data["conditions"])
            opt = keras.optimizers.Adam(1e-3)
            opt.build(model.vae_variables)
        return model, opt

    def run(model, opt, strategy, first_step, n):
        losses = []
        for s in range(first_step, first_step + n):
            rows = batches[s % len(batches)]
            out = train_vae_step(model, opt, data["observed"][rows], data["psf"][rows],
                                 noise_power=data["noise_power"][rows], step=s, seed=0,
                                 strategy=strategy)
            losses.append(out["loss"])
        return losses

    strategies = {"default": make_strategy("default"),
                  "mirrored": make_strategy("mirrored", devices)}
    state = {k: setup(s) for k, s in strategies.items()}
    first = {}
    for k, s in strategies.items():  # tracing + the first steps (same weights, same batch)
        first[k] = run(*state[k], s, 0, args.warmup)
    timings = {k: [] for k in strategies}
    step = args.warmup
    for _ in range(args.repeats):
        for k, s in strategies.items():
            t0 = time.perf_counter()
            run(*state[k], s, step, args.steps)
            timings[k].append(args.steps / (time.perf_counter() - t0))
        step += args.steps
    sps = {k: statistics.median(v) for k, v in timings.items()}
    result = {
        "what": "steps/s of train_vae_step, tiny FlowVAE (configs/flowvae_tiny.yaml "
                "architecture, 32x32 stamps), noise_model power, same global batch",
        "global_batch": args.batch,
        "per_replica_batch": {"default": args.batch, "mirrored": args.batch // 2},
        "devices": {"default": "default strategy (no replication)", "mirrored": devices},
        "timed_steps_per_round": args.steps, "rounds": args.repeats,
        "steps_per_second_median": {k: round(v, 3) for k, v in sps.items()},
        "steps_per_second_rounds": {k: [round(x, 3) for x in v] for k, v in timings.items()},
        "mirrored_over_default": round(sps["mirrored"] / sps["default"], 3),
        "first_step_loss": {k: v[0] for k, v in first.items()},
        "first_step_loss_rel_diff": abs(first["mirrored"][0] - first["default"][0])
        / abs(first["default"][0]),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "machine_at_start": start_state,
        "machine_at_end": _machine_state(),
        "note": "2 logical CPU devices share the same physical cores: mirrored is not "
                "expected to be faster here; the figure measures its overhead. Other heavy "
                "processes (see machine_at_*) make the absolute numbers noisy.",
    }
    OUT.mkdir(parents=True, exist_ok=True)
    out = OUT / ("tf_distribute_quick.json" if args.quick else "tf_distribute.json")
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("steps_per_second_median",
                                              "mirrored_over_default",
                                              "first_step_loss_rel_diff")}))
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
