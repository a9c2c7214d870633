"""Is the PM z = 0 power spectrum's deficit against halofit a mass-resolution effect?

Two convergence series of :class:`astrogen.nbody.ParticleMesh` runs (10 FastPM steps from
z = 9, force mesh 2x the particle grid, CAMB linear spectrum as input, fixed-amplitude and
paired initial conditions as in ``nbody_validate.py``), each compared with CAMB's halofit
(Takahashi et al. 2012):

A. **fixed box** (``--box``, default 128 Mpc/h) with ``--ns`` particles per side (default
   32 64 128): the *same* Gaussian field, drawn on the finest lattice and cut to the modes
   each coarser lattice holds (``|k_i| < k_Nyq``), so the runs share their phases and the
   ratios between them carry almost no cosmic variance. If the deficit at fixed k shrinks as
   n grows, it is mass (and force) resolution;
B. **fixed mean inter-particle spacing** (``--spacing``, default 2 Mpc/h): n = ``--ns`` in
   boxes ``n * spacing``. If the deficit is a function of ``k / k_Nyq`` alone, the box size
   (missing large-scale modes) plays no part;
C. **time integration and force mesh** at ``--nc`` (default 64) particles per side in the
   series-A box, same phases: 10, 20 and 40 steps, a start at z = 19 instead of 9, and a
   force mesh 3x finer than the particle grid instead of 2x;
D. **realisations**: ``--nd`` (default 4) more paired fixed-amplitude 64^3 boxes of the
   series-A size with other seeds, for the scatter of P / halofit between boxes.

Two references: CAMB halofit (Takahashi et al. 2012) and CAMB HMcode-2020 (Mead et al.
2021, arXiv:2009.01858), whose own stated accuracies are ~5 % and ~2.5 % at k < 1 h/Mpc.

Every z = 0 P(k) is measured on one 2n_max-per-box-side mesh per box (CIC deconvolved, no
shot-noise subtraction: the particles start on a lattice). Writes ``nbody_convergence.json``
and ``nbody_convergence.png`` under ``--out``.

    python benchmarks/nbody_convergence.py                    # ~10 min on 2 cores
    python benchmarks/nbody_convergence.py --ns 32 64 128 256  # 256^3: ~4 GB, much longer

Needs ``camb`` and ``matplotlib``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "benchmarks"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from astrogen.cosmology import Cosmology, LinearPower, gaussian_field  # noqa: E402
from astrogen.nbody import ParticleMesh, measure_power, paint_density  # noqa: E402
from astrogen.nbody.power_spectrum import binned_model  # noqa: E402
from nbody_validate import camb_spectra  # noqa: E402


def camb_nonlinear(cosmo, version: str, kmax: float = 5.0):
    """CAMB nonlinear P(k, z=0) for ``cosmo`` (sigma8-matched, massless neutrinos) with the
    given ``halofit_version``; returns k [h/Mpc], P [(Mpc/h)^3]."""
    import camb

    h = cosmo.h

    def params(As):
        pars = camb.CAMBparams()
        pars.set_cosmology(H0=100 * h, ombh2=cosmo.Ob0 * h * h, omch2=cosmo.Oc0 * h * h,
                           mnu=0.0, num_massive_neutrinos=0, omk=0.0, TCMB=cosmo.Tcmb0)
        pars.InitPower.set_params(As=As, ns=cosmo.n_s)
        pars.set_matter_power(redshifts=[0.0], kmax=kmax * h * 1.2)
        return pars

    s8 = camb.get_results(params(2.1e-9)).get_sigma8_0()
    pars = params(2.1e-9 * (cosmo.sigma8 / s8) ** 2)
    pars.NonLinear = camb.model.NonLinear_pk
    pars.NonLinearModel.set_params(halofit_version=version)
    k, _, pnl = camb.get_results(pars).get_matter_power_spectrum(minkh=1e-4, maxkh=kmax,
                                                                 npoints=400)
    return k, pnl[0]


def degrade(delta: np.ndarray, n: int) -> np.ndarray:
    """The Fourier modes of ``delta`` (n_hi^3) that an ``n^3`` lattice holds, on that lattice.

    Keeps ``|k_i| < k_Nyq(n)`` on every axis (the Nyquist planes of the coarse grid are set to
    zero); same ``P(k)`` convention (``|delta_k|^2 V / N^2``), so the shared modes have the
    same amplitude and phase.
    """
    nh = delta.shape[0]
    if n == nh:
        return delta.copy()
    dk = np.fft.rfftn(delta)
    h = n // 2
    src = np.r_[0:h, nh - h + 1:nh]
    dst = np.r_[0:h, n - h + 1:n]
    out = np.zeros((n, n, h + 1), dtype=complex)
    out[np.ix_(dst, dst, np.arange(h))] = dk[np.ix_(src, src, np.arange(h))]
    return np.fft.irfftn(out * (n / nh) ** 3, s=(n,) * 3, axes=(0, 1, 2))


def run_pair(n, L, cosmo, power, delta, steps, mesh_factor, n_measure, k_edges, a_init=0.1):
    """Paired runs (delta and -delta) of an n^3 box; mean P(k, z=0) on an n_measure^3 mesh."""
    pm = ParticleMesh(n, L, cosmo, power=power, mesh_factor=mesh_factor, a_init=a_init,
                      n_steps=steps)
    pk, t0 = [], time.time()
    for sign in (1.0, -1.0):
        res = pm.run(a_out=[1.0], delta_linear=sign * delta)
        d = paint_density(res.snapshots[-1].positions, L, n_measure)
        pk.append(measure_power(d, L, k_edges=k_edges, deconvolve_cic=True))
    return pk[0].k, np.mean([p.power for p in pk], axis=0), pk[0].n_modes, time.time() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ns", type=int, nargs="+", default=[32, 64, 128],
                    help="particles per side")
    ap.add_argument("--box", type=float, default=128.0, help="series A box side, Mpc/h")
    ap.add_argument("--spacing", type=float, default=2.0,
                    help="series B mean inter-particle spacing, Mpc/h")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--mesh-factor", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--skip-b", action="store_true", help="no series B")
    ap.add_argument("--nc", type=int, default=64, help="particles per side of series C "
                    "(0: no series C)")
    ap.add_argument("--nd", type=int, default=4, help="realisations of series D (0: none)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/nbody_convergence"))
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ns = sorted(args.ns)
    cosmo = Cosmology()
    k_c, plin_c, pnl_c, s8 = camb_spectra(cosmo)
    power = LinearPower.from_arrays(k_c, plin_c, cosmo)

    def halofit(k):
        return np.exp(np.interp(np.log(k), np.log(k_c), np.log(pnl_c)))

    k_m, p_m = camb_nonlinear(cosmo, "mead2020")

    def hmcode(k):
        return np.exp(np.interp(np.log(k), np.log(k_m), np.log(p_m)))

    summary = {"args": vars(args), "camb_sigma8": s8, "A_fixed_box": {}, "B_fixed_spacing": {},
               "C_numerics": {}}

    # ---- A: fixed box, shared phases
    L = args.box
    nmax = ns[-1]
    n_meas = 2 * nmax
    kf = 2 * np.pi / L
    k_edges = np.arange(0.5 * kf, np.pi * n_meas / L, kf)
    base = gaussian_field(nmax, L, power, seed=args.seed, fixed_amplitude=True)
    hf_a = None
    for n in ns:
        k, p, nm, dt = run_pair(n, L, cosmo, power, degrade(base, n), args.steps,
                                args.mesh_factor, n_meas, k_edges)
        if hf_a is None:
            hf_a = binned_model(halofit, n_meas, L, k_edges)[:len(k)]
            hm_a = binned_model(hmcode, n_meas, L, k_edges)[:len(k)]
            lin_a = binned_model(power, n_meas, L, k_edges)[:len(k)]
        summary["A_fixed_box"][str(n)] = {
            "box": L, "k_nyq": np.pi * n / L, "k": k.tolist(), "P": p.tolist(),
            "P_halofit": hf_a.tolist(), "P_hmcode2020": hm_a.tolist(), "P_lin": lin_a.tolist(),
            "n_modes": nm.tolist(), "time_s": dt}
        print(f"A: n = {n:4d}^3 in {L:g} Mpc/h ({L / n:.2f} Mpc/h spacing): {dt:.0f} s")

    # ---- B: fixed spacing
    if not args.skip_b:
        for n in ns:
            Lb = n * args.spacing
            kfb = 2 * np.pi / Lb
            kb_edges = np.arange(0.5 * kfb, np.pi * 2 * n / Lb, kfb)
            delta = gaussian_field(n, Lb, power, seed=args.seed + 1, fixed_amplitude=True)
            k, p, nm, dt = run_pair(n, Lb, cosmo, power, delta, args.steps, args.mesh_factor,
                                    2 * n, kb_edges)
            hf = binned_model(halofit, 2 * n, Lb, kb_edges)[:len(k)]
            summary["B_fixed_spacing"][str(n)] = {
                "box": Lb, "k_nyq": np.pi * n / Lb, "k": k.tolist(), "P": p.tolist(),
                "P_halofit": hf.tolist(), "n_modes": nm.tolist(), "time_s": dt}
            print(f"B: n = {n:4d}^3 in {Lb:g} Mpc/h: {dt:.0f} s")

    # ---- C: time steps, start, force mesh at one resolution, series-A phases
    if args.nc:
        nc = args.nc
        dc = degrade(base, nc)
        for label, st, mf, a0 in (("10 steps", args.steps, args.mesh_factor, 0.1),
                                  ("20 steps", 2 * args.steps, args.mesh_factor, 0.1),
                                  ("40 steps", 4 * args.steps, args.mesh_factor, 0.1),
                                  ("z_init 19", args.steps, args.mesh_factor, 0.05),
                                  ("force mesh x3", args.steps, 3, 0.1)):
            k, p, nm, dt = run_pair(nc, L, cosmo, power, dc, st, mf, n_meas, k_edges, a0)
            summary["C_numerics"][label] = {"n": nc, "n_steps": st, "mesh_factor": mf,
                                            "a_init": a0, "k": k.tolist(), "P": p.tolist(),
                                            "time_s": dt}
            print(f"C: {nc}^3, {label}: {dt:.0f} s")

    # ---- D: other realisations of the series-A box at 64^3
    d_ratios, d_lin = [], []
    hf_d = lin_d = None
    for i in range(args.nd):
        delta = gaussian_field(64, L, power, seed=args.seed + 100 + i, fixed_amplitude=True)
        k, p, nm, dt = run_pair(64, L, cosmo, power, delta, args.steps, args.mesh_factor, 128,
                                k_edges[k_edges < np.pi * 128 / L])
        if hf_d is None:
            kd_edges = k_edges[k_edges < np.pi * 128 / L]
            hf_d = binned_model(halofit, 128, L, kd_edges)[:len(k)]
            lin_d = binned_model(power, 128, L, kd_edges)[:len(k)]
            k_d = k
        d_ratios.append(p / hf_d)
        d_lin.append(float(np.mean((p / lin_d)[k < max(0.07, 2.6 * kf)])))
        print(f"D: 64^3 in {L:g} Mpc/h, seed {args.seed + 100 + i}: {dt:.0f} s")
    if args.nd:
        r = np.array(d_ratios)
        sel = k_d < 0.39
        summary["D_realisations"] = {
            "k": k_d.tolist(), "ratio_halofit": r.tolist(), "P_over_Plin_linear_scales": d_lin,
            "seeds": [args.seed + 100 + i for i in range(args.nd)],
            "mean_ratio_at_k": {str(q): float(np.interp(q, k_d, r.mean(0))) for q in
                                (0.1, 0.2, 0.3, 0.39)},
            "std_ratio_at_k": {str(q): float(np.interp(q, k_d, r.std(0, ddof=1))) for q in
                               (0.1, 0.2, 0.3, 0.39)} if args.nd > 1 else None,
            "worst_dev_per_box_k_lt_0.39": np.max(np.abs(r[:, sel] - 1), axis=1).tolist(),
            "worst_dev_of_mean_k_lt_0.39": float(np.max(np.abs(r.mean(0)[sel] - 1)))}

    # ---- tables
    kq = [0.1, 0.2, 0.3, 0.39]
    print("\nA. P_PM / P_halofit at fixed k (same phases), box "
          f"{L:g} Mpc/h; '-' above the run's k_Nyq/2")
    print("   n    spacing  " + "  ".join(f"k={q:<5g}" for q in kq) +
          "  max|r-1| k<k_Nyq(n)/4  max|r-1| k<0.39  (HMcode: max|r-1| k<0.39)")
    rows = {}
    for n in ns:
        r = summary["A_fixed_box"][str(n)]
        k, ratio = np.array(r["k"]), np.array(r["P"]) / np.array(r["P_halofit"])
        at = [float(np.interp(q, k, ratio)) if q <= r["k_nyq"] / 2 else None for q in kq]
        own = k < r["k_nyq"] / 4
        fixed = k < 0.39
        ratio_hm = np.array(r["P"]) / np.array(r["P_hmcode2020"])
        rows[str(n)] = {"ratio_at_k": dict(zip(map(str, kq), at)),
                        "hmcode_ratio_at_k": {str(q): float(np.interp(q, k, ratio_hm))
                                              for q in kq if q <= r["k_nyq"] / 2},
                        "hmcode_max_dev_k_lt_0.39": (float(np.max(np.abs(ratio_hm[fixed] - 1)))
                                                     if 0.39 <= r["k_nyq"] / 2 else None),
                        "max_dev_k_lt_knyq_over_4": float(np.max(np.abs(ratio[own] - 1))),
                        "max_dev_k_lt_0.39": (float(np.max(np.abs(ratio[fixed] - 1)))
                                              if 0.39 <= r["k_nyq"] / 2 else None)}
        cells = "  ".join(f"{a:7.3f}" if a is not None else "      -" for a in at)
        fx = rows[str(n)]["max_dev_k_lt_0.39"]
        hx = rows[str(n)]["hmcode_max_dev_k_lt_0.39"]
        print(f"  {n:4d}  {L / n:6.2f}   {cells}   {rows[str(n)]['max_dev_k_lt_knyq_over_4']:7.3f}"
              f"               {'-' if fx is None else f'{fx:.3f}'}"
              f"            {'-' if hx is None else f'{hx:.3f}'}")
    summary["A_table"] = rows
    # the finest run as the reference: P_n / P_nmax (cosmic variance cancels)
    ref = summary["A_fixed_box"][str(nmax)]
    for n in ns[:-1]:
        r = summary["A_fixed_box"][str(n)]
        m = len(r["k"])
        rel = np.array(r["P"]) / np.array(ref["P"])[:m]
        k = np.array(r["k"])
        at = {str(q): float(np.interp(q, k, rel)) for q in kq if q <= r["k_nyq"] / 2}
        summary["A_table"][str(n)]["P_over_P_finest"] = at
        print(f"  P_{n}/P_{nmax}: " + ", ".join(f"k={q}: {v:.3f}" for q, v in at.items()))
    lo = np.array(summary["A_fixed_box"][str(nmax)]["k"]) < max(0.07, 2.6 * kf)
    plin = np.array(summary["A_fixed_box"][str(nmax)]["P_lin"])
    summary["A_large_scale_P_over_Plin"] = {
        str(n): float(np.mean(np.array(summary["A_fixed_box"][str(n)]["P"])[lo] / plin[lo]))
        for n in ns}
    print(f"  P_PM / P_lin for k < {max(0.07, 2.6 * kf):.3f} h/Mpc (linear scales): " + ", ".join(
        f"{n}^3: {v:.4f}" for n, v in summary["A_large_scale_P_over_Plin"].items()))
    if summary["C_numerics"]:
        ref_c = np.array(summary["C_numerics"]["10 steps"]["P"])
        hf_c = np.array(summary["A_fixed_box"][str(ns[0])]["P_halofit"])
        print(f"\nC. {args.nc}^3 in {L:g} Mpc/h, same phases: P / P_halofit (P / P_10 steps)")
        tc = {}
        for label, r in summary["C_numerics"].items():
            k, pp = np.array(r["k"]), np.array(r["P"])
            at = {str(q): float(np.interp(q, k, pp / hf_c[:len(k)])) for q in kq}
            rel = {str(q): float(np.interp(q, k, pp / ref_c[:len(k)])) for q in kq}
            tc[label] = {"ratio_halofit_at_k": at, "P_over_P10steps_at_k": rel}
            print(f"  {label:14s} " + "  ".join(f"k={q}: {at[str(q)]:.3f} ({rel[str(q)]:.3f})"
                                              for q in kq))
        summary["C_table"] = tc
    if "D_realisations" in summary:
        dd = summary["D_realisations"]
        print(f"\nD. {args.nd} more 64^3 boxes of {L:g} Mpc/h: P / P_halofit mean"
              + (" +- std" if args.nd > 1 else ""))
        print("  " + "  ".join(
            f"k={q}: {dd['mean_ratio_at_k'][q]:.3f}" +
            (f" +- {dd['std_ratio_at_k'][q]:.3f}" if dd["std_ratio_at_k"] else "")
            for q in dd["mean_ratio_at_k"]))
        print("  worst |r-1| per box, k < 0.39: " + ", ".join(
            f"{v:.3f}" for v in dd["worst_dev_per_box_k_lt_0.39"]) +
            f"; of the mean: {dd['worst_dev_of_mean_k_lt_0.39']:.3f}")
        print("  P / P_lin on linear scales per box: " + ", ".join(
            f"{v:.4f}" for v in dd["P_over_Plin_linear_scales"]))
    if summary["B_fixed_spacing"]:
        print(f"\nB. fixed spacing {args.spacing:g} Mpc/h: P_PM / P_halofit at k / k_Nyq")
        fr = [0.05, 0.1, 0.15, 0.25]
        print("   n     box   " + "  ".join(f"k/kN={f:<5g}" for f in fr) + "  max|r-1| k<k_Nyq/4")
        tb = {}
        for n in ns:
            r = summary["B_fixed_spacing"][str(n)]
            k, ratio = np.array(r["k"]), np.array(r["P"]) / np.array(r["P_halofit"])
            x = k / r["k_nyq"]
            at = [float(np.interp(f, x, ratio)) if f >= x[0] else None for f in fr]
            dev = float(np.max(np.abs(ratio[x < 0.25] - 1)))
            tb[str(n)] = {"ratio_at_k_over_knyq": dict(zip(map(str, fr), at)),
                          "max_dev_k_lt_knyq_over_4": dev}
            cells = "  ".join(f"{a:10.3f}" if a is not None else "         -" for a in at)
            print(f"  {n:4d}  {r['box']:6g}  {cells}   {dev:7.3f}")
        summary["B_table"] = tb
    (out / "nbody_convergence.json").write_text(json.dumps(summary, indent=1))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    npan = 3 if summary["B_fixed_spacing"] else 2
    fig, ax = plt.subplots(1, npan, figsize=(5.2 * npan, 4.3))
    for n in ns:
        r = summary["A_fixed_box"][str(n)]
        k = np.array(r["k"])
        sel = k <= r["k_nyq"]
        ratio = np.array(r["P"]) / np.array(r["P_halofit"])
        (line,) = ax[0].semilogx(k[sel], ratio[sel], "-", label=f"{n}$^3$ ({L / n:g} Mpc/h)")
        ax[0].axvline(r["k_nyq"] / 4, color=line.get_color(), ls=":", lw=1)
        if n != nmax:
            m = len(k)
            ax[1].semilogx(k[sel], (np.array(r["P"]) / np.array(ref["P"])[:m])[sel], "-",
                           color=line.get_color(), label=f"{n}$^3$ / {nmax}$^3$")
            ax[1].axvline(r["k_nyq"] / 4, color=line.get_color(), ls=":", lw=1)
    rr = summary["A_fixed_box"][str(nmax)]
    kk = np.array(rr["k"])
    s_ = kk <= rr["k_nyq"]
    ax[0].semilogx(kk[s_], (np.array(rr["P"]) / np.array(rr["P_hmcode2020"]))[s_], "k--", lw=1,
                   label=f"{nmax}$^3$ / HMcode-2020")
    if summary["C_numerics"]:
        for label in ("40 steps", "force mesh x3"):
            r = summary["C_numerics"][label]
            kk = np.array(r["k"])
            s_ = kk <= np.pi * r["n"] / L
            ax[0].semilogx(kk[s_], (np.array(r["P"]) / hf_a[:len(kk)])[s_], ":", lw=1.5,
                           label=f"{r['n']}$^3$, {label}")
    ax[0].axhspan(0.95, 1.05, color="0.9")
    ax[0].set(xlabel="k [h/Mpc]", ylabel="P_PM / P_halofit", ylim=(0.4, 1.2),
              title=f"A: box {L:g} Mpc/h, same phases (dotted: k_Nyq/4)")
    ax[1].axhspan(0.98, 1.02, color="0.9")
    ax[1].set(xlabel="k [h/Mpc]", ylabel=f"P_n / P_{nmax}", ylim=(0.4, 1.1),
              title="A: against the finest run")
    for a in ax[:2]:
        a.legend(fontsize=8)
    if npan == 3:
        for n in ns:
            r = summary["B_fixed_spacing"][str(n)]
            k = np.array(r["k"])
            x = k / r["k_nyq"]
            ratio = np.array(r["P"]) / np.array(r["P_halofit"])
            ax[2].semilogx(x[x <= 1], ratio[x <= 1], "-", label=f"{n}$^3$ in {r['box']:g} Mpc/h")
        ax[2].axvline(0.25, color="gray", ls=":")
        ax[2].axhspan(0.95, 1.05, color="0.9")
        ax[2].set(xlabel="k / k_Nyq", ylabel="P_PM / P_halofit", ylim=(0.4, 1.2),
                  title=f"B: fixed spacing {args.spacing:g} Mpc/h")
        ax[2].legend(fontsize=8)
    fig.suptitle(f"astrogen PM, z = 0, {args.steps} steps, force mesh x{args.mesh_factor}, "
                 "paired fixed-amplitude ICs")
    fig.tight_layout()
    fig.savefig(out / "nbody_convergence.png", dpi=110)
    print(f"\nwrote {out / 'nbody_convergence.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
