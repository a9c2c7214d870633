"""3-D halo network (Berger & Stein 2019) on held-out PM boxes: Dice of the protohalo mask,
completeness and purity of the catalogue against FoF, mass-function ratio, positions, speed.

    python benchmarks/nbody_halo3d_benchmark.py [--model PATH] [--boxes 8]

Held-out boxes: the training configuration of the model (its ``meta``) with
``first_box = 10000`` (training boxes are 0..63), built with the package's PM (numpy
backend) + FoF if missing (``output/datasets/protohalos_32_heldout``). For each box the
network gives the probability ``p`` and the predicted halo size ``N`` per lattice cell.

* Dice of ``p > 0.5`` against the true mask (pooled over the boxes, and per box).
* Catalogue, for each mask-to-catalogue method (periodic components, distance-transform
  watershed, size-guided region growing): haloes of >= ``mask_min_particles`` cells matched
  one-to-one to FoF haloes of >= ``mask_min_particles`` particles by shared particles (a
  match shares at least half of the smaller of the two); completeness = matched FoF /
  FoF, purity = matched predicted / predicted; mass function = predicted / FoF counts in
  bins of particle number; median mass ratio and Eulerian position error of matched pairs
  (Eulerian = 2LPT-displaced mean of the protohalo's particles vs the FoF centre of mass).
* The same catalogue step on the *true* mask and true sizes: the ceiling of the step itself.
* Speed: network + catalogue per box against PM + FoF per box, same run, same machine.

Writes ``benchmarks/results/nbody_halo3d/``: ``results.json``, ``summary.md``,
``masks.png`` (slices: linear field, true mask, probability, grown haloes),
``mass_function.png``.
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
sys.path.insert(0, str(ROOT))

from astrogen.datasets.protohalos import (ProtoHaloDatasetConfig,  # noqa: E402
                                          build_protohalo_dataset, read_protohalo_box)
from astrogen.nbody.halo_maps import dice  # noqa: E402
from astrogen.nbody.protohalo_catalog import (match_regions, protohalo_regions,  # noqa: E402
                                              regions_to_catalog)

OUT = ROOT / "benchmarks" / "results" / "nbody_halo3d"
METHODS = {"components": {"method": "components"},
           "watershed": {"method": "watershed", "min_distance": 2},
           "grow": {"method": "grow"}}


def _periodic_dist(a, b, L):
    d = np.asarray(a) - np.asarray(b)
    d -= L * np.rint(d / L)
    return np.sqrt((d ** 2).sum(-1))


def evaluate(labels, box, cfg, cosmo, shift, mmin, prob=None):
    """Catalogue of ``labels`` against the box's FoF haloes of >= mmin particles."""
    L = float(cfg.box_size)
    mp = cfg.particle_mass()
    cat = regions_to_catalog(labels, L, mp, mmin, delta_linear=box["linear"],
                             cosmology=cosmo, redshift=cfg.redshift, lattice_shift=shift,
                             prob=prob)
    hid, counts = box["halo_id"], box["halo_n"]
    big = np.flatnonzero(counts >= mmin)
    true = np.where(np.isin(hid, big), hid + 1, 0)
    keep = set(cat["region"].tolist())
    pairs = [(p, t, s) for p, t, s in match_regions(labels, true) if p in keep]
    row = {int(r): i for i, r in enumerate(cat["region"])}
    pred_n = cat["n_particles"]
    true_n = counts[big]
    ratio, dpos, dlag = [], [], []
    fof_pos = np.column_stack([box["halo_x"], box["halo_y"], box["halo_z"]])
    for p, t, _ in pairs:
        i = row[p]
        ratio.append(pred_n[i] / counts[t - 1])
        e = np.array([cat["x"][i], cat["y"][i], cat["z"][i]])
        lg = np.array([cat["x_lag"][i], cat["y_lag"][i], cat["z_lag"][i]])
        dpos.append(_periodic_dist(e, fof_pos[t - 1], L))
        dlag.append(_periodic_dist(lg, fof_pos[t - 1], L))
    return {"n_pred": int(len(pred_n)), "n_true": int(len(true_n)), "n_matched": len(pairs),
            "pred_n": pred_n.tolist(), "true_n": true_n.tolist(), "mass_ratio": ratio,
            "pos_err": dpos, "lag_offset": dlag, "labels": labels}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(ROOT / "astrogen/data/models/halo_vnet_32.keras"))
    ap.add_argument("--boxes", type=int, default=8)
    ap.add_argument("--heldout", default=str(ROOT / "output/datasets/protohalos_32_heldout"))
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    from astrogen.models.halo_vnet import load_halo_vnet

    model = load_halo_vnet(args.model)
    m = model.meta
    cfg = ProtoHaloDatasetConfig(
        n_boxes=args.boxes, first_box=10000, seed=int(m["dataset"]["seed"]),
        n_grid=int(m["n_grid"]), box_size=float(m["box_size"]), redshift=float(m["redshift"]),
        z_init=float(m["z_init"]), n_steps=int(m["n_steps"]),
        force_resolution=int(m["force_resolution"]), linking_length=float(m["linking_length"]),
        min_members=int(m["min_members"]), mask_min_particles=int(m["mask_min_particles"]),
        **{k: float(v) for k, v in m["cosmology"].items()})
    manifest = build_protohalo_dataset(args.heldout, cfg)
    cosmo = cfg.cosmology()
    shift = 0.5 / cfg.force_resolution
    mmin = cfg.mask_min_particles
    L, n = float(cfg.box_size), int(cfg.n_grid)

    # speed peer: PM + FoF of one box, timed in this run
    from astrogen.datasets.protohalos import make_protohalo_pm, simulate_protohalo_box

    pm = make_protohalo_pm(cfg)
    t_sim = []
    for b in manifest["box_ids"][:2]:
        t0 = time.perf_counter()
        simulate_protohalo_box(cfg, b, pm=pm)
        t_sim.append(time.perf_counter() - t0)

    thresholds = [0.3, 0.4, 0.5, 0.6, 0.7]
    inter = {t: 0 for t in thresholds}
    tot = {t: 0 for t in thresholds}
    per_box_dice = []
    res = {k: [] for k in [*METHODS, "oracle_grow", "oracle_watershed"]}
    t_net, t_cat = [], []
    boxes = []
    model.predict(read_protohalo_box(args.heldout, manifest["box_ids"][0])["linear"])  # warm
    for b in manifest["box_ids"]:
        box = read_protohalo_box(args.heldout, b)
        true_mask = box["mask"].astype(bool)
        t0 = time.perf_counter()
        prob, npred = model.predict(box["linear"])
        t_net.append(time.perf_counter() - t0)
        for t in thresholds:
            pm_ = prob > t
            inter[t] += int((pm_ & true_mask).sum())
            tot[t] += int(pm_.sum() + true_mask.sum())
        per_box_dice.append(dice(prob > 0.5, true_mask))
        for name, kw in METHODS.items():
            t0 = time.perf_counter()
            lab, _ = protohalo_regions(prob, 0.5, n_pred=npred, **kw)
            r = evaluate(lab, box, cfg, cosmo, shift, mmin, prob)
            if name == "grow":
                t_cat.append(time.perf_counter() - t0)
            res[name].append(r)
        true_n = np.where(box["halo_id"] >= 0,
                          box["halo_n"][np.maximum(box["halo_id"], 0)], 1).astype(float)
        lab, _ = protohalo_regions(true_mask.astype(float), 0.5, "grow", n_pred=true_n)
        res["oracle_grow"].append(evaluate(lab, box, cfg, cosmo, shift, mmin))
        lab, _ = protohalo_regions(true_mask.astype(float), 0.5, "watershed", min_distance=2)
        res["oracle_watershed"].append(evaluate(lab, box, cfg, cosmo, shift, mmin))
        boxes.append((box, prob, npred))
        print(f"box {b}: Dice {per_box_dice[-1]:.3f}; "
              + ", ".join(f"{k} {res[k][-1]['n_matched']}/{res[k][-1]['n_true']} "
                          f"(pred {res[k][-1]['n_pred']})" for k in res), flush=True)

    dice_t = {str(t): 2 * inter[t] / tot[t] for t in thresholds}
    edges = np.array([mmin, 2 * mmin, 4 * mmin, 8 * mmin, 16 * mmin, 1e9])
    summary = {"held_out_boxes": manifest["box_ids"], "config": cfg.to_dict(),
               "particle_mass_msun_h": cfg.particle_mass(),
               "threshold_mass_msun_h": mmin * cfg.particle_mass(),
               "dice_pooled_p>0.5": dice_t["0.5"], "dice_vs_threshold": dice_t,
               "dice_per_box": per_box_dice, "true_mask_fraction":
                   float(np.mean([bx[0]["mask"].mean() for bx in boxes])),
               "mass_bins_particles": edges.tolist(), "catalog": {}}
    for name, rs in res.items():
        nt = sum(r["n_true"] for r in rs)
        npd = sum(r["n_pred"] for r in rs)
        nm = sum(r["n_matched"] for r in rs)
        pn = np.concatenate([r["pred_n"] for r in rs]) if npd else np.zeros(0)
        tn = np.concatenate([r["true_n"] for r in rs])
        hp, _ = np.histogram(pn, edges)
        ht, _ = np.histogram(tn, edges)
        ratio = np.concatenate([r["mass_ratio"] for r in rs]) if nm else np.zeros(0)
        pos = np.concatenate([r["pos_err"] for r in rs]) if nm else np.zeros(0)
        lag = np.concatenate([r["lag_offset"] for r in rs]) if nm else np.zeros(0)
        summary["catalog"][name] = {
            "n_fof": int(nt), "n_pred": int(npd), "n_matched": int(nm),
            "completeness": nm / nt if nt else None, "purity": nm / npd if npd else None,
            "counts_pred": hp.tolist(), "counts_fof": ht.tolist(),
            "mass_function_ratio": [float(a / b) if b else None for a, b in zip(hp, ht)],
            "total_count_ratio": npd / nt if nt else None,
            "median_mass_ratio_matched": float(np.median(ratio)) if nm else None,
            "median_eulerian_pos_err_mpc_h": float(np.median(pos)) if nm else None,
            "median_lagrangian_offset_mpc_h": float(np.median(lag)) if nm else None}
    summary["speed"] = {"pm_fof_s_per_box": float(np.mean(t_sim)),
                        "network_s_per_box": float(np.mean(t_net)),
                        "grow_catalog_s_per_box": float(np.mean(t_cat)),
                        "ratio_pm_fof_over_network_plus_catalog":
                            float(np.mean(t_sim) / (np.mean(t_net) + np.mean(t_cat)))}
    (out / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
    _plots(out, boxes, res, summary, edges, L, n)
    _markdown(out, summary)
    print(json.dumps({k: v for k, v in summary.items() if k not in ("config",)}, indent=1))
    return 0


def _plots(out, boxes, res, summary, edges, L, n):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    box, prob, _ = boxes[0]
    k = int(np.argmax(box["mask"].sum(axis=(0, 1))))  # the z slice with most halo cells
    lab = res["grow"][0]["labels"]
    rng = np.random.default_rng(0)
    colours = rng.uniform(0.2, 1.0, (int(lab.max()) + 1, 3))
    colours[0] = 0
    true_lab = np.where(box["mask"] > 0, box["halo_id"] + 1, 0)
    tcol = rng.uniform(0.2, 1.0, (int(true_lab.max()) + 1, 3))
    tcol[0] = 0
    fig, ax = plt.subplots(1, 5, figsize=(17, 3.8))
    ext = [0, L, 0, L]
    panels = [(box["linear"][:, :, k], "linear delta (z = 0)", "RdBu_r"),
              (box["mask"][:, :, k], "true protohalo mask", "gray"),
              (prob[:, :, k], "network probability", "magma"),
              (tcol[true_lab[:, :, k]], "FoF haloes (Lagrangian)", None),
              (colours[lab[:, :, k]], "grown haloes (network)", None)]
    for a, (img, title, cmap) in zip(ax, panels):
        if cmap is None:
            a.imshow(np.transpose(img, (1, 0, 2)), origin="lower", extent=ext)
        else:
            kw = {"vmin": 0, "vmax": 1} if cmap in ("gray", "magma") else {}
            im = a.imshow(img.T, origin="lower", extent=ext, cmap=cmap, **kw)
            plt.colorbar(im, ax=a, fraction=0.046)
        a.set_title(title, fontsize=9)
        a.set_xlabel("x [Mpc/h]")
    ax[0].set_ylabel("y [Mpc/h]")
    fig.suptitle(f"held-out box {int(box['box_id'])}, slice z = {k} "
                 f"(Dice {summary['dice_per_box'][0]:.3f})", fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "masks.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    mp = summary["particle_mass_msun_h"]
    cen = np.sqrt(edges[:-1] * np.minimum(edges[1:], edges[-2] * 2)) * mp
    for name, st in (("fof", None), *summary["catalog"].items()):
        if st is None:
            c = summary["catalog"]["grow"]["counts_fof"]
            ax[0].step(cen, c, where="mid", color="k", lw=2, label="FoF (PM)")
            continue
        if name.startswith("oracle"):
            ls = ":"
        else:
            ls = "-"
        ax[0].step(cen, st["counts_pred"], where="mid", ls=ls, label=name)
        r = [np.nan if v is None else v for v in st["mass_function_ratio"]]
        ax[1].plot(cen, r, "o" + ls, label=name)
    for a in ax:
        a.set_xscale("log")
        a.set_xlabel("M [Msun/h]")
    ax[0].set_yscale("log")
    ax[0].set_ylabel("haloes (all held-out boxes)")
    ax[1].axhspan(0.9, 1.1, color="0.85")
    ax[1].axhline(1, color="k", lw=0.8)
    ax[1].set_ylabel("predicted / FoF")
    ax[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "mass_function.png", dpi=110)
    plt.close(fig)


def _markdown(out, s):
    lines = ["# 3-D halo network on held-out PM boxes",
             "", "`python benchmarks/nbody_halo3d_benchmark.py` "
             f"(boxes {s['held_out_boxes'][0]}..{s['held_out_boxes'][-1]}, "
             f"{s['config']['n_grid']}^3 particles in {s['config']['box_size']} Mpc/h, "
             f"particle mass {s['particle_mass_msun_h']:.3g} Msun/h, threshold "
             f"{s['config']['mask_min_particles']} particles = "
             f"{s['threshold_mass_msun_h']:.3g} Msun/h)", "",
             f"Dice (p > 0.5, pooled): **{s['dice_pooled_p>0.5']:.3f}** (target 0.9); per box "
             + ", ".join(f"{d:.3f}" for d in s["dice_per_box"]),
             "Dice vs threshold: " + ", ".join(f"{k}: {v:.3f}"
                                               for k, v in s["dice_vs_threshold"].items()),
             "", "| method | FoF | predicted | matched | completeness | purity | "
             "count ratio | MF ratio per bin (x2 in N from the threshold) | median M ratio | "
             "median pos. err. [Mpc/h] |", "|" + "---|" * 10]
    for name, c in s["catalog"].items():
        mf = ", ".join("-" if v is None else f"{v:.2f}" for v in c["mass_function_ratio"])
        fmt = (lambda v: "-" if v is None else f"{v:.2f}")
        lines.append(f"| {name} | {c['n_fof']} | {c['n_pred']} | {c['n_matched']} | "
                     f"{fmt(c['completeness'])} | {fmt(c['purity'])} | "
                     f"{fmt(c['total_count_ratio'])} | {mf} | "
                     f"{fmt(c['median_mass_ratio_matched'])} | "
                     f"{fmt(c['median_eulerian_pos_err_mpc_h'])} |")
    sp = s["speed"]
    lines += ["", "oracle_*: the catalogue step applied to the true mask (and true sizes for "
              "grow): the ceiling of the step itself.", "",
              f"Speed (same run): PM + FoF {sp['pm_fof_s_per_box']:.2f} s per box; network "
              f"{sp['network_s_per_box']:.2f} s + grow catalogue "
              f"{sp['grow_catalog_s_per_box']:.2f} s: ratio "
              f"{sp['ratio_pm_fof_over_network_plus_catalog']:.2f}x (shared 2-core machine)."]
    (out / "summary.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
