"""Why the D3M emulator is less accurate on 128 Mpc/h held-out boxes than on 64 Mpc/h ones.

Both benchmark geometries have the training lattice spacing (2 Mpc/h: 32^3 in 64 Mpc/h, the
training boxes; 64^3 in 128 Mpc/h, the benchmark boxes), so the network sees the same cell
size and the same k range per cell, and it runs on the whole periodic box at once (no tiling:
fully convolutional, periodic padding). What differs is the box content. This script
measures, on held-out (split ``test``) boxes:

1. the Zel'dovich displacement the network gets: rms per component, and the part of it from
   the modes a 64 Mpc/h box cannot hold (``|k| < 2 pi / 64 h/Mpc``) — large-scale flows that
   move whole regions coherently;
2. the network's sensitivity to such a flow: a 64 Mpc/h test box whose input and PM target are
   both shifted by a uniform displacement ``c`` (a uniform flow only translates the particles,
   so an exact emulator would return the same error): rms displacement error and 1 - r(k) at
   the highest k <= k_Nyq/2 for ``|c|`` = 0, 1, 2, 4 Mpc/h;
3. the same for every ``--model`` given, so the shipped and a fine-tuned network compare.

    python benchmarks/nbody_d3m_gap.py --model astrogen/data/models/d3m_32.keras \\
        --model output/models/d3m_64.keras

writes ``benchmarks/results/nbody_d3m/gap/gap.json`` and prints a summary.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")
os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def large_scale_part(field: np.ndarray, box_size: float, k_max: float) -> np.ndarray:
    """The modes ``0 < |k| < k_max`` (h/Mpc) of a periodic field ``(3, n, n, n)``."""
    n = field.shape[-1]
    k1 = 2 * np.pi * np.fft.fftfreq(n, box_size / n)
    kz = 2 * np.pi * np.fft.rfftfreq(n, box_size / n)
    kk = np.sqrt(k1[:, None, None] ** 2 + k1[None, :, None] ** 2 + kz[None, None, :] ** 2)
    keep = (kk > 0) & (kk < k_max)
    return np.stack([np.fft.irfftn(np.fft.rfftn(f) * keep, s=f.shape) for f in field])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append", default=None)
    ap.add_argument("--n-small", type=int, default=4, help="64 Mpc/h test boxes (with PM)")
    ap.add_argument("--n-large", type=int, default=3, help="128 Mpc/h test boxes (no PM)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/nbody_d3m/gap"))
    args = ap.parse_args(argv)
    models = args.model or [str(ROOT / "astrogen/data/models/d3m_32.keras")]

    from astrogen.datasets.nbody_displacements import (DisplacementDatasetConfig, linear_field,
                                                       make_pm, minimal_image,
                                                       zeldovich_displacement_field)
    from astrogen.models.d3m import load_d3m
    from astrogen.nbody.mesh import paint_density
    from nbody_d3m_benchmark import power_stats

    nets = {m: load_d3m(m) for m in models}
    mm = next(iter(nets.values())).meta
    common = dict(split="test", seed=0, redshift=float(mm["redshift"]),
                  z_init=float(mm["z_init"]), n_steps=int(mm["pm_n_steps"]),
                  force_resolution=int(mm["force_resolution"]), **mm["cosmology"])
    a = 1.0 / (1.0 + float(mm["redshift"]))
    k_cut = 2 * np.pi / 64.0
    res = {"models": models, "k_cut_h_mpc": k_cut, "input": {}, "uniform_flow": {}}

    # 1. the input displacement, both geometries
    for n, L, nb in ((32, 64.0, args.n_small), (64, 128.0, args.n_large)):
        cfg = DisplacementDatasetConfig(n_boxes=nb, n_particles=n, box_size=L, **common)
        pm = make_pm(cfg)
        rms, rms_ls = [], []
        for b in range(nb):
            zel = zeldovich_displacement_field(linear_field(cfg, b), L, cfg.cosmology(), a,
                                               pm.lattice_shift).astype(np.float64)
            rms.append(float(np.sqrt(np.mean(zel ** 2))))
            rms_ls.append(float(np.sqrt(np.mean(large_scale_part(zel, L, k_cut) ** 2))))
        res["input"][f"{n}^3 in {L:g} Mpc/h"] = {
            "zeldovich_rms_per_component_mpc_h": float(np.mean(rms)),
            "of_which_modes_below_k_cut_rms_mpc_h": float(np.mean(rms_ls)), "n_boxes": nb}
        print(f"{n}^3 / {L:g} Mpc/h: Zel'dovich rms {np.mean(rms):.2f} Mpc/h per component, "
              f"modes |k| < {k_cut:.3f}: {np.mean(rms_ls):.2f}", flush=True)

    # 2. uniform flow on 64 Mpc/h boxes
    n, L = 32, 64.0
    cfg = DisplacementDatasetConfig(n_boxes=args.n_small, n_particles=n, box_size=L, **common)
    pm = make_pm(cfg)
    from astrogen.cosmology.initial import lattice

    q = lattice(n, L, 3, shift=pm.lattice_shift)
    knyq = np.pi * n / L
    unit = np.ones(3) / np.sqrt(3.0)
    shifts = [0.0, 1.0, 2.0, 4.0]
    acc = {m: {c: {"disp_rms": [], "r": []} for c in shifts} for m in models}
    for b in range(args.n_small):
        delta = linear_field(cfg, b)
        pos_ref = pm.run(a_out=[a], delta_linear=delta).snapshots[-1].positions
        disp_ref = minimal_image(pos_ref - q, L)
        zel = zeldovich_displacement_field(delta, L, cfg.cosmology(), a, pm.lattice_shift)
        for m, net in nets.items():
            for c in shifts:
                cv = (c * unit).astype(np.float32)
                disp = net.predict(zel + cv[:, None, None, None]) - cv[:, None, None, None]
                pos = np.mod(q + disp.reshape(3, -1).T.astype(np.float64), L)
                err = minimal_image(pos - q, L) - disp_ref
                k, px, pr, cross, _ = power_stats(paint_density(pos, L, n),
                                                  paint_density(pos_ref, L, n), L)
                acc[m][c]["disp_rms"].append(float(np.sqrt(np.mean(np.sum(err ** 2, 1)))))
                acc[m][c]["r"].append(cross / np.sqrt(px * pr))
        print(f"uniform-flow box {b} done", flush=True)
    half = k <= 0.5 * knyq
    kmax = float(k[half][-1])
    for m in models:
        res["uniform_flow"][m] = {}
        for c in shifts:
            r = np.mean(acc[m][c]["r"], axis=0)
            res["uniform_flow"][m][str(c)] = {
                "disp_rms_mpc_h": float(np.mean(acc[m][c]["disp_rms"])),
                "one_minus_r_at_k": float(1 - r[half][-1]),
                "max_one_minus_r_half_nyq": float(np.max(1 - r[half]))}
            v = res["uniform_flow"][m][str(c)]
            print(f"{Path(m).name}: |c| = {c:g} Mpc/h: disp rms {v['disp_rms_mpc_h']:.3f} Mpc/h,"
                  f" 1-r(k={kmax:.2f}) {v['one_minus_r_at_k']:.4f}")
    res["k_of_one_minus_r"] = kmax
    res["command"] = "python benchmarks/nbody_d3m_gap.py " + " ".join(
        argv if argv is not None else sys.argv[1:])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gap.json").write_text(json.dumps(res, indent=1) + "\n")
    print(f"wrote {out / 'gap.json'}")


if __name__ == "__main__":
    main()
