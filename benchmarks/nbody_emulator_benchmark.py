"""Benchmark of the N-body GAN emulator and the halo-map network against the PM solver + FoF
on held-out boxes (a slice dataset with a seed never used in training).

    python benchmarks/nbody_emulator_benchmark.py                       # shipped models
    python benchmarks/nbody_emulator_benchmark.py --gan run/nbody_gan_32.keras \
        --halo run/halo_unet_32.keras --test-data output/datasets/nbody_slices_32_test16

The test set (``--test-data``; built with ``--n-boxes`` boxes and ``--data-seed`` if missing)
holds, per box, the PM field projected into 3 x n_slabs slabs, the projected linear field and
the FoF haloes. Measured (JSON in ``--out``, PNG figures next to it):

1. emulator fidelity, conditional mode (emulated from each test box's linear field, through
   the model's condition: the projected linear slab or the projected 2LPT density) and
   unconditional mode (fresh linear fields): P(k) ratio, r(k), pixel histograms, peak counts,
   and the Frechet distances of those three statistics (Perraudin et al. 2019), with the
   Frechet distance between two halves of the PM test slabs as the reference level; for a
   2LPT-conditioned model the same ratio and r(k) of its 2LPT input (what the generator adds);
   the sample variance of the unconditional comparison (the fresh boxes' linear power over the
   test boxes');
2. halo maps on the PM slabs and on the emulated slabs: Dice coefficient of the masks,
   completeness and purity vs FoF above ``--mass-threshold`` (one-to-one matches within
   ``--match-radius``), mass-function ratio;
3. speed: one PM run of a box (the 3-D field, i.e. all its slabs) vs the emulator producing
   all slabs of that box from its linear field, in the same process, median of ``--repeats``.
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

from astrogen.training.gan_select import TEST_SEED  # noqa: E402 (refused as validation seed)

ROOT = Path(__file__).resolve().parents[1]


def _parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gan", default="nbody_gan_32", help="shipped name or .keras file")
    p.add_argument("--halo", default="halo_unet_32", help="shipped name or .keras file")
    p.add_argument("--test-data", default="output/datasets/nbody_slices_32_test16")
    p.add_argument("--n-boxes", type=int, default=16)
    p.add_argument("--data-seed", type=int, default=TEST_SEED,
                   help="seed of the test boxes (training uses 0, checkpoint choice 5)")
    p.add_argument("--seed", type=int, default=11, help="emulator noise / sampling seed")
    p.add_argument("--mass-threshold", type=float, default=3e13)
    p.add_argument("--match-radius", type=float, default=4.0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "nbody_emulator"))
    return p.parse_args(argv)


def _load_models(args):
    from astrogen.models.halo_unet import load_halo_unet
    from astrogen.models.nbody_gan import load_nbody_gan
    from astrogen.stages.nbody_emulate import resolve_nbody_model

    gan = load_nbody_gan(resolve_nbody_model(args.gan, "nbody_gan", "--gan"))
    halo = load_halo_unet(resolve_nbody_model(args.halo, "halo_unet", "--halo"))
    return gan, halo


def _test_set(args, gan):
    from astrogen.datasets.nbody_slices import (SliceDatasetConfig, build_slice_dataset,
                                                dataset_is_complete, read_manifest)

    m = gan.meta
    path = Path(args.test_data)
    if not dataset_is_complete(path):
        cfg = SliceDatasetConfig(n_boxes=args.n_boxes, seed=args.data_seed,
                                 n_grid=int(m["n_grid"]), box_size=float(m["box_size"]),
                                 slab_thickness=int(m["slab_thickness"]),
                                 **{k: v for k, v in m.get("pm", {}).items()},
                                 **m.get("cosmology", {}))
        build_slice_dataset(path, cfg)
    man = read_manifest(path)
    train = m.get("dataset", {})
    if man["config"]["seed"] == train.get("seed"):
        sys.exit(f"the test set {path} has the training seed {train.get('seed')}: refused")
    return path, man


def _slab_halos(box: dict, man: dict):
    """Per image of a box: FoF haloes (u, v in Mpc/h, mass) whose centre lies in the slab."""
    c = man["config"]
    n, t, L = c["n_grid"], c["slab_thickness"], c["box_size"]
    ns, depth = n // t, L / (n // t)
    pos = np.column_stack([box["halo_x"], box["halo_y"], box["halo_z"]])
    out = []
    for a in range(3):
        other = [b for b in range(3) if b != a]
        s_of = np.floor(np.mod(pos[:, a], L) / depth).astype(int) % ns
        for s in range(ns):
            sel = s_of == s
            out.append((pos[sel][:, other], box["halo_mass"][sel]))
    return out


def _halo_eval(halo, fields, masks, truth, cell, L, thr, radius):
    from astrogen.models.halo_unet import dice, mask_to_catalog
    from astrogen.nbody.emulator_metrics import halo_scores

    prob, logm = halo.predict(fields)
    d = dice(prob > 0.5, masks > 0)
    tmass, pmass = [], []
    per = {"n_true_above": 0, "n_pred_above": 0, "n_true_matched_above": 0,
           "n_pred_matched_above": 0}
    for i in range(len(fields)):
        cat = mask_to_catalog(prob[i], logm[i], 0.5, cell_size=cell)
        puv = np.column_stack([cat["u"], cat["v"]]) if len(cat["u"]) else np.zeros((0, 2))
        tuv, tm = truth[i]
        hs = halo_scores(tuv, tm, puv, cat["mass"], L, thr, radius)
        for k in per:
            per[k] += hs[k]
        tmass.append(tm)
        pmass.append(cat["mass"])
    return {"dice": d,
            "completeness": per["n_true_matched_above"] / max(per["n_true_above"], 1),
            "purity": per["n_pred_matched_above"] / max(per["n_pred_above"], 1),
            **per}, np.concatenate(tmass), np.concatenate(pmass)


def _mass_function(tm, pm, n_slabs_total, L, depth, thr):
    edges = np.geomspace(thr / 2, max(tm.max(), pm.max() if len(pm) else 0) * 1.01, 7)
    ct, _ = np.histogram(tm, edges)
    cp, _ = np.histogram(pm, edges)
    vol = n_slabs_total * L * L * depth
    dlnm = np.diff(np.log(edges))
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(ct > 0, cp / ct, np.nan)
    return {"mass_edges": edges.tolist(), "count_fof": ct.tolist(), "count_pred": cp.tolist(),
            "dndlnm_fof": (ct / vol / dlnm).tolist(), "dndlnm_pred": (cp / vol / dlnm).tolist(),
            "ratio": [None if not np.isfinite(r) else float(r) for r in ratio]}


def _speed(args, gan, path, man):
    import tensorflow as tf

    from astrogen.datasets.nbody_slices import SliceDatasetConfig, make_pm, read_box

    cfg = SliceDatasetConfig(**man["config"])
    box = read_box(path, man["box_ids"][0])
    lin3 = box["linear3d"].astype(np.float64)
    pm = make_pm(cfg)
    gen = gan.generator

    @tf.function
    def run_gen(c, z):
        return gen([c, z], training=False)

    t = int(man["config"]["slab_thickness"])

    def emulate_box():
        cond = gan.condition_slabs(lin3)  # all 3 x n_slabs slabs (projection, + LPT if used)
        c = tf.constant(gan.network_condition(cond)[..., None])
        z = tf.constant(gan.noise(len(cond), args.seed))
        s = run_gen(c, z).numpy()[..., 0]
        return gan.transform.inverse(s)

    def pm_box():
        return pm.run(a_out=[1.0], delta_linear=lin3).snapshots[-1].density.delta

    emulate_box()  # warm-up: tracing / graph building
    pm_box()
    te, tp, ce, cp, tc = [], [], [], [], []
    for _ in range(args.repeats):
        t0 = time.process_time()
        gan.condition_slabs(lin3)
        tc.append(time.process_time() - t0)
        t0, c0 = time.perf_counter(), time.process_time()
        pm_box()
        tp.append(time.perf_counter() - t0)
        cp.append(time.process_time() - c0)
        t0, c0 = time.perf_counter(), time.process_time()
        emulate_box()
        te.append(time.perf_counter() - t0)
        ce.append(time.process_time() - c0)
    n_img = 3 * int(man["config"]["n_grid"]) // t
    return {"pm_seconds_per_box": float(np.median(tp)),
            "emulator_seconds_per_box": float(np.median(te)),
            "speedup": float(np.median(tp) / np.median(te)),
            "pm_all": tp, "emulator_all": te,
            "pm_cpu_seconds_per_box": float(np.median(cp)),
            "emulator_cpu_seconds_per_box": float(np.median(ce)),
            "speedup_cpu_time": float(np.median(cp) / np.median(ce)),
            "condition_cpu_seconds_per_box": float(np.median(tc)),
            "condition": gan.condition,
            "what": f"one box: PM run (3-D field, {n_img} slabs after projection) vs emulator "
                    f"making the same {n_img} slabs from the box's linear field (projection + "
                    f"{'2LPT displacement and CIC paint + ' if gan.condition == 'lpt' else ''}"
                    "generator), warm (after one untimed call each), median of "
                    f"{args.repeats}, same process; TF threads: "
                    f"{tf.config.threading.get_intra_op_parallelism_threads() or 'default'}",
            "load_average_1min": os.getloadavg()[0]}


def _figures(out, true, emu, samp, lin, cond, unc, mf_pm, mf_emu):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    from astrogen.nbody.emulator_metrics import S_EDGES, s_transform

    # slices
    idx = [0, 9, 17, 30][: len(true)]
    fig, ax = plt.subplots(len(idx), 4, figsize=(10, 2.6 * len(idx)))
    ax = np.atleast_2d(ax)
    for r, i in enumerate(idx):
        for c, (im, title) in enumerate(((lin[i], "linear (delta)"), (s_transform(true[i]), "PM"),
                                         (s_transform(emu[i]), "emulated (same ICs)"),
                                         (s_transform(samp[i]), "unconditional sample"))):
            kw = {"cmap": "RdBu_r"} if c == 0 else {"cmap": "magma", "vmin": -1, "vmax": 1}
            ax[r, c].imshow(im.T, origin="lower", **kw)
            ax[r, c].set_xticks([])
            ax[r, c].set_yticks([])
            if r == 0:
                ax[r, c].set_title(title, fontsize=10)
    fig.suptitle("held-out test slabs, s = 2x/(x+1) - 1 of x = 1 + delta")
    for a in fig.axes:
        a.xaxis.set_minor_formatter(NullFormatter())
    fig.tight_layout()
    fig.savefig(out / "slices.png", dpi=90)
    plt.close(fig)
    # power spectra + histograms
    fig, ax = plt.subplots(1, 4, figsize=(17, 4))
    k = np.asarray(cond["k"])
    ax[0].loglog(k, cond["power_true"], "k-", label="PM")
    ax[0].loglog(k, cond["power_emulated"], "C1--", label="emulated (conditional)")
    ax[0].loglog(k, unc["power_emulated"], "C2:", label="unconditional")
    ax[0].set_xlabel("k [h/Mpc]")
    ax[0].set_ylabel("P(k) [(Mpc/h)^2]")
    ax[0].legend(fontsize=8)
    ax[1].semilogx(k, cond["power_ratio"], "C1-", label="ratio, conditional")
    ax[1].semilogx(k, unc["power_ratio"], "C2-", label="ratio, unconditional")
    ax[1].semilogx(k, cond["r_k"], "C3-", label="r(k) emulated x PM")
    ax[1].semilogx(k, cond["r_k_linear"], "C7--", label="r(k) linear x PM")
    if "power_ratio_lpt_input" in cond:
        ax[1].semilogx(k, cond["power_ratio_lpt_input"], "C0:", label="ratio, 2LPT input")
        ax[1].semilogx(k, cond["r_k_lpt_input"], "C9:", label="r(k) 2LPT input x PM")
    ax[1].axhspan(0.95, 1.05, color="0.85")
    ax[1].axhline(1, color="k", lw=0.5)
    ax[1].axvline(cond["k_half_nyquist"], color="0.5", ls=":")
    ax[1].set_ylim(0, 1.5)
    ax[1].set_xlabel("k [h/Mpc]")
    ax[1].legend(fontsize=8)
    c = 0.5 * (S_EDGES[1:] + S_EDGES[:-1])
    ax[2].semilogy(c, cond["pixel_hist_true"], "k-", label="PM")
    ax[2].semilogy(c, cond["pixel_hist_emulated"], "C1--", label="conditional")
    ax[2].semilogy(c, unc["pixel_hist_emulated"], "C2:", label="unconditional")
    ax[2].set_xlabel("s")
    ax[2].set_ylabel("pixel fraction")
    ax[2].legend(fontsize=8)
    ax[3].semilogy(c, cond["peak_hist_true"], "k-", label="PM")
    ax[3].semilogy(c, cond["peak_hist_emulated"], "C1--", label="conditional")
    ax[3].semilogy(c, unc["peak_hist_emulated"], "C2:", label="unconditional")
    ax[3].set_xlabel("peak height s")
    ax[3].set_ylabel("peaks per slab")
    ax[3].legend(fontsize=8)
    for a in fig.axes:
        a.xaxis.set_minor_formatter(NullFormatter())
    fig.tight_layout()
    fig.savefig(out / "power_spectra.png", dpi=90)
    plt.close(fig)
    # mass functions
    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    e = np.asarray(mf_pm["mass_edges"])
    mc = np.sqrt(e[1:] * e[:-1])
    ax[0].loglog(mc, mf_pm["dndlnm_fof"], "ko-", label="FoF (PM)")
    ax[0].loglog(mc, mf_pm["dndlnm_pred"], "C0s--", label="halo map on PM slabs")
    ax[0].loglog(mc, mf_emu["dndlnm_pred"], "C1^:", label="halo map on emulated slabs")
    ax[0].set_xlabel("M [Msun/h]")
    ax[0].set_ylabel("dn/dlnM [(Mpc/h)^-3]")
    ax[0].legend(fontsize=8)
    for mf, st, lab in ((mf_pm, "C0s-", "PM slabs"), (mf_emu, "C1^-", "emulated slabs")):
        ax[1].semilogx(mc, [np.nan if r is None else r for r in mf["ratio"]], st, label=lab)
    ax[1].axhline(1, color="k", lw=0.5)
    ax[1].set_xlabel("M [Msun/h]")
    ax[1].set_ylabel("halo map / FoF")
    ax[1].legend(fontsize=8)
    for a in fig.axes:
        a.xaxis.set_minor_formatter(NullFormatter())
    fig.tight_layout()
    fig.savefig(out / "mass_functions.png", dpi=90)
    plt.close(fig)


def main(argv=None) -> dict:
    from astrogen.datasets.nbody_slices import project_slabs, read_box, read_slices
    from astrogen.io.atomic import write_json
    from astrogen.nbody.emulator_metrics import (compare_slabs, cross_correlation,
                                                 frechet_distance, peak_histograms,
                                                 pixel_histograms, power_matrix)
    from astrogen.training.gan_select import dataset_condition_slabs

    args = _parse(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    gan, halo = _load_models(args)
    path, man = _test_set(args, gan)
    c = man["config"]
    L, cell, depth = float(c["box_size"]), float(man["cell_size"]), float(man["slab_depth"])
    data = read_slices(path)
    true, lin = data["evolved"].astype(np.float64), data["linear"]
    n_img = len(true)

    # 1. emulator fidelity
    cond_slabs = dataset_condition_slabs(gan, path)
    emu = gan.emulate(cond_slabs, seed=args.seed).astype(np.float64)
    samp = gan.sample(n_img, seed=args.seed + 1).astype(np.float64)
    cond = compare_slabs(true, emu, L)
    _, r_lin, _ = cross_correlation(true, 1.0 + lin, L)
    cond["r_k_linear"] = r_lin.tolist()
    if gan.condition == "lpt":  # the generator's input as an emulator of its own
        lpt_cmp = compare_slabs(true, cond_slabs.astype(np.float64), L)
        cond["power_ratio_lpt_input"] = lpt_cmp["power_ratio"]
        cond["r_k_lpt_input"] = lpt_cmp["r_k"]
    cond["peak_hist_true"] = peak_histograms(true).mean(0).tolist()
    cond["peak_hist_emulated"] = peak_histograms(emu).mean(0).tolist()
    unc = compare_slabs(true, samp, L, paired=False)
    unc["peak_hist_emulated"] = peak_histograms(samp).mean(0).tolist()
    # sample variance of the comparison: the fresh boxes' own linear slabs against the test
    # boxes' linear slabs (Gaussian fields of the same spectrum: any departure from 1 is the
    # scatter of a few boxes, which the unconditional ratio inherits)
    per_box = int(c["n_grid"]) // int(c["slab_thickness"])
    fresh = np.concatenate([project_slabs(d, int(c["slab_thickness"]), axes=(2,)) for d in
                            gan.draw_linear_fields(-(-n_img // per_box), args.seed + 1)])[:n_img]
    _, p_fresh = power_matrix(fresh, L, contrast=True)
    _, p_test = power_matrix(lin, L, contrast=True)
    unc["linear_input_power_ratio"] = (p_fresh.mean(0) / p_test.mean(0)).tolist()
    half = n_img // 2
    rng = np.random.default_rng(0)
    perm = rng.permutation(n_img)
    a, b = true[perm[:half]], true[perm[half:2 * half]]
    ref = {"power_spectrum": frechet_distance(np.log10(power_matrix(a, L)[1]),
                                              np.log10(power_matrix(b, L)[1])),
           "pixel_histogram": frechet_distance(pixel_histograms(a), pixel_histograms(b)),
           "peak_counts": frechet_distance(peak_histograms(a), peak_histograms(b))}

    # 2. halo maps
    truth = []
    for bid in man["box_ids"]:
        truth += _slab_halos(read_box(path, bid), man)
    h_pm, tm, pm_mass = _halo_eval(halo, true, data["mask"], truth, cell, L,
                                   args.mass_threshold, args.match_radius)
    h_emu, _, emu_mass = _halo_eval(halo, emu, data["mask"], truth, cell, L,
                                    args.mass_threshold, args.match_radius)
    mf_pm = _mass_function(tm, pm_mass, n_img, L, depth, args.mass_threshold)
    mf_emu = _mass_function(tm, emu_mass, n_img, L, depth, args.mass_threshold)

    # 3. speed
    speed = _speed(args, gan, path, man)

    _figures(out, true, emu, samp, lin, cond, unc, mf_pm, mf_emu)
    k = np.asarray(cond["k"])
    low = k < cond["k_half_nyquist"]
    result = {
        "test_set": {"path": str(path), "seed": c["seed"], "boxes": man["box_ids"],
                     "n_images": n_img, "n_grid": c["n_grid"], "box_size": L,
                     "slab_depth": depth, "training_seed": gan.meta.get("dataset", {}).get("seed")},
        "models": {"gan": str(args.gan), "gan_training": gan.meta.get("training"),
                   "halo": str(args.halo), "halo_training": halo.meta.get("training")},
        "emulator_conditional": cond,
        "emulator_unconditional": unc,
        "frechet_reference_pm_halves": ref,
        "summary": {
            "k_half_nyquist": cond["k_half_nyquist"],
            "cond_power_ratio_below_half_nyquist": [float(x) for x in
                                                    np.asarray(cond["power_ratio"])[low]],
            "cond_max_abs_power_error_below_half_nyquist":
                cond["max_abs_ratio_minus_1_below_half_nyquist"],
            "uncond_max_abs_power_error_below_half_nyquist":
                unc["max_abs_ratio_minus_1_below_half_nyquist"],
            "uncond_power_ratio_below_half_nyquist": [
                float(x) for x in np.asarray(unc["power_ratio"])[low]],
            "uncond_linear_input_power_ratio_below_half_nyquist": [
                float(x) for x in np.asarray(unc["linear_input_power_ratio"])[low]],
            "r_k_mean_below_half_nyquist": cond["r_mean_below_half_nyquist"],
            "r_k_linear_mean_below_half_nyquist": float(np.mean(np.asarray(r_lin)[low])),
            "condition": gan.condition,
            "lpt_input_power_ratio_below_half_nyquist": (
                [float(x) for x in np.asarray(cond["power_ratio_lpt_input"])[low]]
                if gan.condition == "lpt" else None),
            "r_k_lpt_input_mean_below_half_nyquist": (
                float(np.mean(np.asarray(cond["r_k_lpt_input"])[low]))
                if gan.condition == "lpt" else None),
            "frechet_conditional": cond["frechet"],
            "frechet_unconditional": unc["frechet"],
            "frechet_reference": ref,
            "peaks_per_slab": {"pm": cond["peaks_per_image_true"],
                               "conditional": cond["peaks_per_image_emulated"],
                               "unconditional": unc["peaks_per_image_emulated"]},
            "halo_map_on_pm": h_pm, "halo_map_on_emulated": h_emu,
            "mass_threshold": args.mass_threshold, "match_radius": args.match_radius,
            "mass_function_ratio_pm": mf_pm["ratio"],
            "mass_function_ratio_emulated": mf_emu["ratio"],
            "speed": speed},
        "mass_function_pm": mf_pm, "mass_function_emulated": mf_emu,
        "figures": ["slices.png", "power_spectra.png", "mass_functions.png"],
        "command": "python benchmarks/nbody_emulator_benchmark.py " + " ".join(
            sys.argv[1:] if argv is None else argv),
    }
    write_json(out / "results.json", result)
    print(json.dumps(result["summary"], indent=1, default=str))
    return result


if __name__ == "__main__":
    main()
