"""Displacement emulator (D3M) vs the PM code vs 2LPT on held-out boxes, same run.

Held-out boxes are split ``test`` of :mod:`astrogen.datasets.nbody_displacements` (their seeds
never occur in training), here with ``--n-particles`` per side in ``--box-size`` Mpc/h (the
lattice spacing must be the model's, 2 Mpc/h; the network is fully convolutional and
periodic, so a box larger than the 32^3 training boxes is fine and gives more haloes and
modes). Reference: the PM code with the training set's settings (2LPT at z = 9, 20 steps,
force mesh 2x). Compared on the same initial conditions at z = 0:

* the emulator (Zel'dovich displacement -> network);
* 2LPT and 1LPT (Zel'dovich) at z = 0 (the baselines);
* the PM code with fewer steps (``--pm-steps``), to find the step count that reaches the
  emulator's accuracy, timed in the same run.

Measured: T(k) = sqrt(P_x / P_PM) and r(k) = P_x,PM / sqrt(P_x P_PM) of the CIC density on the
particle grid, up to the particle Nyquist wavenumber; rms displacement error per particle
(Mpc/h); FoF (b = 0.2) mass functions (ratio to PM in bins above 100 particles); wall time
for the particles (one thread each: PM FFT workers = 1, TF intra-op threads = 1).

    python benchmarks/nbody_d3m_benchmark.py --model output/models/d3m_32.keras

writes ``benchmarks/results/nbody_d3m/{results.json, summary.md, slices.png, power.png,
mass_function.png}``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")
os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def power_stats(d_x, d_ref, L):
    from astrogen.nbody.power_spectrum import measure_power

    n = d_ref.shape[0]
    kf = 2 * np.pi / L
    edges = np.arange(0.5 * kf, np.pi * n / L + kf, kf)
    p_x = measure_power(d_x, L, edges)
    p_r = measure_power(d_ref, L, edges)
    p_s = measure_power(d_x + d_ref, L, edges)
    cross = 0.5 * (p_s.power - p_x.power - p_r.power)
    return p_r.k, p_x.power, p_r.power, cross, p_r.n_modes


def fof_masses(pos, L, n, cosmo):
    from astrogen.nbody.fof import friends_of_friends, particle_mass

    mp = particle_mass(cosmo.Om0, L, n ** 3)
    t = friends_of_friends(pos, L, linking_length=0.2, min_members=20,
                           particle_mass_msun_h=mp)
    return np.asarray(t["n_particles"], int), mp


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(ROOT / "astrogen/data/models/d3m_32.keras"))
    ap.add_argument("--n-boxes", type=int, default=4)
    ap.add_argument("--n-particles", type=int, default=64)
    ap.add_argument("--box-size", type=float, default=128.0)
    ap.add_argument("--pm-steps", default="2,3,4,5,7,10")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/nbody_d3m"))
    args = ap.parse_args(argv)

    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from astrogen.cosmology.initial import lattice, lpt_particles
    from astrogen.datasets.nbody_displacements import (DisplacementDatasetConfig, linear_field,
                                                       make_pm, minimal_image)
    from astrogen.models.d3m import load_d3m
    from astrogen.nbody.mesh import paint_density
    from astrogen.stages.nbody_displace import emulate_particles

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = load_d3m(args.model)
    mm = model.meta
    n, L = args.n_particles, args.box_size
    cfg = DisplacementDatasetConfig(n_boxes=args.n_boxes, split="test", seed=0,
                                    n_particles=n, box_size=L, redshift=float(mm["redshift"]),
                                    z_init=float(mm["z_init"]), n_steps=int(mm["pm_n_steps"]),
                                    force_resolution=int(mm["force_resolution"]),
                                    **mm["cosmology"])
    if not np.isclose(cfg.cell_size, mm["cell_size"]):
        raise SystemExit(f"lattice spacing {cfg.cell_size} != model's {mm['cell_size']}")
    cosmo = cfg.cosmology()
    a = 1.0 / (1.0 + cfg.redshift)
    steps = [int(s) for s in args.pm_steps.split(",")]
    pm_ref = make_pm(cfg, workers=1)
    shift = pm_ref.lattice_shift
    q = lattice(n, L, 3, shift=shift)
    methods = ["emulator", "2lpt", "1lpt"] + [f"pm{s}" for s in steps]
    acc = {m: {"T": [], "r": [], "disp_rms": [], "time_s": [], "npart_halos": []}
           for m in methods}
    ref = {"time_s": [], "npart_halos": [], "P": []}
    slices = None
    # warm-up: trace the network once (not timed)
    model.predict(np.zeros((3, n, n, n), np.float32))
    for b in range(args.n_boxes):
        delta = linear_field(cfg, b)
        t0 = time.perf_counter()
        snap = pm_ref.run(a_out=[a], delta_linear=delta).snapshots[-1]
        ref["time_s"].append(time.perf_counter() - t0)
        pos_ref = snap.positions
        disp_ref = minimal_image(pos_ref - q, L)
        d_ref = paint_density(pos_ref, L, n)
        npart, mp = fof_masses(pos_ref, L, n, cosmo)
        ref["npart_halos"].append(npart.tolist())
        positions = {}
        t0 = time.perf_counter()
        emu = emulate_particles(model, delta, L, cosmo, a)
        acc["emulator"]["time_s"].append(time.perf_counter() - t0)
        positions["emulator"] = emu["positions"]
        for order in (2, 1):
            t0 = time.perf_counter()
            p, _ = lpt_particles(delta, L, cosmo, a, order=order, shift=shift)
            acc[f"{order}lpt"]["time_s"].append(time.perf_counter() - t0)
            positions[f"{order}lpt"] = p
        for s in steps:
            pm = make_pm(cfg, n_steps=s, workers=1)
            t0 = time.perf_counter()
            positions[f"pm{s}"] = pm.run(a_out=[a], delta_linear=delta).snapshots[-1].positions
            acc[f"pm{s}"]["time_s"].append(time.perf_counter() - t0)
        for m in methods:
            pos = positions[m]
            d = paint_density(pos, L, n)
            k, px, pr, cross, nmodes = power_stats(d, d_ref, L)
            acc[m]["T"].append(np.sqrt(px / pr).tolist())
            acc[m]["r"].append((cross / np.sqrt(px * pr)).tolist())
            err = minimal_image(pos - q, L) - disp_ref
            acc[m]["disp_rms"].append(float(np.sqrt(np.mean(np.sum(err ** 2, axis=1)))))
            acc[m]["npart_halos"].append(fof_masses(pos, L, n, cosmo)[0].tolist())
        ref["P"].append(pr.tolist())
        if b == 0:
            slices = {"PM (20 steps)": d_ref,
                      "D3M emulator": paint_density(positions["emulator"], L, n),
                      "2LPT": paint_density(positions["2lpt"], L, n)}
        print(f"box {b}: PM {ref['time_s'][-1]:.2f} s, emulator "
              f"{acc['emulator']['time_s'][-1]:.2f} s, disp rms emu "
              f"{acc['emulator']['disp_rms'][-1]:.3f} / 2LPT {acc['2lpt']['disp_rms'][-1]:.3f}"
              f" Mpc/h", flush=True)

    knyq = np.pi * n / L
    half = k <= 0.5 * knyq
    summary = {}
    for m in methods:
        T = np.mean(acc[m]["T"], axis=0)
        r = np.mean(acc[m]["r"], axis=0)
        summary[m] = {"max_abs_T_minus_1_half_nyq": float(np.max(np.abs(T[half] - 1))),
                      "max_1_minus_r_half_nyq": float(np.max(1 - r[half])),
                      "max_abs_T_minus_1_nyq": float(np.max(np.abs(T - 1))),
                      "max_1_minus_r_nyq": float(np.max(1 - r)),
                      "disp_rms_mpc_h": float(np.mean(acc[m]["disp_rms"])),
                      "time_s_per_box": float(np.median(acc[m]["time_s"])),
                      "T": T.tolist(), "r": r.tolist()}
    t_pm_ref = float(np.median(ref["time_s"]))
    e = summary["emulator"]
    for m in methods:
        s = summary[m]
        s["time_vs_pm20"] = s["time_s_per_box"] / t_pm_ref
        s["time_vs_emulator"] = s["time_s_per_box"] / e["time_s_per_box"]
    # the fewest PM steps as accurate as the emulator (both power errors and the
    # displacement error no larger)
    matching = [s for s in steps if
                summary[f"pm{s}"]["max_abs_T_minus_1_half_nyq"] <= e["max_abs_T_minus_1_half_nyq"]
                and summary[f"pm{s}"]["max_1_minus_r_half_nyq"] <= e["max_1_minus_r_half_nyq"]
                and summary[f"pm{s}"]["disp_rms_mpc_h"] <= e["disp_rms_mpc_h"]]
    match = min(matching) if matching else None

    # FoF mass function, bins above 100 particles
    edges = np.array([100, 141, 200, 400, 10 ** 6])
    h_ref = np.histogram(np.concatenate(ref["npart_halos"]), edges)[0]
    mf = {"edges_particles": edges.tolist(), "particle_mass_msun_h": mp,
          "pm20_counts": h_ref.tolist()}
    for m in ("emulator", "2lpt", "1lpt") + ((f"pm{match}",) if match else ()):
        h = np.histogram(np.concatenate(acc[m]["npart_halos"]), edges)[0]
        mf[m] = {"counts": h.tolist(),
                 "ratio": [float(x / y) if y else None for x, y in zip(h, h_ref)]}
    twolpt = summary["2lpt"]
    res = {"model": str(args.model), "model_meta": {k: mm[k] for k in (
               "n_particles", "box_size", "cell_size", "redshift", "pm_n_steps")},
           "model_training": mm.get("training"),
           "held_out": {"split": "test", "n_boxes": args.n_boxes, "n_particles": n,
                        "box_size_mpc_h": L},
           "k_h_mpc": k.tolist(), "k_nyquist": knyq, "n_modes": nmodes.tolist(),
           "pm_reference": {"n_steps": cfg.n_steps, "time_s_per_box": t_pm_ref,
                            "P_mean": np.mean(ref["P"], axis=0).tolist()},
           "summary": summary, "pm_steps_matching_emulator": match,
           "error_ratio_2lpt_over_emulator": {
               "T": twolpt["max_abs_T_minus_1_half_nyq"] / e["max_abs_T_minus_1_half_nyq"],
               "1-r": twolpt["max_1_minus_r_half_nyq"] / e["max_1_minus_r_half_nyq"],
               "disp_rms": twolpt["disp_rms_mpc_h"] / e["disp_rms_mpc_h"]},
           "mass_function": mf,
           "threads": "1 (PM FFT workers = 1, TF intra/inter-op = 1)",
           "command": "python benchmarks/nbody_d3m_benchmark.py " + " ".join(
               argv if argv is not None else sys.argv[1:])}
    (out / "results.json").write_text(json.dumps(res, indent=1) + "\n")

    lines = [f"# D3M emulator vs PM (20 steps) on {args.n_boxes} held-out boxes of {n}^3 in "
             f"{L:g} Mpc/h, z = {cfg.redshift:g}", "",
             f"k_Nyq = {knyq:.3f} h/Mpc; errors over k <= k_Nyq/2 = {0.5 * knyq:.3f} h/Mpc "
             "(and up to k_Nyq).", "",
             "| method | max abs(T-1) k<=kN/2 | max 1-r k<=kN/2 | max abs(T-1) k<=kN | "
             "max 1-r k<=kN | disp rms (Mpc/h) | time/box (s) | time / emulator |",
             "|---|---|---|---|---|---|---|---|"]
    for m in methods:
        s = summary[m]
        lines.append(f"| {m} | {s['max_abs_T_minus_1_half_nyq']:.4f} | "
                     f"{s['max_1_minus_r_half_nyq']:.4f} | {s['max_abs_T_minus_1_nyq']:.4f} | "
                     f"{s['max_1_minus_r_nyq']:.4f} | {s['disp_rms_mpc_h']:.3f} | "
                     f"{s['time_s_per_box']:.3f} | {s['time_vs_emulator']:.2f} |")
    lines += ["", f"PM 20 steps (reference): {t_pm_ref:.3f} s/box = "
              f"{t_pm_ref / e['time_s_per_box']:.2f}x the emulator.",
              f"Fewest PM steps at least as accurate as the emulator (T, r, displacement): "
              f"{match}.", "",
              "2LPT error / emulator error: " + ", ".join(
                  f"{k2} {v:.2f}" for k2, v in res["error_ratio_2lpt_over_emulator"].items()),
              "", "FoF haloes per bin of particle number " + str(edges.tolist()) +
              f" (PM: {h_ref.tolist()}):"]
    for m in mf:
        if isinstance(mf[m], dict):
            lines.append(f"- {m}: {mf[m]['counts']} ratio "
                         f"{[None if x is None else round(x, 3) for x in mf[m]['ratio']]}")
    lines += ["", "Command: `" + res["command"] + "`"]
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    plots(out, slices, k, knyq, summary, mf, edges, mp, L, n, match, args.n_boxes)


def plots(out, slices, k, knyq, summary, mf, edges, mp, L, n, match, n_boxes):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axs = plt.subplots(1, 3, figsize=(13, 4.4))
    th = max(1, n // 16)
    for ax, (name, d) in zip(axs, slices.items()):
        img = np.log10(np.maximum(1 + d[:, :, :th].mean(axis=2), 1e-2))
        ax.imshow(img.T, origin="lower", extent=[0, L, 0, L], vmin=-1, vmax=1.5, cmap="magma")
        ax.set_title(f"{name}: log10(1+delta), {th * L / n:g} Mpc/h slab")
        ax.set_xlabel("x [Mpc/h]")
    axs[0].set_ylabel("y [Mpc/h]")
    fig.tight_layout()
    fig.savefig(out / "slices.png", dpi=90)
    plt.close(fig)

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.4))
    show = ["emulator", "2lpt", "1lpt"] + ([f"pm{match}"] if match else [])
    for m in show:
        a1.plot(k, summary[m]["T"], label=m)
        a2.plot(k, 1 - np.asarray(summary[m]["r"]), label=m)
    for ax in (a1, a2):
        ax.axvline(0.5 * knyq, color="gray", ls=":", label="k_Nyq/2")
        ax.set_xscale("log")
        ax.set_xlabel("k [h/Mpc]")
        ax.legend()
    a1.axhspan(0.98, 1.02, color="green", alpha=0.15)
    a1.set_ylabel("T(k) = sqrt(P / P_PM)")
    a2.axhline(0.02, color="green", ls="--")
    a2.set_yscale("log")
    a2.set_ylabel("1 - r(k)")
    fig.suptitle(f"{n_boxes} held-out boxes, {n}^3 particles in {L:g} Mpc/h, z = 0, "
                 "reference PM 20 steps")
    fig.tight_layout()
    fig.savefig(out / "power.png", dpi=90)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4.4))
    mc = np.sqrt(edges[1:] * edges[:-1]) * mp
    mc[-1] = edges[-2] * mp * 1.5
    ax.step(mc, mf["pm20_counts"], where="mid", label="PM 20 steps", color="k")
    for m in ("emulator", "2lpt") + ((f"pm{match}",) if match else ()):
        ax.step(mc, mf[m]["counts"], where="mid", label=m)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("FoF mass [Msun/h] (>= 100 particles)")
    ax.set_ylabel(f"haloes per bin ({n_boxes} boxes)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "mass_function.png", dpi=90)
    plt.close(fig)


if __name__ == "__main__":
    main()
