"""Where should sampling start? Flux and size of DDIM stamps vs the first (noisiest) timestep.

    python benchmarks/ddpm_sampling_start.py --model ddpm_cosmos64            # shipped (v) model
    python benchmarks/ddpm_sampling_start.py --model run/eps_model.keras --label eps

For ``--n`` held-out rows of the training set (rows 19000+, never trained on), one DDIM
stamp per row is drawn for each starting point: the whole schedule, and ``max_timestep`` = the
last timestep whose ``alpha_bar`` is at least 1e-2, 3e-3, 1e-3, 3e-4. Measured on the PSF-free
stamps, against the row's catalog flux and its true (simulated) stamp: the median and the
median absolute deviation of (stamp flux / catalog flux), the median of
r50(generated) / r50(true) (circular, about the flux centroid), and the median |pixel| in the
6x6 corners over the catalog flux (residual noise). Writes
``benchmarks/results/ddpm/sampling_start_<label>.json``.
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
FLOORS = (None, 1e-2, 3e-3, 1e-3, 3e-4)


def r50(images: np.ndarray) -> np.ndarray:
    """Circular half-light radius (pixels) about the flux centroid of the positive light."""
    n = images.shape[-1]
    y, x = np.mgrid[:n, :n]
    out = []
    for im in images:
        f = np.clip(im, 0, None)
        tot = f.sum()
        if not tot > 0:
            out.append(np.nan)
            continue
        cy, cx = (f * y).sum() / tot, (f * x).sum() / tot
        r = np.hypot(y - cy, x - cx).ravel()
        order = np.argsort(r)
        out.append(r[order][np.searchsorted(np.cumsum(f.ravel()[order]), 0.5 * tot)])
    return np.array(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="ddpm_cosmos64")
    ap.add_argument("--label", default="shipped")
    ap.add_argument("--dataset", default=None, help="training set (default: the sidecar's)")
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "ddpm"))
    args = ap.parse_args(argv)

    from astrogen.datasets.galaxy_stamps import read_stamps
    from astrogen.models.ddpm_galaxy import condition_features, load_ddpm
    from astrogen.schedulers import DDIMSampler
    from astrogen.stages.ddpm import resolve_ddpm_model

    m = load_ddpm(resolve_ddpm_model(args.model))
    dataset = args.dataset or m.meta.get("training", {}).get("dataset")
    rows = slice(19000, 19000 + args.n)
    d = read_stamps(dataset, fields=("truth", "conditions"), rows=rows)
    feats = condition_features(d["conditions"])
    eps = m._guided(m.eps_model(16), feats, 1.0)
    flux = m.row_flux(d["conditions"][:, 0])
    r_true = r50(d["truth"])
    ab = m.schedule.alpha_bar
    results = []
    for floor in FLOORS:
        tmax = None if floor is None else int(np.nonzero(ab >= floor)[0].max())
        smp = DDIMSampler(m.schedule, args.steps, max_timestep=tmax)
        x = smp.sample(eps, (args.n, m.stamp_size, m.stamp_size, 1), cond=feats,
                       seed=np.arange(args.n, dtype=np.uint64) + args.seed)
        img = m.decode(x, d["conditions"][:, 0])
        fr = img.sum(axis=(1, 2)) / flux
        rr = r50(img) / r_true
        corner = np.median(np.abs(img[:, :6, :6]), axis=(1, 2)) / flux
        rec = {"min_alpha_bar": floor, "max_timestep": smp.max_timestep,
               "alpha_bar_start": float(ab[smp.max_timestep]),
               "flux_ratio_median": float(np.median(fr)),
               "flux_ratio_mad": float(np.median(np.abs(fr - np.median(fr)))),
               "r50_ratio_median": float(np.nanmedian(rr)),
               "corner_abs_over_flux_median": float(np.median(corner))}
        results.append(rec)
        print(json.dumps(rec), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"sampling_start_{args.label}.json"
    path.write_text(json.dumps({"model": str(args.model), "prediction":
                                getattr(m.network, "prediction", "eps"),
                                "training": m.meta.get("training"), "n_rows": args.n,
                                "rows": [rows.start, rows.stop], "sampler": "ddim",
                                "num_steps": args.steps, "seed": args.seed,
                                "command": "python benchmarks/ddpm_sampling_start.py "
                                + " ".join(sys.argv[1:] if argv is None else argv),
                                "results": results}, indent=2) + "\n")
    print("wrote", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
