"""Galaxy generator speed against the machine's own dense-matmul peak, in one run (issue 20).

    python benchmarks/generator_speed.py                # 3 repeats, medians
    python benchmarks/generator_speed.py --repeats 1 --n 8 --out /tmp/s   # smoke test

In one process, ``--repeats`` times in turn (the machine is shared and noisy; every figure is
the median over repeats, and ratios are taken between figures of the same run):

1. **Matmul peak**: sustained float32 ``tf.matmul`` of two ``--matmul-n`` square matrices
   (``2 n^3`` FLOP each), the best of 5 blocks of about ``--matmul-seconds / 5``,
   TensorFlow's default threads.
2. **Generators** on the same ``--n`` catalog rows (held-out simulated COSMOS-like rows, see
   ``ddpm_distill_quality.py``), through ``generate`` (what the ``ddpm.generate`` and
   ``flowvae.generate`` stages call) with network micro-batches of ``--batch-size``: the DDPM
   teacher with DDIM at 25 steps, the distilled students at 4, 2, 1 steps, the FlowVAE
   sampler, and GalSim drawing the rows' Sersic profiles (64 x 64, 0.03"/pixel, PSF-free,
   ``method='no_pixel'``, the profiles of the training set).

FLOP per network call (one stamp): counted by TensorFlow's graph profiler
(``float_operation``) on the frozen forward graph at batch 1; the FlowVAE figure is its
decoder (the latent flow is not counted). Achieved FLOP/s = stamps/s x network calls per
stamp x FLOP per call; reported as a fraction of the matmul peak of the same repeat, and every
speed ratio is taken within a repeat; the tables give the medians over repeats.

Writes ``results.json`` and ``table.md`` to ``--out`` (default
``benchmarks/results/generator_speed``).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from ddpm_distill_quality import HOLDOUT  # noqa: E402


def graph_flops(fn, *specs) -> int:
    """FLOPs of one call of ``fn`` (a traced TF callable) on inputs ``specs``, from
    TensorFlow's profiler on the frozen graph (multiply-add = 2 FLOPs)."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2)
    from tensorflow.python.profiler import model_analyzer, option_builder

    cf = tf.function(fn).get_concrete_function(*specs)
    frozen = convert_variables_to_constants_v2(cf)
    opts = option_builder.ProfileOptionBuilder.float_operation()
    opts["output"] = "none"
    info = model_analyzer.profile(frozen.graph, options=opts)
    return int(info.total_float_ops)


def matmul_peak(n: int, seconds: float) -> float:
    """Sustained float32 matmul FLOP/s: the best of 5 timed blocks after a warm-up (on a
    shared machine the best block is the closest to what the cores can do)."""
    import tensorflow as tf

    a = tf.random.stateless_normal((n, n), seed=(1, 2))
    b = tf.random.stateless_normal((n, n), seed=(3, 4))

    @tf.function
    def mm(a, b, k):
        acc = tf.zeros((), tf.float32)
        for _ in tf.range(k):
            acc += tf.reduce_sum(tf.matmul(a, b))
        return acc

    mm(a, b, tf.constant(1)).numpy()
    t0 = time.perf_counter()
    mm(a, b, tf.constant(2)).numpy()
    per = max((time.perf_counter() - t0) / 2, 1e-4)
    k = max(1, int(seconds / 5 / per))
    rates = []
    for _ in range(5):
        t0 = time.perf_counter()
        mm(a, b, tf.constant(k)).numpy()
        rates.append(2.0 * n ** 3 * k / (time.perf_counter() - t0))
    return float(np.max(rates))


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=32, help="rows per generator measurement")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--matmul-n", type=int, default=2048)
    ap.add_argument("--matmul-seconds", type=float, default=3.0)
    ap.add_argument("--holdout", default=str(REPO / "output" / "datasets"
                                              / "cosmos_holdout_64_s2099"))
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "generator_speed"))
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    import galsim
    import tensorflow as tf

    from astrogen.datasets.galaxy_stamps import prepare_stamp_dataset, read_stamps
    from astrogen.models.ddpm_galaxy import condition_features, load_ddpm, shipped_model_path
    from astrogen.models.flowvae import load_flowvae
    from astrogen.models.pretrained import resolve_model_path
    from astrogen.physics.render import galaxy_profile
    from astrogen.seeds import row_seeds

    t_start = time.time()
    ds, _ = prepare_stamp_dataset({"path": args.holdout, **HOLDOUT})
    cond = read_stamps(ds, fields=("conditions",),
                       rows=slice(0, args.n))["conditions"].astype(np.float64)
    if args.n > HOLDOUT["shard_size"]:
        raise SystemExit(f"--n must be <= {HOLDOUT['shard_size']} (one shard's profiles)")
    with np.load(Path(ds) / "shard_00000.npz") as z:  # the rows' drawn Sersic parameters
        data = {k: z[k][:args.n] for k in ("sersic_n", "q", "beta")}
    seeds = row_seeds(20, np.arange(args.n))
    teacher = load_ddpm()
    students = {k: load_ddpm(shipped_model_path().with_name(f"ddpm_cosmos64_distilled_{k}step"
                                                             ".keras")) for k in (4, 2, 1)}
    flow = load_flowvae(resolve_model_path("flowvae_cosmos64", "flowvae"))

    # ---- FLOP per network call (one stamp) --------------------------------------------------
    net = teacher.network
    size = teacher.stamp_size
    def unet_call(x, t, c):
        return net((x, t, c), training=False)

    def decoder_call(z):
        return flow.decoder(z, training=False)

    unet_flops = graph_flops(unet_call,
                             tf.TensorSpec((1, size, size, 1), tf.float32),
                             tf.TensorSpec((1,), tf.int32), tf.TensorSpec((1, 3), tf.float32))
    dec_flops = graph_flops(decoder_call,
                            tf.TensorSpec((1, int(flow.latent_dim)), tf.float32))

    rows = [{"sersic_n": float(data["sersic_n"][i]), "q": float(data["q"][i]),
             "beta": float(data["beta"][i]), "hlr": float(cond[i, 1]), "mag": float(cond[i, 0]),
             "bulge_frac": 0.0} for i in range(args.n)]
    flux = 10.0 ** (-0.4 * (cond[:, 0] - 25.94))

    def galsim_draw():
        out_img = np.empty((args.n, size, size), np.float32)
        for i, r in enumerate(rows):
            img = galsim.ImageF(size, size, scale=0.03)
            galaxy_profile(r, float(flux[i]), "sersic").drawImage(img, method="no_pixel")
            out_img[i] = img.array
        return out_img

    gens = {
        "ddpm_ddim25": (lambda: teacher.generate(cond, seeds, "ddim", 25,
                                                 batch_size=args.batch_size), 25, unet_flops),
        **{f"distilled_{k}step": ((lambda k=k: students[k].generate(
            cond, seeds, "distilled", k, batch_size=args.batch_size)), k, unet_flops)
           for k in (4, 2, 1)},
        "flowvae": (lambda: flow.generate(cond, seeds, batch_size=args.batch_size), 1,
                    dec_flops),
        "galsim_parametric": (galsim_draw, 0, None),
    }
    for fn, _, _ in gens.values():  # warm-up: tracing, first-call allocations
        fn()
    samples: dict = {k: [] for k in gens}
    peaks = []
    for rep in range(args.repeats):
        peaks.append(matmul_peak(args.matmul_n, args.matmul_seconds))
        for label, (fn, _, _) in gens.items():
            t0 = time.perf_counter()
            fn()
            samples[label].append(args.n / (time.perf_counter() - t0))
        print(f"repeat {rep}: peak {peaks[-1] / 1e9:.1f} GFLOP/s, "
              + ", ".join(f"{k} {v[-1]:.2f}/s" for k, v in samples.items()), flush=True)
    # every ratio is taken within one repeat (same load), then the median over repeats
    peak = float(np.median(peaks))
    pk = np.asarray(peaks)
    base = np.asarray(samples["ddpm_ddim25"])
    gal = np.asarray(samples["galsim_parametric"])
    table = {}
    for label, (_, calls, flops) in gens.items():
        r = np.asarray(samples[label])
        achieved = float(np.median(r * calls * flops)) if flops else None
        table[label] = {
            "stamps_per_s": float(np.median(r)), "stamps_per_s_all": samples[label],
            "network_calls_per_stamp": calls, "flop_per_call": flops,
            "achieved_flop_per_s": achieved,
            "fraction_of_matmul_peak": (float(np.median(r * calls * flops / pk))
                                        if flops else None),
            "fraction_of_matmul_peak_all": (list(r * calls * flops / pk) if flops else None),
            "speed_vs_ddpm_ddim25": float(np.median(r / base)),
            "speed_vs_galsim_parametric": float(np.median(r / gal))}
    res = {"n_rows": args.n, "batch_size": args.batch_size, "repeats": args.repeats,
           "matmul": {"n": args.matmul_n, "peak_flop_per_s_median": peak,
                      "all": peaks},
           "flop_per_call": {"ddpm_unet": unet_flops, "flowvae_decoder": dec_flops},
           "generators": table, "tensorflow": tf.__version__, "galsim": galsim.__version__,
           "machine": platform.machine(), "cpu_count": os.cpu_count(),
           "load_average_1_5_15min": list(os.getloadavg()),
           "wall_time_s": time.time() - t_start}
    (out / "results.json").write_text(json.dumps(res, indent=2) + "\n")
    lines = ["| generator | net calls / stamp | MFLOP / call | stamps/s | x DDIM-25 | "
             "x GalSim | achieved GFLOP/s | of matmul peak |",
             "|---|---|---|---|---|---|---|---|"]
    for label, r in table.items():
        fl = f"{r['flop_per_call'] / 1e6:.0f}" if r["flop_per_call"] else "-"
        ach = (f"{r['achieved_flop_per_s'] / 1e9:.1f}" if r["achieved_flop_per_s"] else "-")
        frac = (f"{100 * r['fraction_of_matmul_peak']:.0f} %"
                if r["fraction_of_matmul_peak"] else "-")
        lines.append(f"| {label} | {r['network_calls_per_stamp'] or '-'} | {fl} | "
                     f"{r['stamps_per_s']:.2f} | {r['speed_vs_ddpm_ddim25']:.2f} | "
                     f"{r['speed_vs_galsim_parametric']:.3f} | {ach} | {frac} |")
    lines.append(f"\nratios and peak fractions: median over {args.repeats} repeats of the "
                 "ratio within each repeat; matmul peak (float32 "
                 f"{args.matmul_n}^2, best block, median of {args.repeats}): "
                 f"{peak / 1e9:.1f} GFLOP/s; {args.n} rows, batch {args.batch_size}; load "
                 f"average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores.")
    (out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return res


if __name__ == "__main__":
    main()
