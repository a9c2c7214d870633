"""Scene deblending benchmark: held-out LSST-like scenes, our network, its probabilistic
(MC-dropout) variant and SEP, in the same run.

    python benchmarks/scene_deblend_benchmark.py            # 2,000 scenes
    python benchmarks/scene_deblend_benchmark.py --quick    # 100 scenes (checking)
    python benchmarks/scene_deblend_benchmark.py --n 200 --stem n200_x  # a lever on 200

Breakdowns: completeness, purity and flux errors by blendedness and by true i magnitude
(``MAG_BINS``; an unmatched detection is placed by its measured i magnitude).

Scenes: :mod:`astrogen.datasets.survey_scenes` (LSST g r i z, 0.2"/pixel, 10-year depth,
Kolmogorov seeing PSF per band, COSMOS galaxies at the sampler's density, stars; 64x64
pixels; seed 2, scene ids from 1,000,000: no training scene). Built in ``--data`` if missing.

Methods: ``sep`` = SEP with SExtractor's defaults (1.5 sigma, 5 pixels, 32 levels, contrast
0.005) on the same noise-weighted, PSF-filtered detection image, fluxes summed over its
segments; ``unet`` = the scene deblender (detection contrast 1e-4, network fractions,
redistribution); ``prob_unet`` = the same with ``--samples`` MC-dropout samples and the
card's temperature.

Truth and matching: detections are matched one-to-one to *all* true objects (also faint
ones and those in the margin around the scene) within one PSF FWHM (mean of the bands, 4
pixels) by :func:`astrogen.deblend.metrics.match_positions`. Completeness is over the
*targets*: true objects inside the scene with an optimal detection S/N >= 5; purity is the
fraction of detections matched to a true object. Flux errors (per band, matched targets):
``f_meas / f_true - 1`` with ``f_true`` the object's noiseless flux inside the scene; bias =
median, NMAD = 1.4826 median absolute deviation, MAPE = mean |error| (per cent). IoU per
matched target: the predicted segment vs the pixels where the target dominates the true
light and the true light exceeds 1 sigma of the detection image. ECE (``prob_unet``): 10
bins of the per-pixel confidence (1 - uncertainty) against "the assigned object is the
pixel's true majority-light owner" (:func:`astrogen.deblend.scene.owner_correct`), over the
pixels of the returned segmentation's objects: the footprint and label the temperature is
fitted on (validation scenes of the training set; :func:`check_heldout` refuses overlap). Speed: scenes per second of the whole
call (detection included), one process, as a ratio to SEP's in the same run.

Writes ``benchmarks/results/deblend_scenes/{results.json, results.md}`` (``--quick``:
``quick_results.*``).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import pickle
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "deblend_scenes"
BETA_BINS = [0.0, 0.01, 0.1, 0.5, 1.0001]
MAG_BINS = [0.0, 22.0, 23.0, 24.0, 25.0, 26.0, 30.0]
DATASET = {"n_scenes": 2000, "seed": 2, "first_scene": 1_000_000, "size": 64,
           "bands": ["lsst_g", "lsst_r", "lsst_i", "lsst_z"]}


def _stats(rel: np.ndarray) -> dict:
    rel = rel[np.isfinite(rel)]
    if len(rel) == 0:
        return {"n": 0, "bias": None, "nmad": None, "mape": None}
    med = float(np.median(rel))
    return {"n": int(len(rel)), "bias": med,
            "nmad": float(1.4826 * np.median(np.abs(rel - med))),
            "mape": float(100 * np.mean(np.abs(rel)))}


def _bins(values, edges):
    return np.clip(np.digitize(values, edges) - 1, 0, len(edges) - 2)


def evaluate(method_results, scenes, fwhm_pix, bands, snr_min=5.0, label_threshold=0.1,
             mag_i_of_flux=None):
    """Scores of one method on ``scenes`` (see the module docstring); ``mag_i_of_flux``
    (electrons -> AB magnitude in i) places unmatched detections in the purity-by-magnitude
    bins (matched ones take their true object's magnitude)."""
    from astrogen.deblend.metrics import expected_calibration_error, match_positions
    from astrogen.deblend.scene import owner_correct

    rows = {"target": [], "matched": [], "beta": [], "mag": [], "iou": [], "iou01": []}
    rel = {b: [] for b in bands}
    rel_beta, rel_mag = [], []
    det_mag, det_matched = [], []
    band_i = [b for b in bands if b.endswith("_i")][0]
    n_det = n_det_matched = 0
    conf, hit = [], []
    for res, sc in zip(method_results, scenes):
        t = sc["truth"]
        txy = np.c_[t["x"], t["y"]] if len(t["x"]) else np.zeros((0, 2))
        cat = res.catalog
        pxy = np.c_[cat["x"], cat["y"]] if len(cat) else np.zeros((0, 2))
        m = match_positions(txy, pxy, fwhm_pix)
        n_det += len(cat)
        n_det_matched += int((m["true_of_pred"] >= 0).sum())
        for k, j in enumerate(m["true_of_pred"]):
            det_matched.append(j >= 0)
            if j >= 0:
                det_mag.append(float(t["mag_lsst_i"][j]))
            elif mag_i_of_flux is not None:
                fi = float(cat[f"flux_{band_i}"][k])
                det_mag.append(float(mag_i_of_flux(fi)) if fi > 0 else 99.0)
            else:
                det_mag.append(np.nan)
        target = np.asarray(t["inside"], bool) & (np.asarray(t["snr"]) >= snr_min)
        mdet = sc["models_det"]
        owner = np.argmax(mdet, axis=0) if len(mdet) else None
        lit = mdet.sum(axis=0) > 1.0 if len(mdet) else None
        lit01 = mdet.sum(axis=0) > label_threshold if len(mdet) else None
        for j in np.flatnonzero(target):
            k = int(m["pred_of_true"][j])
            rows["target"].append(True)
            rows["matched"].append(k >= 0)
            rows["beta"].append(float(t["blendedness"][j]))
            rows["mag"].append(float(t["mag_lsst_i"][j]))
            if k >= 0:
                a = res.segmentation == k + 1
                b_ = lit & (owner == j)
                union = (a | b_).sum()
                rows["iou"].append(float((a & b_).sum() / union) if union else np.nan)
                c_ = lit01 & (owner == j)
                union = (a | c_).sum()
                rows["iou01"].append(float((a & c_).sum() / union) if union else np.nan)
                for b in bands:
                    ft = float(t[f"flux_scene_{b}"][j])
                    fm = float(cat[f"flux_{b}"][k])
                    rel[b].append(fm / ft - 1.0 if ft > 0 else np.nan)
                rel_beta.append(float(t["blendedness"][j]))
                rel_mag.append(float(t["mag_lsst_i"][j]))
            else:
                rows["iou"].append(np.nan)
                rows["iou01"].append(np.nan)
        if res.uncertainty is not None:
            sel = res.segmentation > 0
            conf.append(1.0 - res.uncertainty[sel])
            hit.append(owner_correct(mdet, m["true_of_pred"], res.segmentation)[sel])
    matched = np.asarray(rows["matched"], bool)
    beta = np.asarray(rows["beta"])
    mag = np.asarray(rows["mag"])
    iou = np.asarray(rows["iou"])
    out = {"n_targets": int(len(matched)), "n_detections": int(n_det),
           "completeness": float(matched.mean()) if len(matched) else None,
           "purity": float(n_det_matched / n_det) if n_det else None,
           "iou_median": float(np.nanmedian(iou)) if np.isfinite(iou).any() else None,
           "iou_mean": float(np.nanmean(iou)) if np.isfinite(iou).any() else None}
    iou01 = np.asarray(rows["iou01"])
    out["iou_median_truth_0.1sigma"] = (float(np.nanmedian(iou01)) if np.isfinite(iou01).any()
                                        else None)
    out["completeness_by_blendedness"] = []
    bb = _bins(beta, BETA_BINS)
    for i in range(len(BETA_BINS) - 1):
        s = bb == i
        out["completeness_by_blendedness"].append(
            {"range": BETA_BINS[i:i + 2], "n": int(s.sum()),
             "completeness": float(matched[s].mean()) if s.any() else None})
    mb = _bins(mag, MAG_BINS)
    out["completeness_by_mag_i"] = []
    for i in range(len(MAG_BINS) - 1):
        s = mb == i
        out["completeness_by_mag_i"].append(
            {"range": MAG_BINS[i:i + 2], "n": int(s.sum()),
             "completeness": float(matched[s].mean()) if s.any() else None})
    dm, dmt = np.asarray(det_mag), np.asarray(det_matched, bool)
    out["purity_by_mag_i"] = []
    dmb = _bins(np.nan_to_num(dm, nan=99.0), MAG_BINS)
    for i in range(len(MAG_BINS) - 1):
        s = dmb == i
        out["purity_by_mag_i"].append(
            {"range": MAG_BINS[i:i + 2], "n_detections": int(s.sum()),
             "purity": float(dmt[s].mean()) if s.any() else None})
    rm = _bins(np.asarray(rel_mag), MAG_BINS)
    out["flux_by_mag_i"] = []
    for i in range(len(MAG_BINS) - 1):
        s = rm == i
        out["flux_by_mag_i"].append(
            {"range": MAG_BINS[i:i + 2],
             "all_bands": _stats(np.concatenate([np.asarray(rel[b])[s] for b in bands])),
             band_i: _stats(np.asarray(rel[band_i])[s])})
    rb = np.asarray(rel_beta)
    out["flux"] = {}
    for b in bands:
        r = np.asarray(rel[b])
        d = {"all": _stats(r)}
        bins = _bins(rb, BETA_BINS)
        for i in range(len(BETA_BINS) - 1):
            d[f"beta_{BETA_BINS[i]}_{min(BETA_BINS[i + 1], 1.0)}"] = _stats(r[bins == i])
        d["beta_gt_0.1"] = _stats(r[rb > 0.1])
        out["flux"][b] = d
    allr = np.concatenate([np.asarray(rel[b]) for b in bands]) if bands else np.zeros(0)
    out["flux_all_bands"] = _stats(allr)
    out["flux_all_bands_beta_gt_0.1"] = _stats(np.concatenate(
        [np.asarray(rel[b])[rb > 0.1] for b in bands]))
    if conf:
        c, h = np.concatenate(conf), np.concatenate(hit)
        probs = np.stack([1 - c, c], axis=-1)
        out["ece"] = expected_calibration_error(probs, h.astype(np.int64))
        out["ece_pixels"] = int(len(c))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="100 scenes")
    ap.add_argument("--n", type=int, default=None, help="number of scenes (default 2000)")
    ap.add_argument("--data", default=str(ROOT / "output" / "scene_data" / "lsst_heldout"))
    ap.add_argument("--model", default="shipped")
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--methods", default="sep,unet,prob_unet",
                    help="comma list of sep, unet, prob_unet (sep is always run: the peer)")
    ap.add_argument("--resume", action="store_true",
                    help="reuse the chunks already cached under --cache/<stem>")
    ap.add_argument("--chunk", type=int, default=100, help="scenes per cached chunk")
    ap.add_argument("--score-only", action="store_true",
                    help="with --resume: compute nothing, score each method on the cached "
                         "chunks it has (a prefix of the scenes)")
    ap.add_argument("--cache", default=str(ROOT / "output" / "scene_bench_cache"))
    ap.add_argument("--fractions-on-footprint", action="store_true",
                    help="network methods: light fractions set to 0 outside the objects' "
                         "footprint (deblend_scene(fractions_on_footprint=True))")
    ap.add_argument("--stem", default=None,
                    help="output file stem under benchmarks/results/deblend_scenes/ "
                         "(default results, or quick_results with --quick)")
    args = ap.parse_args(argv)
    from astrogen.tf_quiet import import_tensorflow_quietly

    import_tensorflow_quietly()
    from astrogen.datasets.base import is_complete
    from astrogen.datasets.survey_scenes import (SceneDatasetConfig, build_scene_dataset,
                                                 read_scene_dataset)
    from astrogen.deblend.segment import SEP_DEFAULTS
    from astrogen.deblend.survey import deblend_survey_scene, load_scene_model

    n = args.n or (100 if args.quick else 2000)
    cfg = SceneDatasetConfig.from_dict(DATASET)
    if not is_complete(args.data):
        build_scene_dataset(args.data, cfg, progress=True)
    scenes = read_scene_dataset(args.data)[:n]
    spec = cfg.spec()
    sigma = spec.noise_sigma()
    fwhm = float(np.mean(spec.psf_fwhm()))
    fwhm_pix = fwhm / spec.pixel_scale
    bands = [s.band_name for s in spec.surveys()]
    wcs = spec.field().wcs()
    survey_i = [sv for sv in spec.surveys() if sv.band_name.endswith("_i")][0]
    net = load_scene_model(args.model)
    from astrogen.training.scene_trainer import check_heldout

    check_heldout(net.card, DATASET["seed"], [sc["scene_id"] for sc in scenes])
    methods = {
        "sep": dict(method="sep", detect_params=dict(SEP_DEFAULTS)),
        "unet": dict(method="unet", model=args.model),
        "prob_unet": dict(method="prob_unet", model=args.model, n_samples=args.samples),
    }
    if args.fractions_on_footprint:
        for name in ("unet", "prob_unet"):
            methods[name]["fractions_on_footprint"] = True
    wanted = {"sep", *[m.strip() for m in args.methods.split(",") if m.strip()]}
    methods = {k: v for k, v in methods.items() if k in wanted}
    stem = args.stem or ("quick_results" if args.quick else "results")
    OUT.mkdir(parents=True, exist_ok=True)
    # Chunks of scenes, every method on each chunk in turn (interleaved: a changing machine
    # load falls on all methods alike); each chunk's light results (catalog, instance map,
    # uncertainty; no fractions) and seconds are cached, so --resume continues an
    # interrupted run and --resume --n K scores the first K scenes already done.
    cache = Path(args.cache) / stem
    cache.mkdir(parents=True, exist_ok=True)
    if not args.resume:
        for f in cache.glob("*.pkl"):
            f.unlink()
    for name, kw in (methods.items() if not args.score_only else ()):  # warm-up, not timed
        deblend_survey_scene(scenes[0]["image"], pixel_scale=spec.pixel_scale, bands=bands,
                             noise_sigma=sigma, psf=fwhm, wcs=wcs, **kw)
    results = {name: [] for name in methods}
    seconds = {name: 0.0 for name in methods}
    # the fast methods first over all scenes, then the slow MC-dropout one (8 network
    # passes a scene): if the run must stop, the slow method is scored on the scenes it
    # finished (--score-only), the others on all
    phases = [[m for m in methods if m != "prob_unet"], [m for m in methods if m == "prob_unet"]]
    for phase in phases:
        for lo in range(0, len(scenes), args.chunk):
            chunk = scenes[lo:lo + args.chunk]
            for name in phase:
                f = cache / f"{name}_{lo:06d}_{len(chunk)}.pkl"
                if len(results[name]) < lo:  # an earlier chunk is missing (score-only)
                    continue
                if f.is_file():
                    with open(f, "rb") as fh:
                        res, sec = pickle.load(fh)
                elif args.score_only:
                    continue
                else:
                    t0 = time.perf_counter()
                    res = [deblend_survey_scene(sc["image"], pixel_scale=spec.pixel_scale,
                                                bands=bands, noise_sigma=sigma, psf=fwhm,
                                                wcs=wcs, seed=lo + i, **methods[name])
                           for i, sc in enumerate(chunk)]
                    sec = time.perf_counter() - t0
                    res = [dataclasses.replace(r, fractions=None) for r in res]
                    with open(f.with_suffix(".tmp"), "wb") as fh:
                        pickle.dump((res, sec), fh)
                    f.with_suffix(".tmp").rename(f)
                results[name] += res
                seconds[name] += sec
            if phase:
                print(f"scenes {lo + len(chunk)}/{len(scenes)}: " + ", ".join(
                    f"{k} {len(results[k])} in {seconds[k]:.0f} s" for k in phase), flush=True)
    evals = {}
    for name in methods:
        k = len(results[name])
        ev = evaluate(results[name], scenes[:k], fwhm_pix, bands,
                      label_threshold=float(net.card.get("fraction_background", 0.1)),
                      mag_i_of_flux=survey_i.magnitude)
        ev["seconds"] = seconds[name]
        ev["n_scenes"] = k
        evals[name] = ev
    summary = {"n_scenes": len(scenes), "dataset": {**DATASET, "path": args.data},
               "psf_fwhm_arcsec": fwhm, "match_radius_pix": fwhm_pix, "snr_min": 5.0,
               "model_card": {k: net.card.get(k) for k in ("survey", "bands", "pixel_scale",
                                                           "temperature", "training")},
               "command": "python benchmarks/scene_deblend_benchmark.py "
                          + " ".join(sys.argv[1:] if argv is None else argv),
               "load_average_at_end": list(__import__("os").getloadavg()),
               "methods": {}}
    for name in methods:
        ev = evals[name]
        ev["scenes_per_second"] = ev["n_scenes"] / seconds[name]
        ev["speed_ratio_to_sep"] = ((ev["n_scenes"] / seconds[name])
                                    / (evals["sep"]["n_scenes"] / seconds["sep"]))
        summary["methods"][name] = ev
    sep, un = summary["methods"]["sep"], summary["methods"].get("unet")
    summary["targets"] = {} if un is None else {
        "completeness_gain_points": 100 * (un["completeness"] - sep["completeness"]),
        "purity_difference_points": 100 * (un["purity"] - sep["purity"]),
        "mape_beta_gt_0.1_ratio_to_sep": (un["flux_all_bands_beta_gt_0.1"]["mape"]
                                          / sep["flux_all_bands_beta_gt_0.1"]["mape"]),
        "mape_overall_unet": un["flux_all_bands"]["mape"],
        "ece_prob_unet": summary["methods"].get("prob_unet", {}).get("ece"),
    }
    (OUT / f"{stem}.json").write_text(json.dumps(summary, indent=2) + "\n")
    lines = [f"# Scene deblending, {len(scenes)} held-out LSST-like scenes (g r i z, 64x64)",
             "", f"`{summary['command']}`", "",
             "Scenes scored per method: " + ", ".join(
                 f"{m} {summary['methods'][m]['n_scenes']}" for m in summary["methods"])
             + " (the first N of the held-out set; a method short of "
             f"{len(scenes)} did not finish in the run's time).", "",
             "| method | completeness | purity | IoU median (truth 1 sigma / 0.1 sigma) | MAPE all"
             " (%) | MAPE beta>0.1 (%) | NMAD all | bias all | scenes/s (x SEP) | ECE |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, ev in summary["methods"].items():
        fa, fb = ev["flux_all_bands"], ev["flux_all_bands_beta_gt_0.1"]
        lines.append(f"| {name} | {ev['completeness']:.3f} | {ev['purity']:.3f} | "
                     f"{ev['iou_median']:.3f} / {ev['iou_median_truth_0.1sigma']:.3f} | {fa['mape']:.1f} | {fb['mape']:.1f} | "
                     f"{fa['nmad']:.3f} | {fa['bias']:+.3f} | {ev['scenes_per_second']:.2f} "
                     f"({ev['speed_ratio_to_sep']:.2f}x) | "
                     f"{ev['ece']:.3f} |" if ev.get("ece") is not None else
                     f"| {name} | {ev['completeness']:.3f} | {ev['purity']:.3f} | "
                     f"{ev['iou_median']:.3f} / {ev['iou_median_truth_0.1sigma']:.3f} | {fa['mape']:.1f} | {fb['mape']:.1f} | "
                     f"{fa['nmad']:.3f} | {fa['bias']:+.3f} | {ev['scenes_per_second']:.2f} "
                     f"({ev['speed_ratio_to_sep']:.2f}x) | - |")
    lines += ["", "Completeness by blendedness (targets: inside, S/N >= 5):", "",
              "| beta | n | " + " | ".join(methods) + " |",
              "| --- | --- | " + " | ".join("---" for _ in methods) + " |"]
    for i in range(len(BETA_BINS) - 1):
        row = summary["methods"]["sep"]["completeness_by_blendedness"][i]
        vals = [summary["methods"][m]["completeness_by_blendedness"][i]["completeness"]
                for m in methods]
        lines.append(f"| {row['range'][0]}-{min(row['range'][1], 1.0)} | {row['n']} | "
                     + " | ".join("-" if v is None else f"{v:.3f}" for v in vals) + " |")
    lines += ["", "Completeness by i magnitude:", "",
              "| mag_i | n | " + " | ".join(methods) + " |",
              "| --- | --- | " + " | ".join("---" for _ in methods) + " |"]
    for i in range(len(MAG_BINS) - 1):
        row = summary["methods"]["sep"]["completeness_by_mag_i"][i]
        vals = [summary["methods"][m]["completeness_by_mag_i"][i]["completeness"]
                for m in methods]
        lines.append(f"| {row['range'][0]}-{row['range'][1]} | {row['n']} | "
                     + " | ".join("-" if v is None else f"{v:.3f}" for v in vals) + " |")
    lines += ["", "Purity by i magnitude (detections: the matched true object's magnitude, "
              "else the measured one):", "",
              "| mag_i | " + " | ".join(f"{m} (n)" for m in methods) + " |",
              "| --- | " + " | ".join("---" for _ in methods) + " |"]
    for i in range(len(MAG_BINS) - 1):
        rng = summary["methods"]["sep"]["purity_by_mag_i"][i]["range"]
        cells = []
        for m in methods:
            r = summary["methods"][m]["purity_by_mag_i"][i]
            cells.append("-" if r["purity"] is None else
                         f"{r['purity']:.3f} ({r['n_detections']})")
        lines.append(f"| {rng[0]}-{rng[1]} | " + " | ".join(cells) + " |")
    lines += ["", "Flux MAPE (%) of matched targets by true i magnitude (all bands / i band):",
              "", "| mag_i | n | " + " | ".join(methods) + " |",
              "| --- | --- | " + " | ".join("---" for _ in methods) + " |"]
    band_i = [b for b in bands if b.endswith("_i")][0]
    for i in range(len(MAG_BINS) - 1):
        rows_ = [summary["methods"][m]["flux_by_mag_i"][i] for m in methods]
        rng = rows_[0]["range"]
        cells = ["-" if r["all_bands"]["mape"] is None else
                 f"{r['all_bands']['mape']:.1f} / {r[band_i]['mape']:.1f}" for r in rows_]
        lines.append(f"| {rng[0]}-{rng[1]} | "
                     + "/".join(str(r[band_i]["n"]) for r in rows_) + " | "
                     + " | ".join(cells) + " |")
    lines += ["", "Flux MAPE (%) per band and blendedness bin:", ""]
    for name in methods:
        lines.append(f"- {name}: " + "; ".join(
            f"{b}: " + ", ".join(f"{k} {v['mape']:.1f}" for k, v in
                                 summary["methods"][name]["flux"][b].items()
                                 if v["mape"] is not None) for b in bands))
    lines += ["", "Targets: " + json.dumps(summary["targets"])]
    (OUT / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return summary


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
