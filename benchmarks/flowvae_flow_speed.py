"""FlowVAE latent flow: share of generation time in the flow, stamps/s, density (issue 20).

    python benchmarks/flowvae_flow_speed.py --models maf=output/models/flowvae_cosmos64.keras \\
        coupling=output/models/flowvae_cosmos64_coupling.keras \\
        --heldout /work/runs_real/heldout_stamps_64_s7 --latents output/runs/flowvae20/latents.npz

For each model (``name=path``, or a shipped name), in one process and in turn (``--repeats``
rounds over all models, so the machine's load hits every model alike; figures are medians
over rounds and ratios are taken within a round):

* at batch 1, 32 and 256 (``--batches``): wall time of the compiled latent flow
  (``flow.forward(u, c)`` as ``FlowVAE.generate`` runs it: one XLA-compiled
  ``tf.function``; also timed without XLA, ``*_no_xla``), of the compiled decoder on those
  latents,
  and of ``FlowVAE.generate`` (flow + decoder in one ``tf.function``, what the
  ``flowvae.generate`` stage calls) on ``--rows`` rows of held-out conditions, micro-batches
  of the batch size; the share of time in the flow is ``t_flow / (t_flow + t_decoder)``;
  stamps/s is ``rows / t_generate``;
* density of the flow on latents: mean ``-log p(z | c)`` (nats per latent vector) of the
  encoder means of the held-out galaxies (``--heldout``, a stamp dataset no model trained on)
  and of the training latents (``--latents``, the run's ``latents.npz``; a model whose
  encoder is not the one that made them is still evaluated on them, so give models with one
  encoder).

Writes ``results.json`` and ``table.md`` into ``--out`` (default
``benchmarks/results/flowvae_flow``).
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


def _load(spec: str):
    from astrogen.models.flowvae import load_flowvae

    p = Path(spec)
    if not p.exists():  # a shipped name
        p = REPO / "astrogen" / "data" / "models" / f"{spec}.keras"
    return load_flowvae(p)


def _timed(fn, reps: int) -> float:
    """Best-of-``reps`` wall time of ``fn()`` in seconds (after one warm-up call)."""
    fn()
    best = np.inf
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def speed(model, cond: np.ndarray, batch: int, rows: int, reps: int) -> dict:
    import tensorflow as tf

    from astrogen import seeds

    c_all = np.resize(cond, (rows, cond.shape[1])).astype(np.float32)
    u_all = seeds.normals(seeds.row_seeds(11, np.arange(rows)), model.latent_dim)
    u_all = u_all.astype(np.float32)
    flow_fn = model._flow_forward_fn()  # what FlowVAE.generate runs (XLA-compiled)
    flow_graph = tf.function(lambda u, c: model.flow.forward(u, c))  # the same without XLA
    dec_fn = tf.function(lambda z: model.decoder(z, training=False))
    chunks = [(u_all[i:i + batch], c_all[i:i + batch]) for i in range(0, rows, batch)]
    chunks = [(u, c) for u, c in chunks if len(u) == batch]
    n = len(chunks) * batch
    zs = [flow_fn(tf.constant(u), tf.constant(c)) for u, c in chunks]

    def run_flow():
        for u, c in chunks:
            flow_fn(tf.constant(u), tf.constant(c)).numpy()

    def run_flow_graph():
        for u, c in chunks:
            flow_graph(tf.constant(u), tf.constant(c)).numpy()

    def run_dec():
        for z in zs:
            dec_fn(z).numpy()

    seeds_rows = seeds.row_seeds(11, np.arange(n))

    def run_gen():
        model.generate(c_all[:n], seeds_rows, batch_size=batch)

    t_flow, t_dec, t_gen = _timed(run_flow, reps), _timed(run_dec, reps), _timed(run_gen, reps)
    t_graph = _timed(run_flow_graph, reps)
    return {"rows": n, "t_flow_s": t_flow, "t_decoder_s": t_dec, "t_generate_s": t_gen,
            "flow_share": t_flow / (t_flow + t_dec), "stamps_per_s": n / t_gen,
            "t_flow_no_xla_s": t_graph, "flow_share_no_xla": t_graph / (t_graph + t_dec),
            "flow_xla_speedup": t_graph / t_flow}


def density(model, z: np.ndarray, cond: np.ndarray) -> float:
    nll = [-np.asarray(model.log_prob(z[i:i + 256], cond[i:i + 256]))
           for i in range(0, len(z), 256)]
    return float(np.mean(np.concatenate(nll)))


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", required=True, help="name=path or shipped name")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 32, 256])
    ap.add_argument("--rows", type=int, default=256, help="rows per timing (>= largest batch)")
    ap.add_argument("--rows-batch1", type=int, default=32, help="rows timed at batch 1")
    ap.add_argument("--reps", type=int, default=2, help="best-of repetitions per timing")
    ap.add_argument("--repeats", type=int, default=2, help="rounds over all models")
    ap.add_argument("--heldout", default=None, help="stamp dataset for held-out latents")
    ap.add_argument("--latents", default=None, help="latents.npz of the training run")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "flowvae_flow"))
    args = ap.parse_args(argv)

    import tensorflow as tf

    from astrogen.datasets.galaxy_stamps import read_stamps

    specs = dict(s.split("=", 1) if "=" in s else (s, s) for s in args.models)
    models = {k: _load(v) for k, v in specs.items()}
    held = None
    if args.heldout:
        held = read_stamps(args.heldout, fields=("observed", "conditions"))
    cond = (held["conditions"] if held is not None else
            np.array([[24.0, 0.3, 1.0]], np.float32)).astype(np.float32)
    out = {"command": "python benchmarks/flowvae_flow_speed.py " + " ".join(argv or sys.argv[1:]),
           "machine": platform.platform(), "cpu_count": os.cpu_count(),
           "tensorflow": tf.__version__, "load_average_start": os.getloadavg(),
           "models": {k: {"path": v, "flow_type": getattr(models[k], "flow_type", "maf"),
                          "flow_num_bijectors": models[k].flow_num_bijectors,
                          "latent_dim": models[k].latent_dim} for k, v in specs.items()}}
    rounds = []
    for r in range(args.repeats):
        this = {}
        for name, m in models.items():
            this[name] = {}
            for b in args.batches:
                rows = args.rows_batch1 if b == 1 else max(args.rows, b)
                this[name][str(b)] = speed(m, cond, b, rows, args.reps)
                print(f"round {r} {name} batch {b}: {this[name][str(b)]}", flush=True)
        rounds.append(this)
    out["rounds"] = rounds
    names = list(models)
    med = {}
    for name in names:
        med[name] = {}
        for b in map(str, args.batches):
            med[name][b] = {k: float(np.median([rd[name][b][k] for rd in rounds]))
                            for k in ("flow_share", "stamps_per_s", "t_flow_s", "t_decoder_s",
                                      "t_generate_s", "flow_share_no_xla",
                                      "flow_xla_speedup")}
            if name != names[0]:
                med[name][b][f"stamps_per_s_over_{names[0]}"] = float(np.median(
                    [rd[name][b]["stamps_per_s"] / rd[names[0]][b]["stamps_per_s"]
                     for rd in rounds]))
                med[name][b][f"flow_time_over_{names[0]}"] = float(np.median(
                    [rd[name][b]["t_flow_s"] / rd[names[0]][b]["t_flow_s"] for rd in rounds]))
    out["median"] = med
    dens = {}
    if held is not None or args.latents:
        for name, m in models.items():
            dens[name] = {}
            if held is not None:
                z = np.asarray(m.encode(held["observed"].astype(np.float32)))
                dens[name]["heldout_nll"] = density(m, z, held["conditions"])
                dens[name]["heldout_n"] = int(len(z))
            if args.latents:
                with np.load(args.latents) as f:
                    dens[name]["train_nll"] = density(m, f["z"], f["conditions"])
                    dens[name]["train_n"] = int(len(f["z"]))
    out["density_nats_per_latent"] = dens
    out["load_average_end"] = os.getloadavg()
    dest = Path(args.out)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "results.json").write_text(json.dumps(out, indent=2))
    lines = ["| model | flow | batch | stamps/s | share of time in the flow | same without XLA "
             "| flow speed-up by XLA | stamps/s ratio | flow time ratio |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name in names:
        for b in map(str, args.batches):
            x = med[name][b]
            lines.append(f"| {name} | {out['models'][name]['flow_type']} "
                         f"({out['models'][name]['flow_num_bijectors']} bijectors) | {b} | "
                         f"{x['stamps_per_s']:.1f} | {100 * x['flow_share']:.1f} % | "
                         f"{100 * x['flow_share_no_xla']:.1f} % | "
                         f"{x['flow_xla_speedup']:.2f}x | "
                         f"{x.get(f'stamps_per_s_over_{names[0]}', 1.0):.2f} | "
                         f"{x.get(f'flow_time_over_{names[0]}', 1.0):.3f} |")
    lines.append("")
    lines.append(f"ratios: against {names[0]} within each round, median over "
                 f"{args.repeats} rounds; timings best of {args.reps}; load average "
                 f"{out['load_average_start'][0]:.1f} -> {out['load_average_end'][0]:.1f} on "
                 f"{os.cpu_count()} cores.")
    if dens:
        lines += ["", "| model | held-out -log p(z|c) [nats] | training -log p(z|c) [nats] |",
                  "|---|---|---|"]
        for name in names:
            d = dens[name]
            lines.append(f"| {name} | {d.get('heldout_nll', float('nan')):.2f} | "
                         f"{d.get('train_nll', float('nan')):.2f} |")
    (dest / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return out


if __name__ == "__main__":
    main()
