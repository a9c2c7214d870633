"""Validate the astrogen particle-mesh solver against CAMB halofit, linear growth and
halo mass-function fits.

Runs ``astrogen.nbody.ParticleMesh`` (FastPM scheme) on an ``n^3`` box, then

1. compares the z = 0 power spectrum with CAMB's halofit (Takahashi et al. 2012,
   arXiv:1208.2701) and prints the ratio table and ``max |ratio - 1|`` for
   ``k < k_Nyq / 4`` (``k_Nyq = pi n / L`` of the particle grid); CAMB's linear spectrum is
   also the input of the initial conditions so that only the N-body is tested;
2. measures the growth of the largest modes, ``delta_k(a) / delta_k(a_init)`` against
   ``D1(a) / D1(a_init)``;
3. runs the FoF finder (b = 0.2) and compares ``dn/dlnM`` with colossus' Tinker et al. (2008)
   (M200m) and Sheth & Tormen (1999) (FoF) fits, if colossus is installed;

and writes ``nbody_validate.json`` and ``nbody_validate.png`` under ``--out``.

    python benchmarks/nbody_validate.py --n 64 --box 128 --steps 10 --seed 1

Needs ``camb`` (and optionally ``colossus``, ``matplotlib``): ``pip install camb colossus``.
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
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from astrogen.cosmology import Cosmology, LinearPower  # noqa: E402
from astrogen.nbody import (ParticleMesh, friends_of_friends, mass_function,  # noqa: E402
                            measure_power, paint_density)
from astrogen.nbody.power_spectrum import binned_model  # noqa: E402


def camb_spectra(cosmo: Cosmology, kmax: float = 5.0):
    """CAMB linear and halofit P(k, z=0) for ``cosmo`` (massless neutrinos), sigma8-matched.

    Returns k [h/Mpc], P_lin, P_halofit [(Mpc/h)^3].
    """
    import camb

    h = cosmo.h

    def run(As):
        pars = camb.CAMBparams()
        pars.set_cosmology(H0=100 * h, ombh2=cosmo.Ob0 * h * h, omch2=cosmo.Oc0 * h * h,
                           mnu=0.0, num_massive_neutrinos=0, omk=0.0, TCMB=cosmo.Tcmb0)
        pars.InitPower.set_params(As=As, ns=cosmo.n_s)
        pars.set_matter_power(redshifts=[0.0], kmax=kmax * h * 1.2)
        pars.NonLinearModel.set_params(halofit_version="takahashi")
        return pars

    pars = run(2.1e-9)
    s8 = camb.get_results(pars).get_sigma8_0()
    pars = run(2.1e-9 * (cosmo.sigma8 / s8) ** 2)
    pars.NonLinear = camb.model.NonLinear_none
    res = camb.get_results(pars)
    k, _, plin = res.get_matter_power_spectrum(minkh=1e-4, maxkh=kmax, npoints=400)
    pars.NonLinear = camb.model.NonLinear_pk
    res_nl = camb.get_results(pars)
    k2, _, pnl = res_nl.get_matter_power_spectrum(minkh=1e-4, maxkh=kmax, npoints=400)
    if not np.allclose(k, k2) or np.allclose(plin[0][-1], pnl[0][-1]):
        raise RuntimeError("CAMB did not return distinct linear and halofit spectra")
    pnl_i = pnl[0]
    return k, plin[0], pnl_i, float(res.get_sigma8_0())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=64, help="particles per side")
    ap.add_argument("--box", type=float, default=128.0, help="box side, Mpc/h")
    ap.add_argument("--steps", type=int, default=10, help="number of KDK steps")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--mesh-factor", type=int, default=2, help="force mesh / particle grid")
    ap.add_argument("--a-init", type=float, default=0.1)
    ap.add_argument("--gradient", default="fd4", choices=("fd4", "fd2", "exact"))
    ap.add_argument("--no-fixed", action="store_true",
                    help="random-amplitude ICs (default: fixed amplitude, less cosmic variance)")
    ap.add_argument("--no-paired", action="store_true",
                    help="one run only (default: average P(k) over a pair of runs with "
                         "inverted phases, Angulo & Pontzen 2016, which cancels the leading "
                         "realisation-dependent nonlinear terms)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/nbody_validate"))
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    cosmo = Cosmology()
    t0 = time.time()
    k_c, plin_c, pnl_c, s8_camb = camb_spectra(cosmo)
    power = LinearPower.from_arrays(k_c, plin_c, cosmo)
    t_camb = time.time() - t0
    print(f"CAMB: sigma8={s8_camb:.4f} ({t_camb:.1f} s)")

    pm = ParticleMesh(args.n, args.box, cosmo, power=power, mesh_factor=args.mesh_factor,
                      a_init=args.a_init, n_steps=args.steps, gradient=args.gradient,
                      fixed_amplitude=not args.no_fixed)
    a_out = [args.a_init, 0.5, 1.0]
    t0 = time.time()
    res = pm.run(a_out=a_out, seed=args.seed)
    runs = [res]
    if not args.no_paired:
        pm_inv = ParticleMesh(args.n, args.box, cosmo, power=power,
                              mesh_factor=args.mesh_factor, a_init=args.a_init,
                              n_steps=args.steps, gradient=args.gradient,
                              fixed_amplitude=not args.no_fixed, inverted_phase=True)
        runs.append(pm_inv.run(a_out=a_out, seed=args.seed))
    t_pm = time.time() - t0
    print(f"PM: n={args.n}^3, mesh={pm.n_mesh}^3, L={args.box} Mpc/h, steps={args.steps}, "
          f"{len(runs)} run(s) ({'fixed' if not args.no_fixed else 'random'} amplitudes"
          f"{', paired' if len(runs) == 2 else ''}), {t_pm:.1f} s")

    # ---- 1. P(k, z=0) vs halofit (density painted on a 2x mesh, CIC deconvolved)
    L = args.box
    knyq = np.pi * args.n / L
    snap = res.at(1.0)
    nd = 2 * args.n
    pss = [measure_power(paint_density(r.at(1.0).positions, L, nd), L, deconvolve_cic=True)
           for r in runs]
    ps = pss[0]
    ps.power = np.mean([p.power for p in pss], axis=0)
    # models averaged over the same grid modes as the measurement (bins are wide at low k)
    halofit = lambda k: np.exp(np.interp(np.log(k), np.log(k_c), np.log(pnl_c)))  # noqa: E731
    p_hf = binned_model(halofit, nd, L, ps.k_edges)
    p_lin = binned_model(power, nd, L, ps.k_edges)
    # linear-theory variance of this realisation (1 for fixed-amplitude initial conditions)
    ps_ic = measure_power(res.linear_delta, L, k_edges=ps.k_edges)
    cv = np.ones_like(ps.k)
    m = min(len(ps_ic.k), len(ps.k))
    cv[:m] = ps_ic.power[:m] / binned_model(power, args.n, L, ps.k_edges)[:m]
    ratio = ps.power / p_hf
    sel = ps.k < knyq / 4
    print("\n  k[h/Mpc]  n_modes   P_PM      P_halofit  P_PM/P_hf  P_PM/(P_hf*IC_var)  P_PM/P_lin")
    for i in np.flatnonzero(ps.k < knyq / 2):
        print(f"  {ps.k[i]:7.4f}  {ps.n_modes[i]:7d}  {ps.power[i]:9.2f}  {p_hf[i]:9.2f}  "
              f"{ratio[i]:8.4f}   {ratio[i] / cv[i]:8.4f}        "
              f"{ps.power[i] / p_lin[i]:8.4f}{'  *' if sel[i] else ''}")
    max_dev = float(np.max(np.abs(ratio[sel] - 1)))
    max_dev_cv = float(np.max(np.abs(ratio[sel] / cv[sel] - 1)))
    print(f"max |P_PM/P_halofit - 1| for k < k_Nyq/4 = {knyq / 4:.3f} h/Mpc: {max_dev:.4f} "
          f"(realisation-variance corrected: {max_dev_cv:.4f})")

    # ---- 2. linear growth of the largest modes
    def big_modes(df):
        dk = np.fft.rfftn(df.delta)
        return np.array([dk[1, 0, 0], dk[0, 1, 0], dk[0, 0, 1]])

    m0 = big_modes(res.at(args.a_init).density)
    growth = {}
    for a in a_out[1:]:
        ma = big_modes(res.at(a).density)
        meas = float(np.mean(np.real(ma * np.conj(m0)) / np.abs(m0) ** 2))
        pred = float(cosmo.D1(a) / cosmo.D1(args.a_init))
        growth[str(a)] = {"measured": meas, "D1_ratio": pred, "rel_err": meas / pred - 1}
        print(f"growth of k_f modes a={a}: measured {meas:.4f}, D1 ratio {pred:.4f} "
              f"({100 * (meas / pred - 1):+.2f} %)")

    # ---- 3. FoF and mass function
    t0 = time.time()
    halos = friends_of_friends(snap.positions, L, snap.velocities, Om0=cosmo.Om0)
    t_fof = time.time() - t0
    mp = halos.meta["particle_mass_msun_h"]
    print(f"FoF: {len(halos)} haloes with >= 20 particles (m_p = {mp:.3e} Msun/h), "
          f"{t_fof:.1f} s")
    mf = {}
    if len(halos) >= 5:
        mc, dn, err, cnt = mass_function(np.asarray(halos["mass"]), L, bins=6,
                                         mass_range=(20 * mp, np.max(halos["mass"]) * 1.001))
        mf = {"M": mc.tolist(), "dndlnM": dn.tolist(), "err": err.tolist(),
              "counts": cnt.tolist()}
        try:
            from colossus.cosmology import cosmology as ccosmo
            from colossus.lss import mass_function as cmf

            ccosmo.setCosmology("astrogen", {"flat": True, "H0": 100 * cosmo.h,
                                             "Om0": cosmo.Om0, "Ob0": cosmo.Ob0,
                                             "sigma8": cosmo.sigma8, "ns": cosmo.n_s,
                                             "relspecies": False})
            mf["tinker08_200m"] = cmf.massFunction(mc, 0.0, mdef="200m", model="tinker08",
                                                   q_out="dndlnM").tolist()
            mf["sheth99_fof"] = cmf.massFunction(mc, 0.0, mdef="fof", model="sheth99",
                                                 q_out="dndlnM").tolist()
            print("\n  M[Msun/h]    N   dn/dlnM_FoF   Tinker08   ShethTormen  ratio_ST")
            for i in range(len(mc)):
                st = mf["sheth99_fof"][i]
                print(f"  {mc[i]:.3e}  {cnt[i]:4d}  {dn[i]:.3e}  {mf['tinker08_200m'][i]:.3e}"
                      f"  {st:.3e}  {dn[i] / st:6.3f}")
        except ImportError:
            print("colossus not installed: mass-function fits skipped")

    summary = {
        "args": vars(args), "time_s": {"camb": t_camb, "pm": t_pm, "fof": t_fof},
        "k_nyq_particle": knyq, "k_max_compared": knyq / 4,
        "pk": {"k": ps.k.tolist(), "P_pm": ps.power.tolist(), "P_halofit": p_hf.tolist(),
               "P_lin": p_lin.tolist(), "n_modes": ps.n_modes.tolist(),
               "ic_variance": cv.tolist()},
        "max_abs_ratio_minus_1_k_lt_kNyq_over_4": max_dev,
        "max_abs_ratio_minus_1_k_lt_kNyq_over_4_ic_corrected": max_dev_cv,
        "growth": growth, "n_halos": len(halos), "particle_mass_msun_h": mp,
        "mass_function": mf,
    }
    (out / "nbody_validate.json").write_text(json.dumps(summary, indent=1))

    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.ticker  # noqa: F401
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(1, 3, figsize=(15, 4.5))
        ax[0].loglog(k_c, plin_c, "k:", label="linear (CAMB)")
        ax[0].loglog(k_c, pnl_c, "k-", label="halofit (CAMB)")
        ax[0].loglog(ps.k, ps.power, "o", ms=3, label="PM z=0")
        ax[0].axvline(knyq / 4, color="gray", ls="--")
        ax[0].set(xlim=(ps.k[0] * 0.8, knyq), ylim=(10, 3e4), xlabel="k [h/Mpc]",
                  ylabel="P(k) [(Mpc/h)$^3$]")
        ax[0].legend()
        ax[1].semilogx(ps.k, ratio, "o-", ms=3, label="PM / halofit")
        ax[1].axhspan(0.95, 1.05, color="0.9")
        ax[1].axvline(knyq / 4, color="gray", ls="--", label="k_Nyq/4")
        ax[1].set(xlim=(ps.k[0] * 0.8, knyq), ylim=(0.6, 1.2), xlabel="k [h/Mpc]",
                  ylabel="ratio")
        ax[1].legend()
        if mf:
            ax[2].errorbar(mf["M"], mf["dndlnM"], yerr=mf["err"], fmt="o", label="FoF (PM)")
            for key, ls in (("tinker08_200m", "-"), ("sheth99_fof", "--")):
                if key in mf:
                    ax[2].loglog(mf["M"], mf[key], ls, label=key)
            ax[2].set(xscale="log", yscale="log", xlabel="M [Msun/h]",
                      ylabel="dn/dlnM [(Mpc/h)$^{-3}$]")
            ax[2].xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
            ax[2].legend()
        fig.suptitle(f"astrogen PM {args.n}$^3$, L={L:g} Mpc/h, {args.steps} steps, "
                     f"mesh x{args.mesh_factor}")
        fig.tight_layout()
        fig.savefig(out / "nbody_validate.png", dpi=90)
    except ImportError:
        print("matplotlib not installed: no figure")
    print(f"\nwrote {out / 'nbody_validate.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
