"""Diagnosis of the baryon painter's misses on the held-out boxes (issue 18, follow-up).

    PYTHONPATH=. python benchmarks/baryons_diagnose.py --model PATH --tag NAME \
        [--heldout output/datasets/baryon_pairs_64_heldout] [--boxes 4]

For one painter, on the held-out BaryonForge boxes (ids 1000-1003, never trained on):

* the headline statistics of ``baryons_benchmark.py`` (P(k) ratio painted / BaryonForge and
  r(k) for k <= k_Nyq / 2 of gas, electron pressure and total matter; mean Compton-y ratio;
  matter suppression P_total / P_dm) for latent draws at temperature 1 (2 samples per box)
  and at temperature 0 (the latent mean): how much of the miss is the latent noise;
* total matter: the standard deviation over cells of the true ``ln(total / dm)`` (what the
  baryonification changes) against the rms error of the painted ``ln total`` -- a painter
  whose error is as large as the whole correction cannot get the suppression right;
* pressure: the painted ``log10 P_e`` averaged in bins of the true one (regression to the
  mean of the high-pressure halo cells), and the share of the summed pressure (hence of the
  mean Compton-y) held by cells above 1e-8 keV cm^-3 with the painted / true sum there;
* the per-field likelihood widths (``log_sigma``): a field's weight in the loss is
  ``exp(-2 log_sigma)``.

Writes ``benchmarks/results/baryons/diagnose/<tag>.json`` and ``<tag>.png``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from baryons_benchmark import spectra  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "baryons" / "diagnose"
P_HALO = 1e-8  # keV cm^-3: above the photo-ionised IGM at any density of these boxes


def headline(painted: dict, boxes: dict, L: float, n: int, h: float, z: float) -> dict:
    """P ratio, r (k <= k_Nyq/2), mean-y ratio, suppression of painted samples."""
    from astrogen.stages.baryons import compton_y_map

    out = {}
    for f in ("gas", "pressure", "total"):
        rat, cor = [], []
        for b, box in boxes.items():
            for s in painted[b][f]:
                k, pp, pb, px, knyq = spectra(s, box[f], L)
                rat.append(pp / pb)
                cor.append(px / np.sqrt(pp * pb))
        half = k <= knyq / 2
        rm, cm = np.mean(rat, 0)[half], np.mean(cor, 0)[half]
        out[f] = {"pk_ratio_range": [float(rm.min()), float(rm.max())],
                  "max_abs_pk_ratio_minus_1": float(np.max(np.abs(rm - 1))),
                  "min_r": float(cm.min())}
    sp, sb = [], []
    for b, box in boxes.items():
        for s in painted[b]["total"]:
            k, pt, pd_, _, knyq = spectra(s, box["dm"], L)
            sp.append(pt / pd_)
        k, pt, pd_, _, knyq = spectra(box["total"], box["dm"], L)
        sb.append(pt / pd_)
    half = k <= knyq / 2
    sp, sb = np.mean(sp, 0)[half], np.mean(sb, 0)[half]
    out["suppression"] = {"painted": sp.tolist(), "baryonforge": sb.tolist(),
                          "max_abs_diff": float(np.max(np.abs(sp - sb)))}
    yp, yb = [], []
    for b, box in boxes.items():
        for ax in range(3):
            yp += [compton_y_map(s, L / n, h, z, axis=ax).mean() for s in painted[b]["pressure"]]
            yb.append(compton_y_map(box["pressure"], L / n, h, z, axis=ax).mean())
    out["mean_y_ratio"] = float(np.mean(yp) / np.mean(yb))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--tag", required=True)
    ap.add_argument("--heldout", default=str(ROOT / "output/datasets/baryon_pairs_64_heldout"))
    ap.add_argument("--boxes", type=int, default=4)
    a = ap.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)

    from astrogen.datasets.baryons import read_baryon_box, read_manifest
    from astrogen.models.baryon_painter import FIELDS, load_baryon_painter

    man = read_manifest(a.heldout)
    cfg = man["config"]
    L, n, h, z = float(cfg["box_size"]), int(cfg["n_grid"]), float(cfg["h"]), cfg["redshift"]
    model = load_baryon_painter(a.model)
    ids = man["box_ids"][:a.boxes]
    assert not set(model.meta.get("dataset", {}).get("box_ids", [])) & set(ids)
    boxes = {b: read_baryon_box(a.heldout, b) for b in ids}
    t0 = time.perf_counter()
    warm = {b: model.paint(box["dm"], n_samples=2, seed=10 + i) for i, (b, box)
            in enumerate(boxes.items())}
    cold = {b: model.paint(box["dm"], n_samples=1, temperature=0.0) for b, box in boxes.items()}
    t_paint = time.perf_counter() - t0
    res = {"model": a.model, "config": {k: v for k, v in model.get_config().items()
                                        if k != "meta"},
           "training": model.meta.get("training", {}), "heldout_box_ids": ids,
           "temperature_1": headline(warm, boxes, L, n, h, z),
           "temperature_0": headline(cold, boxes, L, n, h, z)}

    # total matter: the size of the correction vs the painter's error
    true_res = np.concatenate([np.log(np.maximum(bx["total"], 1e-2) / np.maximum(bx["dm"], 1e-2))
                               .ravel() for bx in boxes.values()])
    err = np.concatenate([(np.log(np.maximum(warm[b]["total"][0], 1e-2))
                           - np.log(np.maximum(bx["total"], 1e-2))).ravel()
                          for b, bx in boxes.items()])
    res["total_matter"] = {"std_true_ln_total_over_dm": float(true_res.std()),
                           "rms_err_painted_ln_total": float(np.sqrt(np.mean(err ** 2)))}

    # pressure: conditional mean and the halo cells' share
    lt = np.concatenate([np.log10(np.maximum(bx["pressure"], 1e-14)).ravel()
                         for bx in boxes.values()])
    lp = np.concatenate([np.log10(np.maximum(warm[b]["pressure"][0], 1e-14)).ravel()
                         for b in boxes])
    lp0 = np.concatenate([np.log10(np.maximum(cold[b]["pressure"][0], 1e-14)).ravel()
                          for b in boxes])
    edges = np.arange(np.floor(lt.min()), np.ceil(lt.max()) + 0.5, 0.5)
    idx = np.digitize(lt, edges)
    cond = []
    for i in np.unique(idx):
        m = idx == i
        if m.sum() >= 20:
            cond.append({"true_log10_p": float(lt[m].mean()), "n": int(m.sum()),
                         "painted_mean": float(lp[m].mean()),
                         "painted_p16": float(np.percentile(lp[m], 16)),
                         "painted_p84": float(np.percentile(lp[m], 84)),
                         "painted_t0_mean": float(lp0[m].mean())})
    pt = 10.0 ** lt
    halo = pt > P_HALO
    res["pressure"] = {
        "halo_threshold_kev_cm3": P_HALO, "halo_cell_fraction": float(halo.mean()),
        "halo_share_of_true_sum": float(pt[halo].sum() / pt.sum()),
        "painted_over_true_sum_in_halo_cells": float((10.0 ** lp)[halo].sum() / pt[halo].sum()),
        "painted_over_true_sum_elsewhere": float((10.0 ** lp)[~halo].sum() / pt[~halo].sum()),
        "conditional": cond}
    ls = np.asarray(model.log_sigma.numpy(), np.float64)
    res["likelihood"] = {"log_sigma": dict(zip(FIELDS, ls.tolist())),
                         "loss_weight_exp_minus_2_log_sigma": dict(zip(
                             FIELDS, np.exp(-2 * ls).tolist())),
                         "width_ln_units": model.residual_scale()}
    res["paint_seconds_all"] = t_paint
    res["load_avg"] = os.getloadavg()
    res["command"] = " ".join(["baryons_diagnose.py"] + (argv or sys.argv[1:]))
    (OUT / f"{a.tag}.json").write_text(json.dumps(res, indent=2) + "\n")
    figure(res, boxes, warm, cold, true_res, err, OUT / f"{a.tag}.png", a.tag)
    for t in ("temperature_1", "temperature_0"):
        print(t, json.dumps({k: v for k, v in res[t].items() if k != "suppression"}))
        print("  suppression max diff", res[t]["suppression"]["max_abs_diff"],
              np.round(res[t]["suppression"]["painted"], 3).tolist())
    print("total", res["total_matter"])
    print("pressure", {k: v for k, v in res["pressure"].items() if k != "conditional"})
    print("likelihood", res["likelihood"])
    return 0


def figure(res, boxes, warm, cold, true_res, err, path: Path, tag: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(2, 3, figsize=(14, 8.5))
    bins = np.linspace(-3, 3, 120)
    ax[0, 0].hist(true_res, bins, histtype="step", color="k", density=True,
                  label="BaryonForge ln(total/dm)")
    ax[0, 0].hist(err, bins, histtype="step", color="C3", density=True,
                  label="painted ln total - true")
    ax[0, 0].set_yscale("log")
    ax[0, 0].legend(fontsize=8)
    ax[0, 0].set_title("total matter: correction vs painter error", fontsize=9)
    c = res["pressure"]["conditional"]
    x = [d["true_log10_p"] for d in c]
    ax[0, 1].plot(x, x, "k:", label="1:1")
    ax[0, 1].plot(x, [d["painted_mean"] for d in c], "C0", label="painted (T=1)")
    ax[0, 1].fill_between(x, [d["painted_p16"] for d in c], [d["painted_p84"] for d in c],
                          color="C0", alpha=0.25)
    ax[0, 1].plot(x, [d["painted_t0_mean"] for d in c], "C1--", label="painted (T=0)")
    ax[0, 1].set_xlabel("true log10 P_e [keV cm^-3]")
    ax[0, 1].set_ylabel("painted log10 P_e")
    ax[0, 1].legend(fontsize=8)
    ax[0, 1].set_title("pressure: painted vs true (mean, 16-84 %)", fontsize=9)
    k_sup = np.arange(len(res["temperature_1"]["suppression"]["painted"]))
    ax[0, 2].plot(k_sup, res["temperature_1"]["suppression"]["baryonforge"], "k",
                  label="BaryonForge")
    ax[0, 2].plot(k_sup, res["temperature_1"]["suppression"]["painted"], "C0", label="T=1")
    ax[0, 2].plot(k_sup, res["temperature_0"]["suppression"]["painted"], "C1--", label="T=0")
    ax[0, 2].set_xlabel("k bin (2 k_f each, up to k_Nyq/2)")
    ax[0, 2].set_ylabel("P_total / P_dm")
    ax[0, 2].legend(fontsize=8)
    b = next(iter(boxes))
    ref = np.log10(np.maximum(boxes[b]["pressure"][:, :, :4].mean(2), 1e-14))
    vmin, vmax = np.percentile(ref, [1, 99.9])
    for j, (img, name) in enumerate(((boxes[b]["pressure"], "BaryonForge"),
                                     (warm[b]["pressure"][0], "painted T=1"),
                                     (cold[b]["pressure"][0], "painted T=0"))):
        im = ax[1, j].imshow(np.log10(np.maximum(img[:, :, :4].mean(2), 1e-14)).T,
                             origin="lower", vmin=vmin, vmax=vmax, cmap="magma",
                             extent=(0, 64, 0, 64))
        ax[1, j].set_title(f"{name}: log10 P_e, box {b}, 4-cell slab", fontsize=9)
    fig.colorbar(im, ax=ax[1].tolist(), fraction=0.02)
    fig.suptitle(f"{tag}: held-out boxes {res['heldout_box_ids']}", fontsize=10)
    fig.savefig(path, dpi=75)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
