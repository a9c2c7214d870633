"""Which footprint the scene deblender's instance map (and optionally its light fractions)
is restricted to, measured on held-out scenes (issue 15, the square segments).

    python benchmarks/scene_instance_footprint.py --n 200

The network's fractions are computed once per scene (the shipped model, ``unet``); each
variant then only changes :func:`astrogen.deblend.scene.object_footprint` /
:func:`astrogen.deblend.scene.instance_map` (and, for ``*_fractions`` variants, sets the
fractions to 0 outside the footprint before measuring fluxes). Scored by
``benchmarks/scene_deblend_benchmark.py``'s ``evaluate`` on the same held-out scenes (seed 2,
ids from 10^6). Writes ``benchmarks/results/deblend_scenes/instance_footprint_n<N>.{json,md}``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

#: variant -> (footprint threshold in sigma of the filtered detection image, None: no
#: footprint, "sep": SEP segments only; fractions restricted too)
VARIANTS = {"none (before)": (None, False), "sep segments": ("sep", False),
            "sep + 2 sigma": (2.0, False), "sep + 3 sigma": (3.0, False),
            "sep + 4 sigma": (4.0, False), "sep + 2 sigma, fractions": (2.0, True)}


def _f(v, fmt=".3f"):
    return "-" if v is None else format(v, fmt)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--debug", action="store_true")
    ap.add_argument("--data", default=str(ROOT / "output" / "scene_data" / "lsst_heldout"))
    args = ap.parse_args(argv)
    from astrogen.tf_quiet import import_tensorflow_quietly

    import_tensorflow_quietly()
    from scene_deblend_benchmark import DATASET, evaluate

    from astrogen.datasets.survey_scenes import SceneDatasetConfig, read_scene_dataset
    from astrogen.deblend.result import SceneResult
    from astrogen.deblend.scene import (DETECT_DEFAULTS, detect, detection_image,
                                        instance_map, measure_scene, network_fractions,
                                        object_footprint)
    from astrogen.deblend.survey import load_scene_model

    cfg = SceneDatasetConfig.from_dict(DATASET)
    spec = cfg.spec()
    scenes = read_scene_dataset(args.data, max_shards=-(-args.n // cfg.shard_size))[:args.n]
    sigma = spec.noise_sigma()
    fwhm_pix = float(np.mean(spec.psf_fwhm())) / spec.pixel_scale
    bands = [s.band_name for s in spec.surveys()]
    survey_i = [sv for sv in spec.surveys() if sv.band_name.endswith("_i")][0]
    net = load_scene_model("shipped")
    out = {name: [] for name in VARIANTS}
    for k, sc in enumerate(scenes):
        img = np.asarray(sc["image"], np.float64)
        det = detection_image(img, sigma)
        objs, segmap = detect(det, fwhm_pix, **DETECT_DEFAULTS)
        fr = network_fractions(img, sigma, det, objs, fwhm_pix, net.predictor(k), net.size,
                               1, 2.0, segmap)[0]
        peaks = np.c_[objs["peak_x"], objs["peak_y"]]
        for name, (thr, on_fractions) in VARIANTS.items():
            if thr is None:
                comp = None
            elif thr == "sep":
                comp = object_footprint(det, fwhm_pix, segmap)
            else:
                comp = object_footprint(det, fwhm_pix, segmap, nsigma=thr)
            f = fr * (comp > 0) if on_fractions else fr
            cat, _, _ = measure_scene(img, f, sigma, det, bands, "electron")
            seg = instance_map(f, comp, peaks)
            out[name].append(SceneResult(catalog=cat, segmentation=seg, bands=tuple(bands),
                                         method="unet"))
    summary = {"n_scenes": len(scenes), "command": "python benchmarks/scene_instance_footprint.py "
               + " ".join(sys.argv[1:] if argv is None else argv), "variants": {}}
    lines = [f"# Instance-map footprint, {len(scenes)} held-out scenes (network, one run)", "",
             f"`{summary['command']}`", "",
             "| variant | IoU median (truth 1 sigma / 0.1 sigma) | IoU mean (1 sigma) | "
             "flux MAPE all (%) | MAPE beta>0.1 (%) | NMAD | bias |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, res in out.items():
        ev = evaluate(res, scenes, fwhm_pix, bands, label_threshold=float(
            net.card.get("fraction_background", 0.1)), mag_i_of_flux=survey_i.magnitude)
        summary["variants"][name] = ev
        if args.debug:
            print(name, {k: ev[k] for k in ("n_targets", "n_detections", "iou_median")})
        fa, fb = ev["flux_all_bands"], ev["flux_all_bands_beta_gt_0.1"]
        lines.append(f"| {name} | {_f(ev['iou_median'])} / "
                     f"{_f(ev['iou_median_truth_0.1sigma'])} | {_f(ev['iou_mean'])} | "
                     f"{_f(fa['mape'], '.1f')} | {_f(fb['mape'], '.1f')} | "
                     f"{_f(fa['nmad'])} | {_f(fa['bias'], '+.3f')} |")
    dest = ROOT / "benchmarks" / "results" / "deblend_scenes"
    dest.mkdir(parents=True, exist_ok=True)
    (dest / f"instance_footprint_n{len(scenes)}.json").write_text(
        json.dumps(summary, indent=2) + "\n")
    (dest / f"instance_footprint_n{len(scenes)}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return summary


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
