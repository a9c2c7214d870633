"""Deblending benchmark: U-Net, probabilistic U-Net and SEP on the same held-out blended scenes.

Test scenes come from :func:`astrogen.physics.blends.make_blends` (the ``blend.generate``
stage) with galaxies drawn from :class:`~astrogen.catalog.cosmos.CosmosSampler` with a seed
of their own: no test galaxy or scene is in the training library (which uses
``derive_seed(dataset.seed, "library")``) and the test scenes are drawn at their exact
sub-pixel positions rather than composed from the library. Same survey, PSF, magnitude range
and geometry as ``configs/unet.yaml``.

Every method runs through its pipeline stage on the same chunks, timed in the same process
(scenes per second include the measurement of the catalog).

    python benchmarks/deblend_benchmark.py                     # 2,000 scenes, shipped models
    python benchmarks/deblend_benchmark.py --n-scenes 200 --unet-model path.keras ...
    # other models in the same run (same scenes, same process), e.g. retrained vs shipped:
    python benchmarks/deblend_benchmark.py --compare unet_old=unet:old.keras \
        --compare prob_unet_old=prob_unet:old_prob.keras

Writes ``benchmarks/results/deblend/deblend_benchmark.json`` (and the per-object records as
``objects_<method>.ecsv``), ``deblend_scenes.png`` and ``deblend_metrics.png``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
TARGETS = {"unet_iou_median_min": 0.9, "unet_flux_mape_max_percent": 8.0,
           "unet_vs_sep_mape_ratio_min": 4.0, "prob_unet_ece_max": 0.05}


def _ctx(name: str, seed: int, out: Path):
    from astrogen.stages.base import StageContext
    from astrogen.seeds import derive_seed

    wd = out / ".work" / name
    wd.mkdir(parents=True, exist_ok=True)
    return StageContext(name=name, seed=derive_seed(seed, name), output_dir=out, work_dir=wd)


def _f(v, fmt="{:.3f}"):
    return "n/a" if v is None or (isinstance(v, float) and not np.isfinite(v)) else fmt.format(v)


def markdown_table(result: dict) -> str:
    """The README tables, from the results dict (so every README number is this output)."""
    m = result["methods"]
    names = [k for k in ("unet", "prob_unet", "sep", "sep_1sigma") if k in m]
    names += [k for k in m if k not in names]  # --compare models
    head = "| measure | " + " | ".join(names) + " |\n| --- |" + " --- |" * len(names) + "\n"
    rows = [
        ("median IoU per object", lambda s: _f(s["iou_median"])),
        ("mean IoU per object", lambda s: _f(s["iou_mean"])),
        ("detection completeness (objects)", lambda s: _f(100 * s["completeness"], "{:.1f} %")),
        ("scenes with both objects found", lambda s: _f(100 * s["scenes_all_detected"],
                                                        "{:.1f} %")),
        ("flux MAPE, detected objects", lambda s: _f(s["flux"]["mape"], "{:.2f} %")),
        ("dmag bias (median, measured - true)", lambda s: _f(s["flux"]["dmag_median"],
                                                             "{:+.4f}")),
        ("dmag scatter (NMAD)", lambda s: _f(s["flux"]["dmag_nmad"], "{:.4f}")),
        ("dmag scatter (std)", lambda s: _f(s["flux"]["dmag_std"], "{:.4f}")),
        ("outliers abs(dmag) > 0.3", lambda s: _f(100 * s["flux"]["outlier_fraction"],
                                                  "{:.1f} %")),
        ("scenes per second", lambda s: _f(s["scenes_per_second"], "{:.1f}")),
    ]
    text = head + "".join("| " + lab + " | " + " | ".join(fn(m[k]) for k in names) + " |\n"
                          for lab, fn in rows)
    text += "\nMedian IoU by blendedness (Bosch+18) of the object:\n\n"
    bins = m[names[0]]["by_blendedness"]
    text += "| blendedness | n | " + " | ".join(names) + " |\n| --- | --- |" + \
        " --- |" * len(names) + "\n"
    for j, b in enumerate(bins):
        lo, hi = b["blendedness"]
        text += f"| {lo:g} - {hi:g} | {b['n']} | " + " | ".join(
            _f(m[k]["by_blendedness"][j]["iou_median"]) for k in names) + " |\n"
    orc = result.get("oracle_fractions")
    text += "\nFlux MAPE by blendedness (oracle: the true light fractions on the noisy scene, " \
        "the floor of flux redistribution):\n\n| blendedness | " + " | ".join(names) + \
        (" | oracle" if orc else "") + " |\n| --- |" + " --- |" * (len(names) + bool(orc)) + "\n"
    for j, b in enumerate(bins):
        lo, hi = b["blendedness"]
        text += f"| {lo:g} - {hi:g} | " + " | ".join(
            _f(m[k]["by_blendedness"][j]["flux_mape"], "{:.2f} %") for k in names) + (
            f" | {_f(orc['by_blendedness'][j]['flux_mape'], '{:.2f} %')}" if orc else "") + \
            " |\n"
    if orc:
        text += "| all | " + " | ".join(_f(m[k]["flux"]["mape"], "{:.2f} %") for k in names) \
            + f" | {_f(orc['flux_mape'], '{:.2f} %')} |\n"
    p = m.get("prob_unet", {})
    if "calibration_region" in p:
        text += ("\nProbabilistic U-Net uncertainty:\n\n| measure | object region | all pixels |"
                 "\n| --- | --- | --- |\n")
        cr, ca = p["calibration_region"], p["calibration_all_pixels"]
        text += (f"| ECE of the top label (10 bins) | {_f(cr['ece'], '{:.4f}')}"
                 f" | {_f(ca['ece'], '{:.4f}')} |\n")
        text += (f"| pixel error rate | {_f(100 * cr['error_rate'], '{:.2f} %')}"
                 f" | {_f(100 * ca['error_rate'], '{:.2f} %')} |\n")
        text += (f"| ROC AUC, entropy flags wrong pixels | {_f(p['uncertainty_auc_region'])} | "
                 f"{_f(p['uncertainty_auc_all_pixels'])} |\n")
    text += "\nTargets:\n\n| check | measured | met |\n| --- | --- | --- |\n"
    for k, (v, ok) in result["checks"].items():
        text += f"| {k} | {_f(v, '{:.4g}')} | {'yes' if ok else '**no**'} |\n"
    return text


def oracle_fluxes(batch, fraction_background: float = 0.1) -> dict:
    """Flux redistribution with the *true* light fractions ``m_k / (sum_j m_j + b sigma)``
    (the U-Net's training target, ``fraction_background`` = b) applied to the noisy scene:
    the error a perfect segmenter of this kind would still make (noise in the object's
    pixels, light below the background level). One entry per true object."""
    from astrogen.physics.blends import fractions_in_order

    obj = batch.objects
    frac = fractions_in_order(batch.models, fraction_background * batch.sigma())
    sid = np.asarray(batch.scene_ids)
    out = {"flux_true": [], "flux_oracle": [], "blendedness": []}
    for r in range(len(obj)):
        i = int(np.flatnonzero(sid == int(obj["scene_id"][r]))[0])
        k = int(obj["slot"][r])
        out["flux_oracle"].append(float(np.sum(batch.images[i] * frac[i, ..., k + 1])))
        out["flux_true"].append(float(obj["flux_stamp"][r]))
        out["blendedness"].append(float(obj["blendedness"][r]))
    return {k: np.asarray(v) for k, v in out.items()}


def oracle_summary(o: dict) -> dict:
    """MAPE [%] of :func:`oracle_fluxes`, overall and in the benchmark's blendedness bins."""
    from astrogen.deblend.evaluate import BLENDEDNESS_BINS as bins

    ape = 100.0 * np.abs(o["flux_oracle"] / o["flux_true"] - 1.0)
    rows = []
    for lo, hi in zip(bins[:-1], bins[1:]):
        sel = (o["blendedness"] >= lo) & ((o["blendedness"] < hi) if hi < bins[-1]
                                          else (o["blendedness"] <= hi))
        rows.append({"blendedness": [lo, hi], "n": int(sel.sum()),
                     "flux_mape": float(np.mean(ape[sel])) if sel.any() else None})
    return {"n_objects": int(len(ape)), "flux_mape": float(np.mean(ape)),
            "by_blendedness": rows,
            "what": "true light fractions (softened at 0.1 sigma, the U-Net's target) x the "
                    "noisy scene: the floor of flux redistribution"}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-scenes", type=int, default=2000)
    ap.add_argument("--chunk", type=int, default=200, help="scenes per chunk")
    ap.add_argument("--seed", type=int, default=20261124, help="test-set seed")
    ap.add_argument("--unet-model", default="shipped")
    ap.add_argument("--prob-unet-model", default="shipped")
    ap.add_argument("--n-samples", type=int, default=16)
    ap.add_argument("--prob-unet-temperature", type=float, default=None,
                    help="override the model's fitted temperature (1 = the raw network)")
    ap.add_argument("--max-distance", type=float, default=3.0, help="matching radius, pixels")
    ap.add_argument("--compare", action="append", default=[], metavar="NAME=KIND:PATH",
                    help="another model measured on the same scenes (KIND unet or prob_unet)")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "deblend"))
    args = ap.parse_args(argv)

    import astrogen.stages  # noqa: F401
    from astropy.table import vstack

    from astrogen.catalog.cosmos import CosmosSampler
    from astrogen.deblend.evaluate import object_records, pixel_records, summarize, true_labels
    from astrogen.deblend.figures import plot_metrics, plot_scenes
    from astrogen.io.atomic import write_json
    from astrogen.seeds import derive_seed
    from astrogen.stages.deblend import (BlendGenerate, DeblendProbUNet, DeblendSEP,
                                         DeblendUNet)
    from astrogen.version import __version__

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg_blend = dict(survey={"base": "hst_cosmos", "pixel_scale": 0.06}, stamp_size=64,
                     min_objects=2, max_objects=2, central_offset=3.0, separation=[0.5, 3.0],
                     min_separation=2.5, max_separation=22.0, margin=28, profile="sersic")
    gen = BlendGenerate(**cfg_blend)
    gen.setup(_ctx("blends", args.seed, out))
    methods = {
        "unet": DeblendUNet(model=args.unet_model),
        "prob_unet": DeblendProbUNet(model=args.prob_unet_model, n_samples=args.n_samples),
        "sep": DeblendSEP(thresh=1.5),
        "sep_1sigma": DeblendSEP(thresh=1.0),
    }
    compare = {}
    for spec in args.compare:
        name, _, rest = spec.partition("=")
        kind, _, path = rest.partition(":")
        if not name or name in methods or kind not in ("unet", "prob_unet") or not path:
            ap.error(f"--compare {spec!r}: expected NAME=unet:PATH or NAME=prob_unet:PATH "
                     f"with a new NAME")
        methods[name] = (DeblendUNet(model=path) if kind == "unet" else
                         DeblendProbUNet(model=path, n_samples=args.n_samples))
        compare[name] = {"kind": kind, "model": path}
    for name, st in methods.items():
        st.setup(_ctx(name, args.seed, out))
    if args.prob_unet_temperature is not None:
        methods["prob_unet"].net.temperature = args.prob_unet_temperature
    sampler = CosmosSampler(mag_range=(18.0, 24.0))
    k = gen.geometry.max_objects
    recs: dict[str, list] = {m: [] for m in methods}
    pix: dict[str, dict] = {m: {} for m in methods}
    secs = {m: 0.0 for m in methods}
    t_gen = 0.0
    oracle: dict[str, list] = {}
    fig_batch = None
    n_done = 0
    t_all = time.perf_counter()
    for lo in range(0, args.n_scenes, args.chunk):
        hi = min(args.n_scenes, lo + args.chunk)
        t0 = time.perf_counter()
        rows = sampler.sample(derive_seed(args.seed, "catalog"), np.arange(lo * k, hi * k))
        b = gen.process(rows)
        t_gen += time.perf_counter() - t0
        for name, st in methods.items():
            t0 = time.perf_counter()
            b = st.process(b)
            secs[name] += time.perf_counter() - t0
        for key, v in oracle_fluxes(b).items():
            oracle.setdefault(key, []).append(v)
        for name in methods:
            recs[name].append(object_records(b, name, args.max_distance))
            p = pixel_records(b, name, max_pixels=400_000)
            for key, v in p.items():
                pix[name].setdefault(key, []).append(v)
        if fig_batch is None:
            fig_batch = b
        n_done = hi
        print(f"{hi}/{args.n_scenes} scenes, {time.perf_counter() - t_all:.0f} s", flush=True)
    summaries = {}
    for name in methods:
        obj = vstack(recs[name])
        obj.write(out / f"objects_{name}.ecsv", format="ascii.ecsv", overwrite=True)
        p = {kk: np.concatenate(v) for kk, v in pix[name].items()} or None
        summaries[name] = summarize(obj, p, secs[name], n_done)
    u, s_best = summaries["unet"], min((summaries["sep"], summaries["sep_1sigma"]),
                                       key=lambda s: s["flux"]["mape"])
    checks = {
        "unet_iou_median": [u["iou_median"], u["iou_median"] >= TARGETS["unet_iou_median_min"]],
        "unet_flux_mape_percent": [u["flux"]["mape"],
                                   u["flux"]["mape"] <= TARGETS["unet_flux_mape_max_percent"]],
        "sep_best_over_unet_mape_ratio": [s_best["flux"]["mape"] / u["flux"]["mape"],
                                          s_best["flux"]["mape"] / u["flux"]["mape"]
                                          >= TARGETS["unet_vs_sep_mape_ratio_min"]],
    }
    if "calibration_region" in summaries["prob_unet"]:
        for key in ("calibration_region", "calibration_all_pixels"):
            e = summaries["prob_unet"][key]["ece"]
            checks[f"prob_unet_ece_{key.split('_', 1)[1]}"] = [e, e <= TARGETS["prob_unet_ece_max"]]
    import galsim
    import sep
    import tensorflow as tf

    result = {
        "benchmark": "deblend", "astrogen": __version__, "python": platform.python_version(),
        "tensorflow": tf.__version__, "galsim": galsim.__version__, "sep": sep.__version__,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "load_average_end": list(os.getloadavg())},
        "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": " ".join([Path(sys.argv[0]).name] + (argv or sys.argv[1:])),
        "n_scenes": n_done, "test_seed": args.seed, "scene_config": cfg_blend,
        "mag_range": [18.0, 24.0], "max_distance_pix": args.max_distance,
        "truth": "ownership above 1 sigma of the noiseless objects; flux_true = flux of the "
                 "noiseless object inside the stamp",
        "models": {"unet": args.unet_model, "prob_unet": args.prob_unet_model,
                   "n_samples": args.n_samples,
                   "prob_unet_temperature": float(methods["prob_unet"].net.temperature),
                   "compare": compare},
        "scene_generation_seconds": t_gen,
        "targets": TARGETS, "checks": checks, "methods": summaries,
        "oracle_fractions": oracle_summary({k: np.concatenate(v) for k, v in oracle.items()}),
    }
    write_json(out / "deblend_benchmark.json", result)
    (out / "deblend_benchmark.md").write_text(markdown_table(result))
    k6 = min(6, len(fig_batch))
    plot_scenes(out / "deblend_scenes.png", fig_batch.images[:k6], true_labels(fig_batch)[:k6],
                {m: np.asarray(fig_batch.results[m]["labels"])[:k6] for m in methods},
                {m: np.asarray(fig_batch.results[m]["uncertainty"])[:k6] for m in methods
                 if "uncertainty" in fig_batch.results[m]},
                [f"scene {s}" for s in fig_batch.scene_ids[:k6]])
    plot_metrics(out / "deblend_metrics.png", summaries)
    import shutil

    shutil.rmtree(out / ".work", ignore_errors=True)
    short = {m: {"iou_median": s["iou_median"], "completeness": s["completeness"],
                 "flux_mape": s["flux"]["mape"], "dmag_median": s["flux"]["dmag_median"],
                 "dmag_nmad": s["flux"]["dmag_nmad"],
                 "scenes_per_second": s["scenes_per_second"]} for m, s in summaries.items()}
    print(json.dumps({"checks": checks, "summary": short,
                      "oracle_flux_mape": result["oracle_fractions"]["flux_mape"]},
                     indent=1, default=float))
    return result


if __name__ == "__main__":
    main()
