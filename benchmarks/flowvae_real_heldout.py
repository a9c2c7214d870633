"""FlowVAE trained on real galaxies vs trained on simulated ones, on held-out real galaxies.

    python benchmarks/flowvae_real_heldout.py \\
        --real /work/runs_real/flowvae_real/flowvae_real64.keras \\
        --dataset /work/runs_real/cosmos_real_64

``--dataset`` is the folder ``astrogen train configs/flowvae_real.yaml`` built (its training
split, 8 transforms per galaxy, and ``holdout/``, galaxies no real-trained model saw).
``--real`` is a saved model or ``ckpt:RUN_DIR`` (latest checkpoint of a run). For each model
(the real-trained one and the shipped, simulation-trained ``flowvae_cosmos64``) and each split,
the PSF-aware ELBO terms per stamp (``training.flowvae_trainer.vae_eval``: each stamp's own
PSF and noise power, beta = 1, one fixed reparameterisation draw) are reported as mean and
standard error over galaxies, next to the log-likelihood of an empty model (zero image:
``delta_loglik`` = how much of the galaxies' signal the reconstruction explains, in nats).
Writes ``real_heldout.json`` and ``real_heldout.png`` (held-out stamps, reconstructions
convolved with their PSF, PSF-free reconstructions; log stretch) into ``--out`` (default
``benchmarks/results/flowvae_real``).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))


def per_stamp(model, data: dict, seed: int = 0) -> dict:
    """ELBO terms per stamp and the empty model's log-likelihood (nats)."""
    from astrogen.models.psf_likelihood import psf_log_likelihood

    out = {"loss": [], "log_likelihood": [], "kl": [], "empty_loglik": []}
    for i in range(len(data["observed"])):
        sl = slice(i, i + 1)
        ev = model.vae_losses(data["observed"][sl], data["psf"][sl],
                              noise_power=data["noise_power"][sl], seed=(seed, i), beta=1.0,
                              free_bits=0.0)
        for k in ("loss", "log_likelihood", "kl"):
            out[k].append(float(ev[k]))
        out["empty_loglik"].append(float(psf_log_likelihood(
            data["observed"][sl], np.zeros_like(data["observed"][sl]), data["psf"][sl],
            noise_power=data["noise_power"][sl])[0]))
    out = {k: np.asarray(v) for k, v in out.items()}
    out["delta_loglik"] = out["log_likelihood"] - out["empty_loglik"]
    return out


def summary(x: np.ndarray) -> dict:
    return {"mean": float(x.mean()), "stderr": float(x.std(ddof=1) / np.sqrt(len(x))),
            "median": float(np.median(x)), "n": int(len(x))}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--real", required=True, help=".keras file or ckpt:RUN_DIR")
    ap.add_argument("--sim", default="flowvae_cosmos64")
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--train-rows", type=int, default=80,
                    help="untransformed training galaxies evaluated (every 8th row)")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "flowvae_real"))
    args = ap.parse_args(argv)

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from astrogen.datasets import read_stamps
    from astrogen.models.psf_likelihood import convolve
    from flowvae_artefacts import load_any

    fields = ("observed", "psf", "noise_power", "conditions")
    ds = Path(args.dataset)
    man = json.loads((ds / "manifest.json").read_text())
    hold = read_stamps(ds / "holdout", fields=fields)
    tr = read_stamps(ds, fields=fields)
    tr = {k: v[::man["n_transforms"]][:args.train_rows] for k, v in tr.items()}
    res = {"command": "python benchmarks/flowvae_real_heldout.py " + " ".join(
        argv if argv is not None else sys.argv[1:]), "dataset": str(ds),
        "split": man["split"], "catalog": man["catalog"], "models": {}}
    recon = {}
    for label, spec in (("real_trained", args.real), ("sim_trained", args.sim)):
        _, model, _, _, desc = load_any(f"{label}={spec}")
        entry = {"model": desc}
        for split, data in (("holdout", hold), ("train", tr)):
            ps = per_stamp(model, data)
            entry[split] = {k: summary(v) for k, v in ps.items()}
        z = model.encode(hold["observed"])
        recon[label] = np.asarray(model.decode(z), np.float64)
        res["models"][label] = entry
        print(label, json.dumps({s: {k: round(entry[s][k]["mean"], 1) for k in
                                     ("loss", "delta_loglik", "kl")} for s in
                                 ("holdout", "train")}), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "real_heldout.json").write_text(json.dumps(res, indent=1))

    n = min(8, len(hold["observed"]))
    rows = [("held-out stamp", hold["observed"])]
    for label in recon:
        rows.append((f"{label}\n(x PSF)", np.asarray(convolve(
            recon[label].astype(np.float32), hold["psf"]))))
        rows.append((f"{label}\nPSF-free", recon[label]))
    fig, axes = plt.subplots(len(rows), n, figsize=(2 * n, 2 * len(rows)))
    for r, (lab, st) in enumerate(rows):
        for j in range(n):
            ref = hold["observed"][j].max()
            a = np.asarray(st[j]) / (ref if r == 0 or "PSF)" in lab else st[j].max())
            axes[r, j].imshow(np.log10(np.clip(a, 1e-3, None)), vmin=-3, vmax=0,
                              cmap="magma", origin="lower")
            axes[r, j].set_xticks([])
            axes[r, j].set_yticks([])
        axes[r, 0].set_ylabel(lab, fontsize=7)
    fig.suptitle("held-out real COSMOS galaxies, log10(pixel / peak), 3 decades")
    fig.tight_layout()
    fig.savefig(out / "real_heldout.png", dpi=80)
    plt.close(fig)
    return res


if __name__ == "__main__":
    main()
