"""BTK's metrics against ours on the same BTK LSST blends, and deblenders measured through BTK.

For ``--n-scenes`` BlendingToolKit LSST blends (``CatsimGenerator`` on
``examples/catsim/catsim_example.fits``, ``DefaultSampling``: 1 to ``--max-number``
galaxies with i <= 25.3 within ``--max-shift`` arcsec of the centre of 24 arcsec = 120 pixel
stamps, six bands, BTK's Poisson noise) every deblender runs through the BTK adapter
(:func:`astrogen.deblend.btk.as_btk_deblender`), and

1. **agreement**: BTK's metrics (``btk.match.PixelHungarianMatcher``, ``Recall``,
   ``Precision``, segmentation ``IoU``) against ours (:mod:`astrogen.deblend.metrics`:
   ``detection_completeness``, ``iou``) on the same inputs: the number of blends whose
   matched pairs differ and the largest difference of each number;
2. **methods** (same run, same blends): completeness, purity (matched within one i-band PSF
   FWHM), flux bias / NMAD / MAPE per band against BTK's isolated-image fluxes, overall and
   for blendedness > 0.1, BTK's reconstruction metrics, and seconds per scene, for
   ``sep_scene`` (ours), BTK's own ``SepSingleBand`` (detection and reconstruction only: it
   reports no fluxes; here on the i band), the shipped LSST scene network
   (``unet``, ``prob_unet``: :func:`astrogen.deblend.btk.network_scene`, on g r i z, the other
   bands measured with its light fractions) and, when installed, scarlet2
   (:mod:`astrogen.deblend.external`).

Writes ``benchmarks/results/btk/<tag>.json`` and ``.md``; the committed results are::

    python benchmarks/btk_metrics_agreement.py --n-scenes 200 --batch-size 50 \
        --methods sep_scene,unet,prob_unet,btk_sep
    python benchmarks/btk_metrics_agreement.py --n-scenes 16 --batch-size 8 \
        --methods sep_scene,scarlet2,btk_sep --tag sep_vs_scarlet2     # scarlet2: ~37 s / scene

Needs the ``btk`` extra (and ``scarlet2`` for that method).
"""
from __future__ import annotations

import argparse
import functools
import json
import platform
import time
from pathlib import Path

import numpy as np

from astrogen.deblend import btk as ab
from astrogen.deblend.metrics import flux_error_stats
from astrogen.deblend.sep_scene import sep_scene

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "btk"
CATSIM = ROOT / "examples" / "catsim" / "catsim_example.fits"


def _batches(n_scenes, batch_size, max_number, max_shift, seed):
    import btk.draw_blends
    import btk.sampling_functions
    import btk.survey

    sampling = btk.sampling_functions.DefaultSampling(
        stamp_size=24.0, max_number=max_number, min_number=1, max_shift=max_shift,
        max_mag=25.3, seed=seed)
    survey = btk.survey.get_surveys("LSST")
    gen = btk.draw_blends.CatsimGenerator(ab.catsim_catalog(CATSIM), sampling, survey,
                                          batch_size=batch_size, njobs=1, add_noise="all",
                                          seed=seed)
    for _ in range(n_scenes // batch_size):
        yield next(gen)


def _flux_summary(matched, bands):
    out = {}
    if not len(matched):
        return out
    blended = np.asarray(matched["blendedness"]) > 0.1
    for band in bands:
        ft = np.asarray(matched[f"true_flux_{band}"])
        fm = np.asarray(matched[f"flux_{band}"])
        ok = ft > 0
        out[band] = {"all": flux_error_stats(ft[ok], fm[ok]),
                     "blendedness_gt_0.1": flux_error_stats(ft[ok & blended],
                                                            fm[ok & blended])}
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n-scenes", type=int, default=400)
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--max-number", type=int, default=5)
    p.add_argument("--max-shift", type=float, default=4.0, help="arcsec")
    p.add_argument("--seed", type=int, default=2026)
    p.add_argument("--methods", default="sep_scene,btk_sep",
                   help="comma list of sep_scene, unet, prob_unet, scarlet2, btk_sep")
    p.add_argument("--tag", default="metrics_agreement", help="output file stem")
    p.add_argument("--out", type=Path, default=OUT)
    a = p.parse_args(argv)
    btk = ab.import_btk()
    import btk.deblend

    max_n = a.max_number + 10  # room for SEP's spurious splits
    wanted = [m.strip() for m in a.methods.split(",") if m.strip()]
    methods = {}
    if "sep_scene" in wanted:
        methods["sep_scene"] = ab.as_btk_deblender(sep_scene, max_n)
    if "scarlet2" in wanted:
        from astrogen.deblend.external import import_scarlet2, scarlet2_scene

        import_scarlet2()
        methods["scarlet2"] = ab.as_btk_deblender(scarlet2_scene, max_n)
    for kind in ("unet", "prob_unet"):  # the shipped LSST scene network on its g r i z
        if kind in wanted:
            methods[kind] = ab.as_btk_deblender(
                functools.partial(ab.network_scene, method=kind), max_n)
    if "btk_sep" in wanted:
        methods["btk_sep_single_band_i"] = btk.deblend.SepSingleBand(max_n, use_band=3)
    if "sep_scene" not in methods:
        raise SystemExit("--methods must include sep_scene (the peer of every time ratio)")

    agree = {"n_blends": 0, "n_blends_matching_differs": 0, "max_abs_diff": {}}
    acc = {m: {"seconds": 0.0, "btk": [], "ours": [], "matched": []} for m in methods}
    fwhm_pix = None
    bands = None
    render_s = 0.0
    t0 = time.perf_counter()
    for batch in _batches(a.n_scenes, a.batch_size, a.max_number, a.max_shift, a.seed):
        render_s += time.perf_counter() - t0
        if fwhm_pix is None:
            s = batch.survey
            fwhm_pix = float(s.get_filter("i").psf_fwhm.to_value("arcsec")
                             / s.pixel_scale.to_value("arcsec"))
            bands = ab.survey_bands(s)
        for name, deb in methods.items():
            t1 = time.perf_counter()
            db = deb(batch)
            acc[name]["seconds"] += time.perf_counter() - t1
            theirs = ab.btk_metrics(batch, db, max_sep=fwhm_pix)
            acc[name]["btk"].append({k: theirs[k] for k in
                                     ("n_true", "n_pred", "n_matched", "iou_values",
                                      "rmse_values", "psnr_values", "ssim_values")
                                     if k in theirs})
            if name == "btk_sep_single_band_i":
                continue
            results = [d["scene_result"] for d in db.extra_data]
            ours = ab.our_metrics(batch, results, max_sep=fwhm_pix)
            acc[name]["ours"].append({k: ours[k] for k in
                                      ("n_true", "n_pred", "n_matched")})
            acc[name]["matched"].append(ours["matched"])
            # agreement of the two sets of metrics on the same inputs
            for i in range(batch.batch_size):
                tp = set(zip(theirs["true_index"][i].tolist(), theirs["pred_index"][i].tolist()))
                op = set(zip(ours["true_index"][i].tolist(), ours["pred_index"][i].tolist()))
                agree["n_blends"] += 1
                agree["n_blends_matching_differs"] += int(tp != op)
            for key_t, key_o in (("recall", "completeness"), ("precision", "purity"),
                                 ("iou", "iou")):
                d = abs(theirs[key_t] - ours[key_o])
                agree["max_abs_diff"][f"{key_t}_vs_{key_o}"] = max(
                    agree["max_abs_diff"].get(f"{key_t}_vs_{key_o}", 0.0), d)
        t0 = time.perf_counter()

    from astropy.table import vstack

    n_scenes = (a.n_scenes // a.batch_size) * a.batch_size
    summary = {}
    for name, d in acc.items():
        nt = np.concatenate([b["n_true"] for b in d["btk"]])
        npred = np.concatenate([b["n_pred"] for b in d["btk"]])
        nm = np.concatenate([b["n_matched"] for b in d["btk"]])
        row = {"completeness_btk_recall": float(nm.sum() / nt.sum()),
               "purity_btk_precision": float(nm.sum() / npred.sum()),
               "n_true": int(nt.sum()), "n_pred": int(npred.sum()), "n_matched": int(nm.sum()),
               "seconds_per_scene": d["seconds"] / n_scenes}
        for k in ("iou", "rmse", "psnr", "ssim"):
            vals = [np.ravel(b[f"{k}_values"]) for b in d["btk"] if f"{k}_values" in b]
            if vals:
                v = np.concatenate(vals)
                row[f"btk_{k}_mean"] = float(np.nanmean(v)) if v.size else float("nan")
        if d["ours"]:
            onm = sum(int(b["n_matched"].sum()) for b in d["ours"])
            ont = sum(int(b["n_true"].sum()) for b in d["ours"])
            onp = sum(int(b["n_pred"].sum()) for b in d["ours"])
            row["completeness_ours"] = onm / ont
            row["purity_ours"] = onp and onm / onp
            matched = vstack([m for m in d["matched"] if len(m)])
            row["flux"] = _flux_summary(matched, bands)
        summary[name] = row
    for name in summary:
        summary[name]["time_ratio_vs_sep_scene"] = (summary[name]["seconds_per_scene"]
                                                    / summary["sep_scene"]["seconds_per_scene"])

    result = {
        "command": "python benchmarks/btk_metrics_agreement.py " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(a).items() if k != "out"),
        "scenes": {"n": n_scenes, "survey": "LSST (surveycodex via btk.survey.get_surveys)",
                   "bands": bands, "stamp_pix": 120, "pixel_scale_arcsec": 0.2,
                   "objects_per_scene": [1, a.max_number], "max_shift_arcsec": a.max_shift,
                   "max_mag_i": 25.3, "catalog": "examples/catsim/catsim_example.fits",
                   "render_seconds_total": render_s},
        "match_radius_pix": fwhm_pix,
        "agreement": agree,
        "methods": summary,
        "versions": {"btk": getattr(btk, "__version__", "?"),
                     "python": platform.python_version()},
    }
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / f"{a.tag}.json").write_text(json.dumps(result, indent=2, default=float))
    lines = [f"# BTK metrics agreement and deblenders on {n_scenes} BTK LSST blends", "",
             f"Command: `{result['command']}`", "",
             f"Agreement ({', '.join(m for m in summary if m != 'btk_sep_single_band_i')}): "
             f"{agree['n_blends_matching_differs']} of {agree['n_blends']} blends with different "
             f"matched pairs; largest |BTK - ours|: " + ", ".join(
                 f"{k} {v:.2e}" for k, v in agree["max_abs_diff"].items()), "",
             f"Matched within one i-band PSF FWHM = {fwhm_pix:.2f} pix.", "",
             "| method | completeness | purity | IoU (BTK) | i flux MAPE % | i MAPE % "
             "(blendedness > 0.1) | i dmag NMAD | s / scene | time vs sep_scene |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, r in summary.items():
        fi = r.get("flux", {}).get("lsst_i")
        lines.append(
            f"| {name} | {r['completeness_btk_recall']:.3f} | {r['purity_btk_precision']:.3f} "
            f"| {r.get('btk_iou_mean', float('nan')):.3f} | "
            f"{fi['all']['mape'] if fi else float('nan'):.1f} | "
            f"{fi['blendedness_gt_0.1']['mape'] if fi else float('nan'):.1f} | "
            f"{fi['all']['dmag_nmad'] if fi else float('nan'):.3f} | "
            f"{r['seconds_per_scene']:.4f} | {r['time_ratio_vs_sep_scene']:.2f} |")
    (a.out / f"{a.tag}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
