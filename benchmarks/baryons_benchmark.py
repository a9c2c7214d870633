"""Baryon painter vs BaryonForge on held-out boxes (issue 18).

    PYTHONPATH=. python benchmarks/baryons_benchmark.py \
        [--model astrogen/data/models/baryon_painter_64.keras] \
        [--heldout output/datasets/baryon_pairs_64_heldout] [--samples 4] \
        [--baryons-python /work/venv-baryons/bin/python]

The held-out boxes (ids 1000-1003, never seen in training) are built by
``PYTHONPATH=. /work/venv-baryons/bin/python -m astrogen.datasets.baryons
output/datasets/baryon_pairs_64_heldout n_boxes=4 first_box=1000`` (``make baryons-env``).
Everything below is measured in this one run, on the same dark-matter boxes:

* P(k) ratio painted / BaryonForge of the gas density and electron pressure contrasts,
  cross-correlation r(k), for k <= k_Nyq / 2 (mean over boxes and samples);
* one-point PDFs: Kolmogorov-Smirnov distance of log gas, log T, log P_e (all cells);
* mean Compton-y of the maps projected through the box along x, y, z and the ratio of their
  2-D (flat-sky, k_perp in h/Mpc) power spectra; the boxes are at z = 0, so no angular scale
  is defined: the maps are compared in comoving transverse wavenumber;
* matter power suppression P_total / P_dm of the painted total matter vs BaryonForge's, and
  vs the BCemu emulator's (Giri & Schneider 2021, ``BCemu2021``) for the same Schneider et
  al. (2019) parameters (:func:`bcemu_params`) when ``--bcemu-python`` runs it; otherwise the
  reason it did not run is recorded (BCemu 2.0.6 does not ship its emulator files: it fetches
  them from GitHub on first use, which these machines cannot reach);
* speed: painting one box (one sample) vs BaryonForge's painting + baryonification of the same
  box (its one-off table set-up reported apart), BaryonForge run in its own environment as a
  subprocess of this run, one after the other;
* spread between samples of one input: rms over cells of the standard deviation of log gas and
  log P_e across samples, and of the samples' P(k).

Writes ``benchmarks/results/baryons/baryons_benchmark.json`` and PNG figures there.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "baryons"

BF_TIMER = r"""
import json, sys, time
import numpy as np
from astrogen.datasets.baryons import BaryonDatasetConfig, read_baryon_box, read_manifest
from astrogen.datasets import baryonforge_backend as bfb
path = sys.argv[1]
m = read_manifest(path)
cfg = BaryonDatasetConfig(**m["config"])
boxes = [read_baryon_box(path, b) for b in m["box_ids"]]
masses = np.concatenate([b["halo_mass"] for b in boxes]) / cfg.h
t0 = time.perf_counter()
bfb._models(cfg, cfg.box_size / cfg.n_grid / cfg.h, masses.min(), masses.max())
setup = time.perf_counter() - t0
per_box, same = [], []
for b in boxes:
    halos = {"x": b["halo_x"], "y": b["halo_y"], "z": b["halo_z"], "mass": b["halo_mass"]}
    t0 = time.perf_counter()
    out = bfb.paint(b["dm"], halos, cfg)
    per_box.append(time.perf_counter() - t0)
    same.append(float(np.max(np.abs(out["gas"].astype(np.float32) - b["gas"]))))
print(json.dumps({"setup_s": setup, "per_box_s": per_box, "max_abs_diff_gas_vs_stored": same}))
"""


BCEMU_RUNNER = r"""
import json, sys
import numpy as np
import BCemu
a = json.loads(sys.argv[1])
emu = BCemu.BCM_7param(Ob=a["Ob0"], Om=a["Om0"], verbose=False)
k = np.asarray(a["k"])
ok = (k >= emu.ks0.min()) & (k <= emu.ks0.max())
boost = np.full(k.shape, np.nan)
boost[ok] = emu.get_boost(a["z"], a["params"], k[ok])
print(json.dumps({"version": BCemu.__version__, "suppression": boost.tolist()}))
"""


def bcemu_params(bf_params: dict, h: float) -> dict:
    """BaryonForge's Schneider et al. (2019) parameters -> BCemu2021's seven.

    Same model family (Giri & Schneider 2021 emulate the baryonification of Schneider et al.
    2019): ``log10Mc = log10(M_c h)`` (BaryonForge's ``M_c`` in Msun, BCemu's in Msun/h),
    ``mu = mu_beta``, ``thej = theta_ej``, ``gamma``, ``delta``, ``eta`` as they are,
    ``deta = eta_delta``; the baryon fraction comes from ``Ob0 / Om0``. Not mapped:
    BaryonForge's ``theta_co``, ``tau``, ``A``, ``M1``, ``epsilon_h`` ... (BCemu fixes its
    stellar and core parameters at the values of its training set).
    """
    return {"log10Mc": float(np.log10(bf_params["M_c"] * h)), "mu": bf_params["mu_beta"],
            "thej": bf_params["theta_ej"], "gamma": bf_params["gamma"],
            "delta": bf_params["delta"], "eta": bf_params["eta"],
            "deta": bf_params["eta_delta"]}


def run_bcemu(python: str, cfg: dict, k: np.ndarray) -> dict:
    """BCemu's suppression at ``k`` (h/Mpc) for the data set's parameters, run by the
    interpreter ``python`` (a subprocess); on failure, what failed."""
    from astrogen.datasets.baryonforge_backend import DEFAULT_PARAMS

    par = bcemu_params({**DEFAULT_PARAMS, **dict(cfg.get("bf_params") or {})}, cfg["h"])
    out = {"params": par, "python": python}
    if not Path(python).is_file():
        return {**out, "status": "not run", "reason": f"no interpreter at {python}"}
    arg = json.dumps({"Ob0": cfg["Ob0"], "Om0": cfg["Om0"], "z": cfg["redshift"],
                      "params": par, "k": np.asarray(k).tolist()})
    try:
        r = subprocess.run([python, "-c", BCEMU_RUNNER, arg], capture_output=True,
                           text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    except subprocess.TimeoutExpired:
        return {**out, "status": "failed", "reason": "timed out after 300 s"}
    lines = [x for x in r.stdout.splitlines() if x.startswith("{")]
    if r.returncode or not lines:
        tail = (r.stderr or r.stdout)[-1500:]
        return {**out, "status": "failed", "reason": tail}
    return {**out, "status": "ok", **json.loads(lines[-1])}


def spectra(a: np.ndarray, b: np.ndarray, box: float, nbin_per: int = 2):
    """Auto spectra of ``a``, ``b`` and their cross spectrum (mean subtracted, contrasts of the
    mean), in bins of ``nbin_per`` fundamental modes; 2-D or 3-D. Returns k (h/Mpc), Paa,
    Pbb, Pab in (Mpc/h)^d and the Nyquist k."""
    a = np.asarray(a, np.float64) / np.mean(a) - 1.0
    b = np.asarray(b, np.float64) / np.mean(b) - 1.0
    n, d = a.shape[0], a.ndim
    fa, fb = np.fft.rfftn(a), np.fft.rfftn(b)
    freqs = [np.fft.fftfreq(n)] * (d - 1) + [np.fft.rfftfreq(n)]
    grids = np.meshgrid(*freqs, indexing="ij")
    kk = np.sqrt(sum(g ** 2 for g in grids)) * n  # in units of k_f
    w = np.ones(fa.shape)
    w[..., 1:-1] = 2.0  # rfft: interior planes stand for two modes
    idx = np.floor(kk / nbin_per + 0.5).astype(int).ravel()
    norm = box ** d / n ** (2 * d)  # P = L^d |F|^2 / N^(2d)

    def binned(x):
        return np.bincount(idx, (x * w).ravel()) / np.maximum(np.bincount(idx, w.ravel()), 1)

    kf = 2 * np.pi / box
    k = binned(kk) * kf
    paa = binned(np.abs(fa) ** 2) * norm
    pbb = binned(np.abs(fb) ** 2) * norm
    pab = binned((fa * np.conj(fb)).real) * norm
    keep = slice(1, None)
    return k[keep], paa[keep], pbb[keep], pab[keep], np.pi * n / box


def ks_distance(x: np.ndarray, y: np.ndarray) -> float:
    from scipy.stats import ks_2samp

    rng = np.random.default_rng(0)
    x, y = np.ravel(x), np.ravel(y)
    if x.size > 200_000:
        x = rng.choice(x, 200_000, replace=False)
        y = rng.choice(y, 200_000, replace=False)
    return float(ks_2samp(x, y).statistic)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=str(ROOT / "astrogen/data/models/baryon_painter_64.keras"))
    ap.add_argument("--heldout", default=str(ROOT / "output/datasets/baryon_pairs_64_heldout"))
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--baryons-python", default="/work/venv-baryons/bin/python")
    ap.add_argument("--bcemu-python", default="/work/venv-baryons/bin/python",
                    help="an interpreter with BCemu (and its emulator files) installed")
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--replot", action="store_true",
                    help="redraw baryons_spectra.png from the saved JSON only")
    a = ap.parse_args(argv)
    out_dir = Path(a.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    if a.replot:
        spectra_figure(json.loads((out_dir / "baryons_benchmark.json").read_text()), out_dir)
        return 0

    from astrogen.datasets.baryons import read_baryon_box, read_manifest
    from astrogen.models.baryon_painter import load_baryon_painter
    from astrogen.stages.baryons import compton_y_map

    man = read_manifest(a.heldout)
    cfg = man["config"]
    L, n, h = float(cfg["box_size"]), int(cfg["n_grid"]), float(cfg["h"])
    model = load_baryon_painter(a.model)
    train_ids = set(model.meta.get("dataset", {}).get("box_ids", []))
    assert not train_ids & set(man["box_ids"]), "held-out boxes overlap the training set"
    boxes = {b: read_baryon_box(a.heldout, b) for b in man["box_ids"]}

    # ---------------------------------------------------------------- painting + timing
    model.paint(boxes[man["box_ids"][0]]["dm"], n_samples=1, seed=0)  # warm-up
    painted, t_paint = {}, []
    for i, (b, box) in enumerate(boxes.items()):
        t0 = time.perf_counter()
        model.paint(box["dm"], n_samples=1, seed=100 + i)
        t_paint.append(time.perf_counter() - t0)
        painted[b] = model.paint(box["dm"], n_samples=a.samples, seed=1000 + i)

    bf = None
    if Path(a.baryons_python).is_file():
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
        r = subprocess.run([a.baryons_python, "-c", BF_TIMER, a.heldout], capture_output=True,
                           text=True, env=env, cwd=ROOT)
        lines = [x for x in r.stdout.splitlines() if x.startswith("{")]
        bf = json.loads(lines[-1]) if lines else {"error": r.stderr[-2000:]}

    # ---------------------------------------------------------------- statistics
    fields = {"gas": "gas", "pressure": "pressure", "total": "total"}
    ratio = {f: [] for f in fields}
    corr = {f: [] for f in fields}
    supp_p, supp_b = [], []
    k = knyq = None
    for b, box in boxes.items():
        for s in range(a.samples):
            for f in fields:
                k, pp, pb, px, knyq = spectra(painted[b][f][s], box[f], L)
                ratio[f].append(pp / pb)
                corr[f].append(px / np.sqrt(pp * pb))
            k, pt, pd_, _, _ = spectra(painted[b]["total"][s], box["dm"], L)
            supp_p.append(pt / pd_)
        k, pt, pd_, _, _ = spectra(box["total"], box["dm"], L)
        supp_b.append(pt / pd_)
    half = k <= knyq / 2
    stat = {}
    for f in fields:
        rm, cm = np.mean(ratio[f], 0), np.mean(corr[f], 0)
        stat[f] = {"pk_ratio": rm.tolist(), "r": cm.tolist(),
                   "max_abs_pk_ratio_minus_1_k_le_half_nyq": float(np.max(np.abs(rm[half] - 1))),
                   "min_r_k_le_half_nyq": float(np.min(cm[half]))}
    sp, sb = np.mean(supp_p, 0), np.mean(supp_b, 0)
    bcemu = run_bcemu(a.bcemu_python, cfg, k)
    if bcemu["status"] == "ok":
        bc = np.asarray(bcemu["suppression"], float)
        sel = half & np.isfinite(bc)
        bcemu["max_abs_diff_baryonforge_k_le_half_nyq"] = float(np.max(np.abs(bc - sb)[sel]))
        bcemu["max_abs_diff_painted_k_le_half_nyq"] = float(np.max(np.abs(bc - sp)[sel]))

    ks = {}
    for f, tr in (("gas", np.log10), ("temperature", np.log10), ("pressure", np.log10)):
        x = np.concatenate([np.ravel(tr(np.maximum(painted[b][f][0], 1e-30))) for b in boxes])
        y = np.concatenate([np.ravel(tr(np.maximum(boxes[b][f], 1e-30))) for b in boxes])
        ks[f] = ks_distance(x, y)

    ymean_p, ymean_b, yratio = [], [], []
    for b, box in boxes.items():
        for ax in range(3):
            yp = compton_y_map(painted[b]["pressure"][0], L / n, h, cfg["redshift"], axis=ax)
            yb = compton_y_map(box["pressure"], L / n, h, cfg["redshift"], axis=ax)
            ymean_p.append(float(yp.mean()))
            ymean_b.append(float(yb.mean()))
            ky, pyp, pyb, _, _ = spectra(yp, yb, L)
            yratio.append(pyp / pyb)
    yr = np.mean(yratio, 0)

    spread = {}
    for f in ("gas", "pressure", "temperature"):
        v = [np.sqrt(np.mean(np.var(np.log(painted[b][f]), axis=0))) for b in boxes]
        pk_s = []
        for b in boxes:
            pks = [spectra(painted[b][f][s], boxes[b][f], L)[1] for s in range(a.samples)]
            pk_s.append(np.std(pks, 0) / np.mean(pks, 0))
        spread[f] = {"rms_std_ln_field_across_samples": float(np.mean(v)),
                     "rel_std_pk_across_samples_k_le_half_nyq": float(
                         np.mean(np.mean(pk_s, 0)[half]))}

    cons = {"raw_mean_total_over_dm": [], "raw_mean_gas_over_dm": []}
    for b, box in boxes.items():
        raw = model.paint(box["dm"], n_samples=1, seed=7, conserve=False)
        cons["raw_mean_total_over_dm"].append(float(raw["total"].mean() / box["dm"].mean()))
        cons["raw_mean_gas_over_dm"].append(float(raw["gas"].mean() / box["dm"].mean()))
    cons["bf_mean_gas_over_dm"] = [float(box["gas"].mean() / box["dm"].mean())
                                   for box in boxes.values()]
    cons["model_gas_fraction"] = model.gas_fraction

    res = {
        "heldout": {"path": a.heldout, "box_ids": man["box_ids"], "n_grid": n,
                    "box_size_mpc_h": L, "backend": man["backend"]},
        "model": {"path": a.model, "training": model.meta.get("training", {}),
                  "train_box_ids": sorted(train_ids)},
        "samples_per_box": a.samples,
        "k_h_mpc": k.tolist(), "k_nyquist": knyq, "k_half_nyquist": knyq / 2,
        "fields": stat,
        "ks_distance_log": ks,
        "compton_y": {"mean_painted": float(np.mean(ymean_p)),
                      "mean_baryonforge": float(np.mean(ymean_b)),
                      "mean_ratio": float(np.mean(ymean_p) / np.mean(ymean_b)),
                      "k_perp_h_mpc": ky.tolist(), "power_ratio": yr.tolist(),
                      "max_abs_power_ratio_minus_1_k_le_half_nyq": float(
                          np.max(np.abs(yr[ky <= knyq / 2] - 1)))},
        "matter_suppression": {"painted": sp.tolist(), "baryonforge": sb.tolist(),
                               "max_abs_diff_k_le_half_nyq": float(
                                   np.max(np.abs(sp[half] - sb[half]))),
                               "bcemu": bcemu},
        "sample_spread": spread,
        "conservation": cons,
        "speed": {"painter_per_box_s": t_paint,
                  "painter_median_s": float(np.median(t_paint)),
                  "baryonforge": bf,
                  "ratio_baryonforge_over_painter_median": (
                      float(np.median(bf["per_box_s"]) / np.median(t_paint))
                      if bf and "per_box_s" in bf else None)},
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                    "load_avg": os.getloadavg()},
        "command": " ".join([Path(sys.argv[0]).name] + (argv or sys.argv[1:])),
    }
    (out_dir / "baryons_benchmark.json").write_text(json.dumps(res, indent=2) + "\n")
    figures(res, boxes, painted, out_dir)
    print(json.dumps({k_: res[k_] for k_ in ("ks_distance_log", "speed", "conservation")},
                     indent=1))
    for f in fields:
        print(f, {kk: v for kk, v in stat[f].items() if not isinstance(v, list)})
    print("compton_y", {kk: v for kk, v in res["compton_y"].items() if not isinstance(v, list)})
    print("suppression max diff", res["matter_suppression"]["max_abs_diff_k_le_half_nyq"])
    print("bcemu", {kk: v for kk, v in bcemu.items() if kk != "suppression"})
    print("spread", spread)
    return 0


def spectra_figure(res, out_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    k = np.array(res["k_h_mpc"])
    kh = res["k_half_nyquist"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for f, c in (("gas", "C0"), ("pressure", "C1"), ("total", "C2")):
        axes[0].plot(k, res["fields"][f]["pk_ratio"], c, label=f)
        axes[1].plot(k, res["fields"][f]["r"], c, label=f)
    axes[0].plot(res["compton_y"]["k_perp_h_mpc"], res["compton_y"]["power_ratio"], "C3--",
                 label="Compton-y map (2-D)")
    axes[0].axhspan(0.95, 1.05, color="0.85")
    axes[1].axhline(0.9, color="0.5", ls=":")
    for ax in axes[:2]:
        ax.axvline(kh, color="0.5", ls="--")
        ax.set_xscale("log")
        ax.set_xlabel("k [h/Mpc]")
        ax.legend(fontsize=8)
    axes[0].set_ylabel("P_painted / P_BaryonForge")
    axes[1].set_ylabel("r(k)")
    axes[2].plot(k, res["matter_suppression"]["baryonforge"], "k", label="BaryonForge")
    axes[2].plot(k, res["matter_suppression"]["painted"], "C0--", label="painted")
    bc = res["matter_suppression"].get("bcemu")
    if isinstance(bc, dict) and bc.get("status") == "ok":
        axes[2].plot(k, bc["suppression"], "C3:", label="BCemu2021")
    axes[2].axvline(kh, color="0.5", ls="--")
    axes[2].set_xscale("log")
    axes[2].set_xlabel("k [h/Mpc]")
    axes[2].set_ylabel("P_total / P_dm")
    axes[2].legend(fontsize=8)
    axes[0].set_yscale("log")
    for ax in axes:
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
    fig.suptitle(f"held-out boxes {res['heldout']['box_ids']}, {res['samples_per_box']} "
                 "samples each; dashed line: k_Nyq/2; grey band: +-5 %", fontsize=9)
    fig.tight_layout()
    fig.savefig(out_dir / "baryons_spectra.png", dpi=90)
    plt.close(fig)


def figures(res, boxes, painted, out_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    spectra_figure(res, out_dir)

    b = next(iter(boxes))
    s = 4
    rows = [("gas log10(rho/rho_b)", "gas", 1e-2), ("log10 T [K]", "temperature", 1e2),
            ("log10 P_e [keV cm^-3]", "pressure", 1e-12)]
    fig, axes = plt.subplots(3, 3, figsize=(12, 11))
    for r, (title, f, floor) in enumerate(rows):
        ref = np.log10(np.maximum(boxes[b][f][:, :, :s].mean(2), floor))
        vmin, vmax = np.percentile(ref, [1, 99.9])
        imgs = [ref] + [np.log10(np.maximum(painted[b][f][i][:, :, :s].mean(2), floor))
                        for i in (0, 1)]
        for c, (img, name) in enumerate(zip(imgs, ("BaryonForge", "painted 1",
                                                   "painted 2"))):
            im = axes[r, c].imshow(img.T, origin="lower", vmin=vmin, vmax=vmax,
                                   cmap="magma", extent=(0, 64, 0, 64))
            axes[r, c].set_title(f"{name}: {title}", fontsize=9)
        fig.colorbar(im, ax=axes[r].tolist(), fraction=0.02)
    fig.suptitle(f"box {b}, slab of {s} cells (z), log stretch", fontsize=10)
    fig.savefig(out_dir / "baryons_slices.png", dpi=80)
    plt.close(fig)

    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    for ax, (f, floor) in zip(axes, (("gas", 1e-2), ("temperature", 1e2),
                                     ("pressure", 1e-14))):
        x = np.concatenate([np.log10(np.maximum(boxes[i][f], floor)).ravel() for i in boxes])
        y = np.concatenate([np.log10(np.maximum(painted[i][f][0], floor)).ravel()
                            for i in boxes])
        bins = np.linspace(min(x.min(), y.min()), max(x.max(), y.max()), 80)
        ax.hist(x, bins, histtype="step", density=True, label="BaryonForge", color="k")
        ax.hist(y, bins, histtype="step", density=True, label="painted", color="C0")
        ax.set_yscale("log")
        ax.set_xlabel(f"log10 {f}")
        ax.set_title(f"KS = {res['ks_distance_log'][f]:.3f}", fontsize=9)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / "baryons_pdfs.png", dpi=90)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
