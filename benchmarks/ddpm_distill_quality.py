"""Distilled galaxy DDPM: quality vs sampling steps against held-out truth (issue 20).

    python benchmarks/ddpm_distill_quality.py                 # n=128 rows, shipped files
    python benchmarks/ddpm_distill_quality.py --n 32 --out /tmp/q   # smoke test
    python benchmarks/ddpm_distill_quality.py --fresh \
        --students output/models/ddpm_cosmos64_distilled.keras \
        --baseline-students output/prev_students/ddpm_cosmos64_distilled.keras
        # new students against the shipped ones (copied aside first), in the same run

Held-out truth: the PSF-free, noise-free ``truth`` stamps of a simulated data set built with
the teacher's data-set configuration but another seed (2099; the teacher was trained on seed
2021 rows 0-18999, the students on rows 0-2999), so no row was seen in training. For the
same ``--n`` rows (their (mag, hlr, z) conditions) and the same row seeds, it generates:

* the teacher ``ddpm_cosmos64``: DDIM 25 steps (seeds a, and seeds b for the run-to-run
  noise) and DDIM 8 steps (the grid distillation started from);
* the distilled students (``sampler: distilled``) at 4, 2 and 1 steps;
* with ``--baseline-students``, a second set of students (labels ``baseline_student<N>``),
  e.g. the shipped ones against a retrained set, so both are judged against the same
  DDIM-25 run.

Every setting records its model file and SHA-256.

Statistics per PSF-free stamp: ``mag_err`` (stamp magnitude minus catalog magnitude), ``hlr``
(circular half-light radius, arcsec; ``flowvae_benchmark.half_light_radius``), ``ellipticity``
(1 - q of the HSM adaptive moments, ``astrogen.stages.generated.measure_stamps``) and
``concentration`` C = 5 log10(r80 / r20) (circular apertures about the flux centroid).
For each setting: the two-sample KS statistic and the 1-D Wasserstein distance (in units of
the truth's standard deviation) of each statistic against the held-out truth; the run-to-run
noise is the same distance between DDIM-25 seeds a and b. Also the pixel RMS (network data
space) between each student and the teacher's DDIM 8 / DDIM 25 result from the same
starting noise, the fraction of negative pixels, and the time per stamp.

Writes ``results.json`` and ``samples.png`` (log stretch) to ``--out`` (default
``benchmarks/results/ddpm_distill``); generated stamps are cached in ``--out/cache``, keyed
by sampler, steps, seeds, model-file SHA-256, ``--n``, micro-batch and data set (the stamps are a
deterministic function of these; ``from_cache`` in ``results.json`` says which settings were
read back, whose ``seconds_per_stamp`` then comes from the run that made them; ``--fresh``
regenerates all).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from flowvae_benchmark import half_light_radius  # noqa: E402

HOLDOUT = {"n_galaxies": 500, "shard_size": 250, "stamp_size": 64, "pixel_scale": 0.03,
           "profile": "sersic", "mag_range": [16.5, 26.0], "noise": "cosmos",
           "noise_variance": "catalog", "seed": 2099}
STATS = ("mag_err", "hlr", "ellipticity", "concentration")
#: label -> (model file stem, sampler, steps, seed offset)
SETTINGS = {
    "student1": ("distilled", "distilled", 1, 0),
    "student2": ("distilled", "distilled", 2, 0),
    "student4": ("distilled", "distilled", 4, 0),
    "ddim8": ("teacher", "ddim", 8, 0),
    "ddim25_a": ("teacher", "ddim", 25, 0),
    "ddim25_b": ("teacher", "ddim", 25, 1),
}


def radius_at(img: np.ndarray, frac: float) -> float:
    """Radius (pixels) of the circular aperture about the flux centroid holding ``frac`` of
    the stamp's flux (positive total flux; linear interpolation of the growth curve)."""
    img = np.asarray(img, np.float64)
    total = img.sum()
    if not total > 0:
        return np.nan
    y, x = np.indices(img.shape)
    cy, cx = (img * y).sum() / total, (img * x).sum() / total
    r = np.hypot(y - cy, x - cx).ravel()
    order = np.argsort(r)
    growth = np.cumsum(img.ravel()[order])
    return float(np.interp(frac * total, growth, r[order]))


def statistics(images: np.ndarray, mag_req: np.ndarray, pixel_scale: float = 0.03) -> dict:
    from astrogen.stages.generated import measure_stamps

    flux = images.reshape(len(images), -1).sum(axis=1, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        mag = np.where(flux > 0, 25.94 - 2.5 * np.log10(flux), np.nan)
    m = measure_stamps(images, pixel_scale)
    r20 = np.array([radius_at(im, 0.2) for im in images])
    r80 = np.array([radius_at(im, 0.8) for im in images])
    with np.errstate(divide="ignore", invalid="ignore"):
        conc = 5.0 * np.log10(r80 / r20)
    return {"mag_err": mag - mag_req,
            "hlr": np.array([half_light_radius(im, pixel_scale) for im in images]),
            "ellipticity": 1.0 - m["q"], "concentration": conc}


def distances(a: dict, b: dict) -> dict:
    from scipy.stats import ks_2samp, wasserstein_distance

    out = {}
    for k in STATS:
        x, y = a[k][np.isfinite(a[k])], b[k][np.isfinite(b[k])]
        sd = float(np.std(y)) or 1.0
        out[k] = {"ks": float(ks_2samp(x, y).statistic),
                  "wasserstein_over_sd": float(wasserstein_distance(x, y) / sd)}
    out["mean_ks"] = float(np.mean([out[k]["ks"] for k in STATS]))
    return out


def png(path: Path, rows: dict, n_cols: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(rows), n_cols, figsize=(1.25 * n_cols, 1.3 * len(rows)))
    ref = rows[next(iter(rows))]
    for c in range(n_cols):
        peak = float(np.max(ref[c]))
        for r, (label, imgs) in enumerate(rows.items()):
            ax = axes[r, c]
            # log stretch: 4 decades below the truth stamp's peak
            ax.imshow(np.log10(np.clip(imgs[c] / peak, 1e-4, None)), origin="lower",
                      cmap="magma", vmin=-4, vmax=0)
            ax.set_xticks([]), ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(label, fontsize=7)
    fig.suptitle("held-out truth vs teacher DDIM and distilled students (same conditions "
                 "and starting noise); log10(I / truth peak), -4..0", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=128)
    ap.add_argument("--teacher", default=None, help="teacher .keras (default: shipped)")
    ap.add_argument("--students", default=None,
                    help="student stem, files <stem>_<N>step.keras (default: shipped)")
    ap.add_argument("--baseline-students", default=None,
                    help="a second student stem to compare in the same run (optional)")
    ap.add_argument("--holdout", default=str(REPO / "output" / "datasets"
                                              / "cosmos_holdout_64_s2099"))
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "ddpm_distill"))
    ap.add_argument("--fresh", action="store_true")
    args = ap.parse_args(argv)
    out = Path(args.out)
    (out / "cache").mkdir(parents=True, exist_ok=True)

    from astrogen.datasets.galaxy_stamps import prepare_stamp_dataset, read_stamps
    from astrogen.models.ddpm_galaxy import load_ddpm, shipped_model_path
    from astrogen.seeds import row_seeds

    t_start = time.time()
    ds, _ = prepare_stamp_dataset({"path": args.holdout, **HOLDOUT})
    data = read_stamps(ds, fields=("truth", "conditions"), rows=slice(0, args.n))
    truth, cond = data["truth"].astype(np.float64), data["conditions"].astype(np.float64)
    teacher_path = Path(args.teacher) if args.teacher else shipped_model_path()
    stem = (Path(args.students) if args.students
            else shipped_model_path().with_name("ddpm_cosmos64_distilled.keras"))
    models = {"teacher": load_ddpm(teacher_path)}
    results: dict = {"n": args.n, "holdout": {"path": str(ds), **HOLDOUT},
                     "teacher": str(teacher_path.name), "settings": {}}
    stamps, xs = {}, {}
    settings = dict(SETTINGS)
    stems = {"distilled": stem}
    if args.baseline_students:
        stems["baseline"] = Path(args.baseline_students)
        settings.update({f"baseline_student{k}": ("baseline", "distilled", k, 0)
                         for k in (1, 2, 4)})
    for label, (kind, sampler, steps, off) in settings.items():
        if kind in stems:
            path = stems[kind].with_name(f"{stems[kind].stem}_{steps}step.keras")
            model = load_ddpm(path)
        else:
            path = teacher_path
            model = models["teacher"]
        seeds = row_seeds(20 + off, np.arange(args.n))
        sha = hashlib.sha256(path.read_bytes()).hexdigest()
        # keyed by the model file's bytes, the rows, the data set and the micro-batch: a
        # retrained student or another --n is never served stale stamps
        cache = out / "cache" / (f"{sampler}{steps}_s{off}_{sha[:16]}_n{args.n}_"
                                 f"b{args.batch_size}_{Path(ds).name}.npz")
        cached = cache.is_file() and not args.fresh
        if cached:
            z = np.load(cache)
            img, dt = z["images"], float(z["seconds"])
        else:
            t0 = time.perf_counter()
            img = model.generate(cond, seeds, sampler=sampler, num_steps=steps,
                                 batch_size=args.batch_size)
            dt = time.perf_counter() - t0
            np.savez(cache, images=img, seconds=dt)
        stamps[label] = img
        xs[label] = model.encode(img, cond[:, 0])
        print(f"{label}: {dt:.1f} s", flush=True)
        results["settings"][label] = {"sampler": sampler, "num_steps": steps,
                                      "seed_offset": off, "seconds_per_stamp": dt / args.n,
                                      "model_file": str(path), "sha256": sha,
                                      "from_cache": bool(cached)}
    s_truth = statistics(truth, cond[:, 0])
    stats = {k: statistics(v, cond[:, 0]) for k, v in stamps.items()}
    for label, st in stats.items():
        r = results["settings"][label]
        r["to_truth"] = distances(st, s_truth)
        r["median"] = {k: float(np.nanmedian(st[k])) for k in STATS}
        r["negative_pixel_frac"] = float(np.mean(stamps[label] < 0))
        for ref in ("ddim8", "ddim25_a"):
            r[f"rms_to_{ref}_network_space"] = float(np.sqrt(np.mean(
                (xs[label] - xs[ref]) ** 2)))
    results["truth_median"] = {k: float(np.nanmedian(s_truth[k])) for k in STATS}
    results["run_to_run_ddim25_b_vs_a"] = distances(stats["ddim25_b"], stats["ddim25_a"])
    noise = results["run_to_run_ddim25_b_vs_a"]["mean_ks"]
    results["verdict"] = {
        label: {"mean_ks_to_truth": results["settings"][label]["to_truth"]["mean_ks"],
                "mean_ks_vs_ddim25_a": distances(stats[label], stats["ddim25_a"])["mean_ks"],
                "within_run_to_run_noise_of_ddim25":
                    distances(stats[label], stats["ddim25_a"])["mean_ks"] <= noise}
        for label in ("student1", "student2", "student4", "ddim8",
                      *(k for k in settings if k.startswith("baseline_")))}
    results["ks_critical_95"] = float(1.36 * np.sqrt(2.0 / args.n))
    results["load_average_1_5_15min"] = list(os.getloadavg())
    results["wall_time_s"] = time.time() - t_start
    order = np.argsort(-cond[:, 1])[:10]  # the largest galaxies show the most structure
    png(out / "samples.png", {"truth (held out)": truth[order],
                              **{k: stamps[k][order] for k in
                                 ("ddim25_a", "ddim8", "student4", "student2", "student1")}},
        len(order))
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results["verdict"], indent=1))
    return results


if __name__ == "__main__":
    main()
